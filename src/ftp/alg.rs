//! The FTP application-layer gateway.
//!
//! For each FTP control connection it follows both directions as byte
//! streams cut into lines, matches replies to the commands they answer, and
//! acts on the few lines that carry data-connection addresses: PORT/EPRT from
//! the client, 227/229 from the server. It rewrites them where NAT hides the
//! real endpoint, refuses what the policy forbids, and opens a one-shot
//! pinhole for exactly the announced data connection.
//!
//! Sequence numbers: a rewrite that changes a line's length shifts every later
//! byte of that direction. Each direction keeps the list of its rewrites (in
//! the sender's byte offsets) and maps any offset through it, so
//! retransmissions, several rewrites in flight and SACK blocks translate
//! consistently, and a retransmitted rewritten line is re-emitted byte for
//! byte. The gateway never forwards the first half of a line it may have to
//! change: such a partial line is held until it completes.
//!
//! Out-of-order segments on a control connection are dropped rather than
//! buffered: the sender retransmits them once the hole fills, and the ALG
//! never has to decide on bytes the receiver has not seen in order.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use dashmap::DashMap;

use crate::config::{Action, Ftp, IfIndex, OnViolation, PasvMismatch, ZeroAddress};
use crate::conntrack::{Conn, ConnId, Dir, Table, Tuple};
use crate::event::{loggable_line, DropReason, EventKind, Session};
use crate::ftp::parse::{self, Command, ParseError};
use crate::ftp::stream::{Batch, Found, LineStream};
use crate::nat::PortAllocator;
use crate::time::Nanos;
use crate::wire::{tcp_flags, PROTO_TCP};

/// Longest control line accepted (a long path name fits; a flood does not).
pub const MAX_LINE: usize = 4096;
/// Forwarded, unacknowledged bytes kept per direction to check retransmissions.
const MAX_UNACKED: usize = 64 * 1024;
/// Commands awaiting a reply before the session is treated as abusive.
const MAX_PENDING: usize = 256;
/// A multi-line reply to PASV/EPSV is held whole up to this size.
const MAX_HELD_REPLY: usize = 8192;
/// Rewrites remembered per direction before the oldest acknowledged ones are folded.
const MAX_REWRITES: usize = 64;
/// First capacity of a session's byte buffers (a few control lines), given
/// at the first payload: control sessions are short, and growing from empty
/// one segment at a time cost several reallocations per buffer per session.
/// Not earlier, so a SYN flood's half-open sessions do not get them.
const FIRST_BUF: usize = 256;

/// The commands that carry or ask for a data-connection address.
const ADDRESS_VERBS: [&str; 6] = ["PORT", "EPRT", "LPRT", "PASV", "EPSV", "LPSV"];

/// Where a pinhole waits: the address and port the data connection will be
/// sent to, as it arrives at the gateway.
pub type PinholeKey = (IpAddr, u16);

/// One expected data connection.
#[derive(Clone, Debug)]
pub struct Pinhole {
    pub session: Session,
    pub control: ConnId,
    /// The only source address admitted.
    pub peer: IpAddr,
    /// Where it is admitted (after NAT): the key.
    pub address: IpAddr,
    pub port: u16,
    /// Where the gateway delivers it (destination NAT), or `(address, port)`.
    pub target: (IpAddr, u16),
    /// The source address the data connection leaves with, when the control
    /// connection's far side sees its peer under another address.
    pub snat: Option<IpAddr>,
    pub expires: Nanos,
    /// The control connection's egress toward the peer's side (the data connection arrives there).
    pub ingress: IfIndex,
    /// The worker whose table holds the control connection: only it closes
    /// or expires the pinhole (`control` is an index into that table).
    pub worker: u16,
}

/// Pinholes are the one piece of state every worker must see: a data
/// connection's SYN may be hashed to any worker.
pub type Pinholes = Arc<DashMap<PinholeKey, Pinhole, foldhash::fast::RandomState>>;

pub fn new_pinholes() -> Pinholes {
    Arc::new(DashMap::with_hasher(foldhash::fast::RandomState::default()))
}

/// What the ALG decided for one segment of a control connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegVerdict {
    /// Forward the (possibly rewritten) frame.
    Forward,
    /// The segment's bytes are held (a partial line) or were nothing new: do not forward.
    Hold,
    /// Drop this segment (out of order, or after a violation with `on_violation: drop`).
    Drop(DropReason, String),
    /// Reset both ends and drop.
    Reset(DropReason, String),
}

#[derive(Clone, Debug)]
struct Rewrite {
    /// Sender's stream offset of the line's first byte.
    start: u64,
    old_len: u32,
    new: Vec<u8>,
}

impl Rewrite {
    fn end(&self) -> u64 {
        self.start + self.old_len as u64
    }
    fn delta(&self) -> i64 {
        self.new.len() as i64 - self.old_len as i64
    }
}

/// One direction of the control connection.
struct Half {
    stream: LineStream,
    /// Sequence number of the first payload byte.
    isn: u32,
    /// Stream offset up to which bytes have been forwarded.
    released: u64,
    /// Bytes `[released, stream.next_offset())`: seen in order, not yet forwarded.
    held: Vec<u8>,
    /// Rewrites still remembered, in stream order.
    rewrites: Vec<Rewrite>,
    /// Shift of everything before `rewrites[0]` (folded older rewrites).
    base_delta: i64,
    /// After a violation every later byte of this direction is dropped, for this reason.
    blocked: Option<(u64, DropReason)>,
    /// A multi-line reply in progress: its code.
    multiline: Option<u16>,
    /// Replay only: how far the receiver has acknowledged (stream offset).
    peer_acked: u64,
    /// The bytes forwarded but not yet acknowledged, as first seen, from
    /// stream offset `unacked_base`: a retransmission is forwarded with these,
    /// never with different bytes the sender (or an injector) puts in it.
    unacked: std::collections::VecDeque<u8>,
    unacked_base: u64,
    /// The lines of that reply so far (offset, length with terminator), so a
    /// refusal can take them back while they are still held.
    ml_lines: Vec<(u64, usize)>,
}

impl Half {
    fn new(isn: u32) -> Half {
        Half {
            stream: LineStream::new(isn, MAX_LINE, 0),
            isn,
            released: 0,
            held: Vec::new(),
            rewrites: Vec::new(),
            base_delta: 0,
            blocked: None,
            multiline: None,
            peer_acked: 0,
            unacked: VecDeque::new(),
            unacked_base: 0,
            ml_lines: Vec::new(),
        }
    }

    /// A direction picked up mid-stream at `seq`: nothing before it is known,
    /// so parsing starts after the next LF (a confirmed line boundary).
    fn resync(seq: u32) -> Half {
        let isn = seq.wrapping_sub(1);
        let mut h = Half::new(isn);
        let mut lost = Vec::new();
        h.stream.skip_to(seq, &mut lost);
        h.released = h.stream.next_offset();
        h
    }

    /// See `Scratch::ready`.
    fn ready(&mut self) {
        reserve_first(&mut self.held);
        if self.unacked.capacity() == 0 {
            self.unacked.reserve(FIRST_BUF);
        }
    }

    fn shifted(&self) -> bool {
        self.base_delta != 0 || !self.rewrites.is_empty()
    }

    /// Sender's offset → receiver's offset. Inside a rewritten line, length
    /// changes are absorbed at the line's end.
    fn map_fwd(&self, o: u64) -> u64 {
        let mut delta = self.base_delta;
        for r in &self.rewrites {
            if o <= r.start {
                break;
            }
            if o < r.end() {
                let within = (o - r.start).min(r.new.len() as u64);
                return add(r.start, delta) + within;
            }
            delta += r.delta();
        }
        add(o, delta)
    }

    /// Receiver's offset (an acknowledgement) → sender's offset. An ACK that
    /// ends inside a rewritten line acknowledges no more than the receiver
    /// provably has, so the sender retransmits the rest and it maps back.
    fn map_back(&self, n: u64) -> u64 {
        let mut delta = self.base_delta;
        for r in &self.rewrites {
            let ns = add(r.start, delta);
            if n <= ns {
                break;
            }
            let ne = ns + r.new.len() as u64;
            if n < ne {
                return r.start + (n - ns).min(r.old_len.saturating_sub(1) as u64);
            }
            delta += r.delta();
        }
        add(n, -delta)
    }

    /// The receiver's bytes for the sender's bytes `bytes` at offset `a`.
    fn map_bytes(&self, a: u64, bytes: &[u8], out: &mut Vec<u8>) {
        let b = a + bytes.len() as u64;
        let mut pos = a;
        for r in &self.rewrites {
            if r.end() <= pos || r.start >= b {
                continue;
            }
            if pos < r.start {
                out.extend_from_slice(&bytes[(pos - a) as usize..(r.start - a) as usize]);
                pos = r.start;
            }
            let stop = b.min(r.end());
            let n0 = ((pos - r.start) as usize).min(r.new.len());
            let n1 = if stop == r.end() { r.new.len() } else { ((stop - r.start) as usize).min(r.new.len()) };
            out.extend_from_slice(&r.new[n0..n1.max(n0)]);
            pos = stop;
        }
        if pos < b {
            out.extend_from_slice(&bytes[(pos - a) as usize..]);
        }
    }

    /// Forget rewrites the receiver has acknowledged, beyond the newest few.
    fn fold(&mut self, acked: u64) {
        while self.rewrites.len() > MAX_REWRITES && self.rewrites[0].end() <= acked {
            let r = self.rewrites.remove(0);
            self.base_delta += r.delta();
        }
    }
}

/// `FIRST_BUF` of room for a buffer that has none.
fn reserve_first(v: &mut Vec<u8>) {
    if v.capacity() == 0 {
        v.reserve(FIRST_BUF);
    }
}

fn add(o: u64, d: i64) -> u64 {
    (o as i64 + d).max(0) as u64
}

/// A command waiting for its final reply.
#[derive(Clone, Debug)]
enum Pending {
    Pasv,
    Epsv,
    /// PORT/EPRT and the pinhole it opened.
    Active(PinholeKey),
    /// AUTH with its line, for the `ftp_encrypted` event.
    Auth(String),
    /// A command the gateway replaced by NOOP; its reply becomes this refusal.
    Refused(String),
    /// This many other commands in a row (one entry, however many are pipelined).
    Other(u32),
}

pub struct FtpSession {
    pub session: Session,
    pub control: ConnId,
    halves: [Option<Half>; 2],
    pending: VecDeque<Pending>,
    pub encrypted: bool,
    epsv_all: bool,
    /// Picked up mid-session: each direction starts at its first segment seen.
    resync: bool,
    /// Open pinholes of this session, oldest first.
    pub pinholes: VecDeque<PinholeKey>,
}

/// Buffers the ALG reuses from segment to segment (three allocations per
/// control segment, and one per line, showed up in replay profiles). One
/// per engine, not per session: a session holding its own kept about a
/// kilobyte per idle control connection.
#[derive(Default)]
pub struct Scratch {
    found: Batch,
    emit: Vec<u8>,
    out: Vec<u8>,
}

impl Scratch {
    /// Give buffers that are still (or again) empty their first capacity.
    fn ready(&mut self) {
        self.found.reserve_first(FIRST_BUF, 4);
        reserve_first(&mut self.emit);
        reserve_first(&mut self.out);
    }

    /// Largest buffer worth keeping: a long reply (a STAT listing) must not
    /// leave every idle session holding its size.
    const KEEP: usize = 4096;

    fn keep(v: Vec<u8>) -> Vec<u8> {
        if v.capacity() > Self::KEEP {
            Vec::new()
        } else {
            v
        }
    }
}

/// What the ALG needs from the engine for one segment.
pub struct Ctx<'a> {
    pub cfg: &'a Ftp,
    pub now: Nanos,
    pub conn: &'a Conn,
    pub table: &'a Table,
    pub ports: &'a mut PortAllocator,
    pub pinholes: &'a Pinholes,
    pub nat_ports: crate::config::PortMode,
    pub events: &'a mut Vec<EventKind>,
    pub scratch: &'a mut Scratch,
    /// Replaying a capture (not in the path): an acknowledgement for bytes
    /// the gateway never saw means the capture lost them.
    pub capture: bool,
    /// Which worker this is (see `Pinhole::worker`).
    pub worker: u16,
    /// Whether command and reply events carry their line (see
    /// `engine::Sink::wants_lines`).
    pub lines: bool,
}

/// A TCP segment of the control connection, as it arrived.
pub struct Seg<'a> {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub payload: &'a [u8],
}

/// How to change the segment before forwarding.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Edit {
    /// New payload, when it differs from the original.
    pub payload: Option<Vec<u8>>,
    /// New sequence number, when it differs.
    pub seq: Option<u32>,
    /// New acknowledgement number, when it differs.
    pub ack: Option<u32>,
}

impl FtpSession {
    /// A control connection followed from its SYN.
    pub fn new(control: ConnId, conn: &Conn, client_isn: u32) -> FtpSession {
        let session = Session {
            client: SocketAddr::new(conn.orig.src, conn.orig.sport),
            server: SocketAddr::new(conn.orig.dst, conn.orig.dport),
        };
        FtpSession {
            session,
            control,
            halves: [Some(Half::new(client_isn)), None],
            pending: VecDeque::new(),
            encrypted: false,
            epsv_all: false,
            resync: false,
            pinholes: VecDeque::new(),
        }
    }

    /// A control connection already under way when the gateway first saw it
    /// (`policy.pickup`): no line is trusted before a line boundary is seen.
    pub fn picked_up(control: ConnId, conn: &Conn) -> FtpSession {
        let mut s = FtpSession::new(control, conn, 0);
        s.halves = [None, None];
        s.resync = true;
        s
    }

    /// The server's SYN-ACK fixes its initial sequence number.
    pub fn server_isn(&mut self, isn: u32) {
        if self.halves[1].is_none() {
            self.halves[1] = Some(Half::new(isn));
        }
    }

    /// Map a received acknowledgement number to the sender's sequence space of
    /// the other direction (for window tracking and for the wire).
    pub fn map_ack(&self, dir: Dir, ack: u32) -> u32 {
        match &self.halves[dir.flip().idx()] {
            Some(h) if h.shifted() => {
                let n = ack.wrapping_sub(h.isn) as u64;
                h.isn.wrapping_add(h.map_back(n) as u32)
            }
            _ => ack,
        }
    }

    /// Map a sequence number of `dir`'s sender to what its receiver sees.
    pub fn map_seq(&self, dir: Dir, seq: u32) -> u32 {
        match &self.halves[dir.idx()] {
            Some(h) if h.shifted() => {
                let o = seq.wrapping_sub(h.isn) as u64;
                h.isn.wrapping_add(h.map_fwd(o) as u32)
            }
            _ => seq,
        }
    }

    /// True when acknowledgement numbers going in `dir` need mapping.
    pub fn other_shifted(&self, dir: Dir) -> bool {
        self.halves[dir.flip().idx()].as_ref().is_some_and(|h| h.shifted())
    }

    /// Process one segment going in `dir`. Returns the verdict and how to edit
    /// the frame.
    pub fn on_segment(&mut self, cx: &mut Ctx<'_>, dir: Dir, seg: &Seg<'_>) -> (SegVerdict, Edit) {
        let r = self.segment(cx, dir, seg);
        if seg.flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
            self.trim();
        }
        r
    }

    /// A closing control connection gives back the room its buffers hold
    /// (about a kilobyte): its entry, and this session, stay in the table
    /// for the TCP close timeouts, and a busy gateway has many such.
    fn trim(&mut self) {
        for h in self.halves.iter_mut().flatten() {
            if h.held.is_empty() {
                h.held = Vec::new();
            }
            if h.unacked.is_empty() {
                h.unacked = VecDeque::new();
            }
            h.stream.trim();
        }
    }

    fn segment(&mut self, cx: &mut Ctx<'_>, dir: Dir, seg: &Seg<'_>) -> (SegVerdict, Edit) {
        let mut edit = Edit::default();
        if seg.flags & tcp_flags::ACK != 0 {
            if cx.capture {
                self.note_peer_ack(dir, seg.ack);
            }
            let acked = self.map_ack(dir, seg.ack);
            if let Some(h) = self.halves[dir.flip().idx()].as_mut() {
                let upto = h.stream.offset_of(acked).min(h.unacked_base + h.unacked.len() as u64);
                if upto > h.unacked_base {
                    h.unacked.drain(..(upto - h.unacked_base) as usize);
                    h.unacked_base = upto;
                }
            }
        }
        if seg.flags & tcp_flags::ACK != 0 && self.other_shifted(dir) {
            let a = self.map_ack(dir, seg.ack);
            if let Some(h) = self.halves[dir.flip().idx()].as_mut() {
                h.fold(a.wrapping_sub(h.isn) as u64);
            }
            if a != seg.ack {
                edit.ack = Some(a);
            }
        }
        if self.halves[dir.idx()].is_none() && self.resync && seg.flags & tcp_flags::SYN == 0 {
            self.halves[dir.idx()] = Some(Half::resync(seg.seq));
        }
        let Some(half) = self.halves[dir.idx()].as_ref() else {
            // Data before the handshake completed: nothing to follow yet.
            return (SegVerdict::Forward, edit);
        };
        let syn = seg.flags & tcp_flags::SYN != 0;
        if syn || (seg.payload.is_empty() && seg.flags & tcp_flags::FIN == 0) {
            if !syn {
                let s = self.map_seq(dir, seg.seq);
                if s != seg.seq {
                    edit.seq = Some(s);
                }
            }
            return (SegVerdict::Forward, edit);
        }

        let a = half.stream.offset_of(seg.seq);
        let next = half.stream.next_offset();
        if let Some((at, reason)) = half.blocked {
            if a + seg.payload.len() as u64 > at || seg.payload.is_empty() {
                let detail = format!("control connection blocked after a {} violation", reason.as_str());
                return (SegVerdict::Drop(reason, detail), edit);
            }
        }
        if a > next {
            if self.skip_capture_loss(cx, dir, seg.seq) {
                return self.on_segment(cx, dir, seg);
            }
            let detail = format!(
                "out-of-order segment ({} bytes ahead) on an FTP control connection; the sender will retransmit it",
                a - next
            );
            return (SegVerdict::Drop(DropReason::Invalid, detail), edit);
        }

        let released_before = half.released;
        let b = a + seg.payload.len() as u64;
        // New bytes: past everything already seen.
        if b > next && !self.encrypted {
            let fresh = &seg.payload[(next - a) as usize..];
            let fresh_seq = half.isn.wrapping_add(next as u32);
            cx.scratch.ready();
            let mut found = std::mem::take(&mut cx.scratch.found);
            let half = self.halves[dir.idx()].as_mut().expect("checked");
            half.ready();
            half.stream.push(fresh_seq, fresh, &mut found);
            half.held.extend_from_slice(fresh);
            let mut verdict = None;
            for ev in found.iter() {
                verdict = self.on_stream_event(cx, dir, ev);
                if verdict.is_some() {
                    // The rest of the segment's lines are not looked at.
                    break;
                }
            }
            found.clear(Scratch::KEEP);
            cx.scratch.found = found;
            if let Some(v) = verdict {
                return (v, edit);
            }
        } else if b > next {
            cx.scratch.ready();
            let half = self.halves[dir.idx()].as_mut().expect("checked");
            half.ready();
            // Encrypted: no parsing; keep the offsets moving.
            let fresh = &seg.payload[(next - a) as usize..];
            half.stream.push(half.isn.wrapping_add(next as u32), fresh, &mut cx.scratch.found);
            cx.scratch.found.clear(Scratch::KEEP);
            half.held.extend_from_slice(fresh);
        }

        // Decide what stays held: a partial line that might still need changing.
        let fin = seg.flags & (tcp_flags::FIN | tcp_flags::RST) != 0;
        let keep = if fin || self.encrypted { 0 } else { self.partial_to_hold(cx.cfg, dir) };
        let half = self.halves[dir.idx()].as_mut().expect("checked");
        let emit_len = half.held.len() - keep;
        let mut out = std::mem::take(&mut cx.scratch.out);
        out.clear();
        let mut start = released_before;
        if a < released_before && b > a && (emit_len == 0 || b >= released_before) {
            // Retransmitted bytes already forwarded once: the same bytes as
            // then (first seen wins), with the same mapping.
            let upto = b.min(released_before);
            let mut again = seg.payload[..(upto - a) as usize].to_vec();
            let from = a.max(half.unacked_base);
            let to = upto.min(half.unacked_base + half.unacked.len() as u64);
            for o in from..to {
                again[(o - a) as usize] = half.unacked[(o - half.unacked_base) as usize];
            }
            half.map_bytes(a, &again, &mut out);
            start = a;
        }
        if emit_len > 0 {
            let mut emit = std::mem::take(&mut cx.scratch.emit);
            emit.clear();
            emit.extend(half.held.drain(..emit_len));
            half.map_bytes(released_before, &emit, &mut out);
            if half.unacked_base + half.unacked.len() as u64 == released_before {
                half.unacked.extend(&emit);
                if half.unacked.len() > MAX_UNACKED {
                    let over = half.unacked.len() - MAX_UNACKED;
                    half.unacked.drain(..over);
                    half.unacked_base += over as u64;
                }
            } else {
                // A gap in what we keep (capture loss resync): start afresh here.
                half.unacked = emit.iter().copied().collect();
                half.unacked_base = released_before;
            }
            half.released += emit_len as u64;
            cx.scratch.emit = Scratch::keep(emit);
        }
        if out.is_empty() && !fin {
            cx.scratch.out = Scratch::keep(out);
            return (SegVerdict::Hold, edit);
        }
        let seq_out = half.isn.wrapping_add(half.map_fwd(start) as u32);
        // With FIN and nothing to send, the FIN sits right after the last byte.
        let seq_out = if out.is_empty() { half.isn.wrapping_add(half.map_fwd(b) as u32) } else { seq_out };
        if seq_out != seg.seq {
            edit.seq = Some(seq_out);
        }
        if out.as_slice() != seg.payload {
            edit.payload = Some(out);
        } else {
            cx.scratch.out = Scratch::keep(out);
        }
        (SegVerdict::Forward, edit)
    }

    /// Remember how far the receiver of the other direction has acknowledged,
    /// in that sender's own sequence space (evidence for capture loss).
    fn note_peer_ack(&mut self, dir: Dir, ack: u32) {
        let acked = self.map_ack(dir, ack);
        let Some(h) = self.halves[dir.flip().idx()].as_mut() else { return };
        let ahead = acked.wrapping_sub(h.stream.next_seq());
        if ahead != 0 && ahead <= 1 << 20 {
            let off = h.stream.offset_of(acked);
            h.peer_acked = h.peer_acked.max(off);
        }
    }

    /// In a capture, a segment beyond a hole that its receiver has already
    /// acknowledged means the capture lost the hole's bytes: parsing resumes
    /// at the next line boundary after them. (Live, the gateway is in the
    /// path, so a hole is always real and waits for the retransmission.)
    fn skip_capture_loss(&mut self, cx: &mut Ctx<'_>, dir: Dir, seq: u32) -> bool {
        let session = self.session;
        let Some(h) = self.halves[dir.idx()].as_mut() else { return false };
        let at = h.stream.offset_of(seq);
        let next = h.stream.next_offset();
        if !cx.capture || at <= next || h.peer_acked < at {
            return false;
        }
        let mut evs = Vec::new();
        h.stream.skip_to(seq, &mut evs);
        h.held.clear();
        h.released = h.stream.next_offset();
        let from = if dir == Dir::Orig { "client" } else { "server" };
        cx.events.push(EventKind::CaptureGap { session, from, bytes: (at - next) as u32 });
        true
    }

    /// Bytes at the end of `held` that must wait: an incomplete line the
    /// gateway may have to rewrite or refuse once it is complete.
    fn partial_to_hold(&self, cfg: &Ftp, dir: Dir) -> usize {
        let Some(half) = self.halves[dir.idx()].as_ref() else { return 0 };
        let partial = partial_line(&half.held);
        if partial.is_empty() {
            return 0;
        }
        let hold = match dir {
            Dir::Orig => {
                // Judge what a Telnet-aware server would read: IAC sequences
                // gone, leading white space trimmed.
                let seen = telnet_clean(partial);
                let seen = seen.trim_ascii_start();
                cfg.strict
                    || partial.contains(&0xff)
                    || ADDRESS_VERBS.iter().any(|v| prefix_of(seen, v))
                    || cfg.deny_commands.iter().any(|v| prefix_of(seen, v))
            }
            Dir::Reply => {
                let answering =
                    matches!(self.pending.front(), Some(Pending::Refused(_) | Pending::Pasv | Pending::Epsv));
                if answering && half.multiline.is_some() {
                    // Hold the whole reply: a refusal must be able to replace all of it.
                    if let Some(&(first, _)) = half.ml_lines.first() {
                        let whole = (half.stream.next_offset().saturating_sub(first)) as usize;
                        if whole <= MAX_HELD_REPLY {
                            return whole.min(half.held.len());
                        }
                    }
                }
                matches!(self.pending.front(), Some(Pending::Refused(_)))
                    || ["227", "229"].iter().any(|v| prefix_of(partial, v))
            }
        };
        if hold {
            partial.len()
        } else {
            0
        }
    }

    fn on_stream_event(&mut self, cx: &mut Ctx<'_>, dir: Dir, ev: Found<'_>) -> Option<SegVerdict> {
        match ev {
            Found::Line { start, text, term } => self.on_line(cx, dir, start, text, term),
            Found::Overlong { start } => {
                let detail = format!("control line longer than {MAX_LINE} bytes");
                Some(self.violation(cx, dir, start, DropReason::Malformed, detail))
            }
            Found::Gap { .. } => None,
        }
    }

    fn on_line(&mut self, cx: &mut Ctx<'_>, dir: Dir, start: u64, text: &[u8], term: u8) -> Option<SegVerdict> {
        let session = self.session;
        let logged = if cx.lines { loggable_line(text) } else { String::new() };
        match dir {
            Dir::Orig => cx.events.push(EventKind::FtpCommand { session, line: logged }),
            Dir::Reply => cx.events.push(EventKind::FtpReply { session, line: logged }),
        }
        if cx.cfg.strict {
            if let Some(why) = strict_problem(text, term) {
                return Some(self.violation(cx, dir, start, DropReason::Malformed, why.to_string()));
            }
        }
        let old_len = text.len() + term as usize;
        match dir {
            Dir::Orig => self.on_command(cx, start, text, old_len),
            Dir::Reply => self.on_reply(cx, start, text, old_len),
        }
    }

    fn on_command(&mut self, cx: &mut Ctx<'_>, start: u64, text: &[u8], old_len: usize) -> Option<SegVerdict> {
        if self.pending.len() >= MAX_PENDING {
            let detail = format!("more than {MAX_PENDING} data-connection commands awaiting a reply");
            return Some(self.violation(cx, Dir::Orig, start, DropReason::Limit, detail));
        }
        if let Some(verb) = disguised_verb(text, &cx.cfg.deny_commands) {
            // Telnet codes or odd white space around a verb the gateway acts
            // on: a server may read it as that verb while the gateway would not.
            let why = format!("{verb} disguised with Telnet control codes or unusual white space");
            return self.refuse(cx, start, old_len, DropReason::Malformed, why);
        }
        let cmd = match parse::parse_command(text) {
            Ok(c) => c,
            Err(ParseError::Malformed(why)) => {
                // The server must not get to interpret an address the gateway
                // could not (a wrapped octet is another host): refuse it.
                let detail = format!("{}: {why}", loggable_line(text));
                return self.refuse(cx, start, old_len, DropReason::Malformed, detail);
            }
        };
        // Borrowed unless the verb is not UTF-8. It is compared without
        // case; the upper-case copy is made only for a refusal's message.
        let word = String::from_utf8_lossy(text.split(|&b| b == b' ').next().unwrap_or(b""));
        let verb = || word.to_ascii_uppercase();
        let passive_refusal = |s: &Self| -> Option<String> {
            if cx.cfg.passive == Action::Deny {
                Some(format!("{}: passive mode is not allowed by the gateway (ftp.passive: deny)", verb()))
            } else if s.epsv_all && !word.eq_ignore_ascii_case("EPSV") {
                Some(format!("{}: refused after EPSV ALL (RFC 2428)", verb()))
            } else {
                None
            }
        };
        match cmd {
            Command::Port(addr) => self.on_active(cx, start, text, old_len, SocketAddr::V4(addr), None),
            Command::Eprt(addr) => {
                // The argument's first byte, however many spaces follow the verb.
                let delim = text.iter().skip(4).find(|&&b| b != b' ').copied().unwrap_or(b'|');
                self.on_active(cx, start, text, old_len, addr, Some(delim))
            }
            Command::Pasv | Command::Epsv(_) => {
                if let Some(why) = passive_refusal(self) {
                    return self.refuse(cx, start, old_len, DropReason::ModeDenied, why);
                }
                self.pending.push_back(if matches!(cmd, Command::Pasv) { Pending::Pasv } else { Pending::Epsv });
                None
            }
            Command::EpsvAll => {
                self.epsv_all = true;
                self.push_other();
                None
            }
            Command::Lprt | Command::Lpsv => {
                let why = format!("{}: long-address modes (RFC 1639) are not supported by the gateway", verb());
                self.refuse(cx, start, old_len, DropReason::ModeDenied, why)
            }
            Command::Auth(_) => {
                self.pending.push_back(Pending::Auth(loggable_line(text)));
                None
            }
            Command::Other { .. } => {
                if cx.cfg.deny_commands.iter().any(|d| d.eq_ignore_ascii_case(&word)) {
                    let why = format!("{}: command not allowed by the gateway (ftp.deny_commands)", verb());
                    return self.refuse(cx, start, old_len, DropReason::CommandDenied, why);
                }
                self.push_other();
                None
            }
        }
    }

    /// PORT or EPRT: the client names where the server should connect.
    fn on_active(
        &mut self,
        cx: &mut Ctx<'_>,
        start: u64,
        text: &[u8],
        old_len: usize,
        announced: SocketAddr,
        eprt_delim: Option<u8>,
    ) -> Option<SegVerdict> {
        let verb = if eprt_delim.is_some() { "EPRT" } else { "PORT" };
        if cx.cfg.active == Action::Deny {
            let why = format!("{verb}: active mode is not allowed by the gateway (ftp.active: deny)");
            return self.refuse(cx, start, old_len, DropReason::ModeDenied, why);
        }
        if self.epsv_all {
            let why = format!("{verb}: refused after EPSV ALL (RFC 2428)");
            return self.refuse(cx, start, old_len, DropReason::ModeDenied, why);
        }
        let conn = cx.conn;
        let client = conn.orig.src;
        let mut ip = announced.ip();
        if ip.is_unspecified() {
            if cx.cfg.zero_address == ZeroAddress::Deny {
                let why = format!("{verb} {}: the zero address is refused (ftp.zero_address: deny)", ip);
                return self.refuse(cx, start, old_len, DropReason::Bounce, why);
            }
            ip = client;
        }
        if ip != client && cx.cfg.third_party == Action::Deny {
            let detail = format!("{verb} names {ip}, not the client {client}: FTP bounce");
            return Some(self.violation(cx, Dir::Orig, start, DropReason::Bounce, detail));
        }
        let port = announced.port();
        if port < 1024 && cx.cfg.privileged_data_ports == Action::Deny {
            let why = format!("{verb}: data port {port} is privileged (ftp.privileged_data_ports: deny)");
            return self.refuse(cx, start, old_len, DropReason::PrivilegedPort, why);
        }

        // Where the server will connect: the client's public side when masqueraded.
        let server_seen = conn.reply.src;
        let (address, public_port, snat) = match conn.snat(Dir::Orig) {
            Some((public, _)) if public.is_ipv4() == ip.is_ipv4() => {
                let Some(q) = self.alloc_port(cx, public, port, server_seen) else {
                    let why = format!("{verb}: no free port on {public} for the data connection");
                    return self.refuse(cx, start, old_len, DropReason::Limit, why);
                };
                (public, q, None)
            }
            // A published server's data comes from its public address.
            _ => (ip, port, conn.dnat(Dir::Orig).map(|(_, _)| conn.orig.dst)),
        };
        let key = (address, public_port);
        let opened = self.open_pinhole(cx, key, server_seen, (ip, port), snat, conn.iface(1));
        if !opened {
            let why = format!("{verb}: {address}:{public_port} is already expected by another session");
            return self.refuse(cx, start, old_len, DropReason::Limit, why);
        }
        self.pending.push_back(Pending::Active(key));

        let rewritten = address != announced.ip() || public_port != port;
        if rewritten {
            let mut line = Vec::with_capacity(48);
            let verb_text = &text[..4.min(text.len())];
            line.extend_from_slice(verb_text);
            line.push(b' ');
            match (eprt_delim, address) {
                (None, IpAddr::V4(v4)) => parse::write_port_args(&mut line, SocketAddrV4::new(v4, public_port)),
                (Some(d), a) => parse::write_eprt_args(&mut line, d, SocketAddr::new(a, public_port)),
                (None, IpAddr::V6(_)) => unreachable!("PORT carries IPv4 only"),
            }
            line.extend_from_slice(b"\r\n");
            self.rewrite(cx, Dir::Orig, start, old_len, line);
        }
        None
    }

    fn on_reply(&mut self, cx: &mut Ctx<'_>, start: u64, text: &[u8], old_len: usize) -> Option<SegVerdict> {
        let half = self.halves[1].as_mut().expect("replies flow after the SYN-ACK");
        let rl = parse::parse_reply_line(text);
        if let Some(code) = half.multiline {
            match rl {
                Some(r) if r.code == code && r.last => half.multiline = None,
                _ => {
                    half.ml_lines.push((start, old_len));
                    return None;
                }
            }
        } else {
            half.ml_lines.clear();
            match rl {
                None => return None,
                Some(r) if !r.last => {
                    half.multiline = Some(r.code);
                    half.ml_lines.push((start, old_len));
                    return None;
                }
                Some(_) => {}
            }
        }
        let rl = rl.expect("a final reply line");
        if rl.code < 200 {
            return None; // preliminary: the command is still pending
        }
        if self.resync {
            // Picked up mid-session: replies to commands sent before the gateway
            // started may still be arriving. One that cannot answer the oldest
            // command seen belongs to one of those.
            let plausible = match self.pending.front() {
                Some(Pending::Pasv) => rl.code == 227 || rl.code >= 400,
                Some(Pending::Epsv) => rl.code == 229 || rl.code >= 400,
                Some(Pending::Active(_)) => (200..300).contains(&rl.code) || rl.code >= 400,
                _ => true,
            };
            if !plausible {
                return None;
            }
        }
        let pending = self.pop_pending()?; // unsolicited replies (the greeting) change nothing
        match (pending, rl.code) {
            (Pending::Pasv, 227) => self.on_227(cx, start, text, rl.text, old_len),
            (Pending::Epsv, 229) => self.on_229(cx, start, text, rl.text, old_len),
            (Pending::Active(key), code) if code >= 400 => {
                // The server refused the PORT: nothing will connect.
                self.close_pinhole(cx, key, false);
                None
            }
            (Pending::Auth(line), 234) => {
                self.encrypted = true;
                cx.events.push(EventKind::FtpEncrypted { session: self.session, line });
                None
            }
            (Pending::Refused(msg), _) => {
                let line = format!("{msg}\r\n").into_bytes();
                self.refuse_reply(cx, start, old_len, line);
                None
            }
            _ => None,
        }
    }

    fn on_227(&mut self, cx: &mut Ctx<'_>, start: u64, line: &[u8], text: &[u8], old_len: usize) -> Option<SegVerdict> {
        let (addr, range) = match parse::parse_227(text) {
            Ok(x) => x,
            Err(ParseError::Malformed(why)) => {
                let detail = format!("{}: {why}", loggable_line(line));
                // A 227 without a usable address opens nothing; the client fails on its own.
                cx.events.push(drop_event(self.session, DropReason::Malformed, detail));
                return None;
            }
        };
        let text_at = line.len() - text.len();
        let range = (range.start + text_at)..(range.end + text_at);
        self.on_passive(cx, start, line, old_len, Some(IpAddr::V4(*addr.ip())), addr.port(), range)
    }

    fn on_229(&mut self, cx: &mut Ctx<'_>, start: u64, line: &[u8], text: &[u8], old_len: usize) -> Option<SegVerdict> {
        let (port, range) = match parse::parse_229(text) {
            Ok(x) => x,
            Err(ParseError::Malformed(why)) => {
                let detail = format!("{}: {why}", loggable_line(line));
                cx.events.push(drop_event(self.session, DropReason::Malformed, detail));
                return None;
            }
        };
        let text_at = line.len() - text.len();
        let range = (range.start + text_at)..(range.end + text_at);
        self.on_passive(cx, start, line, old_len, None, port, range)
    }

    /// A 227 (with an address) or 229 (port only): the client will connect.
    #[allow(clippy::too_many_arguments)]
    fn on_passive(
        &mut self,
        cx: &mut Ctx<'_>,
        start: u64,
        line: &[u8],
        old_len: usize,
        named: Option<IpAddr>,
        port: u16,
        range: std::ops::Range<usize>,
    ) -> Option<SegVerdict> {
        let conn = cx.conn;
        let server_real = conn.reply.src;
        let code = if named.is_some() { "227" } else { "229" };
        let mut target = named.unwrap_or(server_real);
        if target != server_real {
            match cx.cfg.pasv_mismatch {
                PasvMismatch::Fix => target = server_real,
                PasvMismatch::Allow => {}
                PasvMismatch::Deny => {
                    let why = format!("{code} names {target}, not the server {server_real} (ftp.pasv_mismatch: deny)");
                    cx.events.push(drop_event(self.session, DropReason::Bounce, why));
                    let refusal = b"425 Passive address refused by the gateway\r\n".to_vec();
                    self.refuse_reply(cx, start, old_len, refusal);
                    return None;
                }
            }
        }
        if port < 1024 && cx.cfg.privileged_data_ports == Action::Deny {
            let why = format!("{code}: data port {port} is privileged (ftp.privileged_data_ports: deny)");
            cx.events.push(drop_event(self.session, DropReason::PrivilegedPort, why));
            let refusal = b"425 Privileged data port refused by the gateway\r\n".to_vec();
            self.refuse_reply(cx, start, old_len, refusal);
            return None;
        }
        let client_seen = conn.orig.src;
        // What the client must be told: the server as the client sees it.
        let (address, public_port) = match conn.dnat(Dir::Orig) {
            Some(_) if target == server_real => {
                let public = conn.orig.dst;
                let Some(q) = self.alloc_port(cx, public, port, client_seen) else {
                    cx.events.push(drop_event(self.session, DropReason::Limit, format!("no free port on {public}")));
                    return None;
                };
                (public, q)
            }
            _ => (target, port),
        };
        // A masqueraded client's data connection leaves with the control connection's public address.
        let snat = conn.snat(Dir::Orig).map(|(ip, _)| ip);
        let key = (address, public_port);
        if !self.open_pinhole(cx, key, client_seen, (target, port), snat, conn.iface(0)) {
            let detail = format!("{address}:{public_port} is already expected by another session");
            cx.events.push(drop_event(self.session, DropReason::Limit, detail));
            return None;
        }
        let changed = named.is_some_and(|n| n != address) || public_port != port;
        if changed {
            let mut new = Vec::with_capacity(line.len() + 16);
            new.extend_from_slice(&line[..range.start]);
            match address {
                IpAddr::V4(v4) if named.is_some() => {
                    parse::write_port_args(&mut new, SocketAddrV4::new(v4, public_port))
                }
                _ => new.extend_from_slice(public_port.to_string().as_bytes()),
            }
            new.extend_from_slice(&line[range.end..]);
            new.extend_from_slice(b"\r\n");
            self.rewrite(cx, Dir::Reply, start, old_len, new);
        }
        None
    }

    /// Choose the public port for a data connection: the original when the
    /// policy preserves ports and it is free, else a random free one.
    fn alloc_port(&mut self, cx: &mut Ctx<'_>, public: IpAddr, want: u16, peer: IpAddr) -> Option<u16> {
        let (table, pins) = (cx.table, cx.pinholes);
        cx.ports.pick(cx.nat_ports, want, |p| {
            !pins.contains_key(&(public, p))
                && !table.contains(&Tuple { src: peer, dst: public, sport: 20, dport: p, proto: PROTO_TCP })
        })
    }

    fn open_pinhole(
        &mut self,
        cx: &mut Ctx<'_>,
        key: PinholeKey,
        peer: IpAddr,
        target: (IpAddr, u16),
        snat: Option<IpAddr>,
        ingress: IfIndex,
    ) -> bool {
        if let Some(existing) = cx.pinholes.get(&key) {
            if existing.control != self.control || existing.worker != cx.worker {
                return false;
            }
        }
        while self.pinholes.len() >= cx.cfg.max_pinholes as usize {
            let Some(old) = self.pinholes.front().copied() else { break };
            self.close_pinhole(cx, old, true);
        }
        let expires = cx.now.saturating_add(cx.cfg.pinhole_timeout);
        let pin = Pinhole {
            session: self.session,
            control: self.control,
            peer,
            address: key.0,
            port: key.1,
            target,
            snat,
            expires,
            ingress,
            worker: cx.worker,
        };
        // Another worker may have taken the key since the check above: theirs stands.
        match cx.pinholes.entry(key) {
            dashmap::mapref::entry::Entry::Occupied(mut e)
                if e.get().control == self.control && e.get().worker == cx.worker =>
            {
                e.insert(pin);
            }
            dashmap::mapref::entry::Entry::Occupied(_) => return false,
            dashmap::mapref::entry::Entry::Vacant(e) => {
                e.insert(pin);
            }
        }
        self.pinholes.retain(|k| *k != key);
        self.pinholes.push_back(key);
        cx.events.push(EventKind::PinholeOpen {
            session: self.session,
            peer,
            address: key.0,
            port: key.1,
            expires: expires.as_secs_f64(),
        });
        true
    }

    /// Close one of this session's pinholes (`expire_event`: log it as expired).
    pub fn close_pinhole(&mut self, cx: &mut Ctx<'_>, key: PinholeKey, expire_event: bool) {
        self.pinholes.retain(|k| *k != key);
        if cx.pinholes.remove_if(&key, |_, p| p.control == self.control && p.worker == cx.worker).is_some()
            && expire_event
        {
            cx.events.push(EventKind::PinholeExpire { session: self.session, address: key.0, port: key.1 });
        }
    }

    /// Record that the line at `start` (of `old_len` bytes with its
    /// terminator) goes out as `new`.
    fn rewrite(&mut self, cx: &mut Ctx<'_>, dir: Dir, start: u64, old_len: usize, new: Vec<u8>) {
        let half = self.halves[dir.idx()].as_mut().expect("line came from this half");
        if start < half.released || (start - half.released) as usize + old_len > half.held.len() {
            // Part of the line already went out (it did not look like one to
            // change while incomplete): too late to rewrite it.
            let detail = "line already partly forwarded; not rewritten".to_string();
            cx.events.push(drop_event(self.session, DropReason::Malformed, detail));
            return;
        }
        let rel = (start - half.released) as usize;
        let before = String::from_utf8_lossy(trim_eol(&half.held[rel..rel + old_len])).into_owned();
        let after = String::from_utf8_lossy(trim_eol(&new)).into_owned();
        let delta = new.len() as i64 - old_len as i64;
        half.rewrites.push(Rewrite { start, old_len: old_len as u32, new });
        cx.events.push(EventKind::AlgRewrite { session: self.session, before, after, delta });
    }

    /// Replace a command by NOOP so the server never runs it, and turn the
    /// reply to that NOOP into `why` for the client.
    fn refuse(
        &mut self,
        cx: &mut Ctx<'_>,
        start: u64,
        old_len: usize,
        reason: DropReason,
        why: String,
    ) -> Option<SegVerdict> {
        cx.events.push(drop_event(self.session, reason, why.clone()));
        let code = match reason {
            DropReason::CommandDenied => 550,
            DropReason::ModeDenied => 502,
            _ => 501,
        };
        self.pending.push_back(Pending::Refused(format!("{code} {why}")));
        self.rewrite(cx, Dir::Orig, start, old_len, b"NOOP\r\n".to_vec());
        None
    }

    fn push_other(&mut self) {
        match self.pending.back_mut() {
            Some(Pending::Other(n)) => *n = n.saturating_add(1),
            _ => self.pending.push_back(Pending::Other(1)),
        }
    }

    fn pop_pending(&mut self) -> Option<Pending> {
        if let Some(Pending::Other(n)) = self.pending.front_mut() {
            if *n > 1 {
                *n -= 1;
                return Some(Pending::Other(1));
            }
        }
        self.pending.pop_front()
    }

    /// Replace a whole reply (every line of a multi-line one, still held)
    /// by `line`, so the client reads one well-formed refusal.
    fn refuse_reply(&mut self, cx: &mut Ctx<'_>, start: u64, old_len: usize, line: Vec<u8>) {
        let earlier = self.halves[1].as_mut().map(|h| std::mem::take(&mut h.ml_lines)).unwrap_or_default();
        for (s, l) in earlier {
            self.rewrite(cx, Dir::Reply, s, l, Vec::new());
        }
        self.rewrite(cx, Dir::Reply, start, old_len, line);
    }

    /// An attack or a broken line: drop, or reset both ends, per `on_violation`.
    fn violation(&mut self, cx: &mut Ctx<'_>, dir: Dir, start: u64, reason: DropReason, detail: String) -> SegVerdict {
        if let Some(h) = self.halves[dir.idx()].as_mut() {
            h.blocked = Some((start, reason));
        }
        match cx.cfg.on_violation {
            OnViolation::Reset => {
                // Both ends were reset: whatever either still sends is dropped quietly.
                if let Some(h) = self.halves[dir.flip().idx()].as_mut() {
                    h.blocked = Some((h.stream.next_offset(), reason));
                }
                SegVerdict::Reset(reason, detail)
            }
            OnViolation::Drop => SegVerdict::Drop(reason, detail),
        }
    }

    /// Bytes the session keeps for both directions: seen in order and not yet
    /// forwarded (a partial line that may still change), plus the line
    /// reassembler's copy of the current line. Each direction is bounded by
    /// about twice `MAX_LINE`: a longer line is a violation.
    pub fn buffered_bytes(&self) -> usize {
        self.halves.iter().flatten().map(|h| h.held.len() + h.stream.partial_len() + h.stream.held_bytes()).sum()
    }

    /// Rewrites remembered for sequence mapping, both directions.
    pub fn rewrite_history(&self) -> usize {
        self.halves.iter().flatten().map(|h| h.rewrites.len()).sum()
    }

    /// Commands still waiting for their final reply.
    pub fn pending_replies(&self) -> usize {
        self.pending.len()
    }

    /// Where the stream of `dir` stands, in the receiver's sequence numbers:
    /// (next sequence number the receiver expects from this sender). For RSTs.
    pub fn receiver_next(&self, dir: Dir) -> Option<u32> {
        let h = self.halves[dir.idx()].as_ref()?;
        Some(h.isn.wrapping_add(h.map_fwd(h.released) as u32))
    }
}

fn drop_event(session: Session, reason: DropReason, detail: String) -> EventKind {
    EventKind::Drop { reason, rule: None, session: Some(session), src: None, dst: None, detail }
}

/// `line` with Telnet commands removed as a Telnet-aware server reads it:
/// IAC IAC is a literal 0xFF, IAC WILL/WONT/DO/DONT x and IAC x vanish.
fn telnet_clean(line: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !line.contains(&0xff) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len());
    let mut i = 0;
    while i < line.len() {
        if line[i] != 0xff {
            out.push(line[i]);
            i += 1;
            continue;
        }
        match line.get(i + 1) {
            Some(0xff) => {
                out.push(0xff);
                i += 2;
            }
            Some(251..=254) => i += 3,
            _ => i += 2,
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The verb a lenient server would see in `line`, when it is one the gateway
/// acts on but the line does not spell it plainly ("VERB" + one space).
fn disguised_verb(line: &[u8], denied: &[String]) -> Option<String> {
    let clean = telnet_clean(line);
    let trimmed = clean.trim_ascii_start();
    let end = trimmed.iter().position(|b| b.is_ascii_whitespace()).unwrap_or(trimmed.len());
    // Borrowed unless the word is not UTF-8; compared without case, so the
    // upper-case copy is made only for a verb the gateway acts on.
    let word = String::from_utf8_lossy(&trimmed[..end]);
    let acted_on = ADDRESS_VERBS.iter().any(|v| v.eq_ignore_ascii_case(&word))
        || denied.iter().any(|d| d.eq_ignore_ascii_case(&word));
    if !acted_on {
        return None;
    }
    let verb = word.to_ascii_uppercase();
    let plain = line.len() >= end
        && line[..end].eq_ignore_ascii_case(verb.as_bytes())
        && matches!(line.get(end), None | Some(b' '));
    (!plain).then_some(verb)
}

/// The bytes after the last LF (the line still being received).
fn partial_line(held: &[u8]) -> &[u8] {
    match held.iter().rposition(|&b| b == b'\n') {
        Some(i) => &held[i + 1..],
        None => held,
    }
}

/// Could `partial` still grow into a line starting with `verb`?
fn prefix_of(partial: &[u8], verb: &str) -> bool {
    let n = partial.len().min(verb.len());
    partial[..n].eq_ignore_ascii_case(&verb.as_bytes()[..n])
}

fn trim_eol(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

/// `ftp.strict`: what makes a line not a well-formed RFC 959/2428 line.
fn strict_problem(text: &[u8], term: u8) -> Option<&'static str> {
    if term != 2 {
        return Some("line ends with a bare LF, not CRLF (ftp.strict)");
    }
    if text.contains(&0) {
        return Some("NUL byte in a control line (ftp.strict)");
    }
    if text.contains(&0xff) {
        return Some("Telnet IAC in a control line (ftp.strict)");
    }
    if text.contains(&b'\r') {
        return Some("bare CR inside a control line (ftp.strict)");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half_with(rewrites: Vec<(u64, u32, &str)>) -> Half {
        let mut h = Half::new(1000);
        h.rewrites = rewrites
            .into_iter()
            .map(|(start, old_len, new)| Rewrite { start, old_len, new: new.as_bytes().to_vec() })
            .collect();
        h
    }

    #[test]
    fn offsets_map_through_growing_and_shrinking_rewrites() {
        // Bytes 10..20 became 13 bytes; bytes 40..50 became 8 bytes.
        let h = half_with(vec![(10, 10, "ABCDEFGHIJKLM"), (40, 10, "abcdefgh")]);
        assert_eq!(h.map_fwd(0), 0);
        assert_eq!(h.map_fwd(10), 10);
        assert_eq!(h.map_fwd(15), 15);
        assert_eq!(h.map_fwd(20), 23);
        assert_eq!(h.map_fwd(40), 43);
        assert_eq!(h.map_fwd(50), 51);
        assert_eq!(h.map_fwd(60), 61);
        // Acknowledgements map back; inside a line they stay short of its end.
        assert_eq!(h.map_back(23), 20);
        assert_eq!(h.map_back(61), 60);
        assert_eq!(h.map_back(22), 19);
        assert_eq!(h.map_back(15), 15);
        for o in [0u64, 5, 10, 20, 30, 40, 50, 70] {
            assert_eq!(h.map_back(h.map_fwd(o)), o, "line boundaries round-trip");
        }
    }

    #[test]
    fn bytes_map_the_same_however_they_are_cut() {
        let h = half_with(vec![(4, 6, "XYZXYZXYZ"), (12, 3, "q")]);
        let orig = b"abcdPORT12\r\nLFX\r\nend";
        let mut whole = Vec::new();
        h.map_bytes(0, orig, &mut whole);
        assert_eq!(&whole, b"abcdXYZXYZXYZ\r\nq\r\nend");
        for cut in 0..orig.len() {
            for cut2 in cut..orig.len() {
                let mut parts = Vec::new();
                h.map_bytes(0, &orig[..cut], &mut parts);
                h.map_bytes(cut as u64, &orig[cut..cut2], &mut parts);
                h.map_bytes(cut2 as u64, &orig[cut2..], &mut parts);
                assert_eq!(parts, whole, "cut at {cut},{cut2}");
                // Each piece starts where map_fwd says.
                let mut first = Vec::new();
                h.map_bytes(0, &orig[..cut], &mut first);
                assert_eq!(first.len() as u64, h.map_fwd(cut as u64));
            }
        }
    }

    #[test]
    fn hold_decisions() {
        assert!(prefix_of(b"PO", "PORT"));
        assert!(prefix_of(b"port 1,2", "PORT"));
        assert!(!prefix_of(b"RETR x", "PORT"));
        assert!(prefix_of(b"22", "227"));
        assert_eq!(partial_line(b"USER a\r\nPOR"), b"POR");
        assert_eq!(partial_line(b"USER a\r\n"), b"");
        assert_eq!(strict_problem(b"PORT 1,2,3,4,5,6", 1), Some("line ends with a bare LF, not CRLF (ftp.strict)"));
        assert_eq!(strict_problem(b"NOOP", 2), None);
    }

    #[test]
    fn telnet_clean_borrows_a_plain_line() {
        assert!(matches!(telnet_clean(b"PORT 1,2,3,4,5,6"), std::borrow::Cow::Borrowed(b"PORT 1,2,3,4,5,6")));
        let cleaned = telnet_clean(b"PO\xff\xf1RT \xff\xfb\x01x\xff\xff");
        assert!(matches!(cleaned, std::borrow::Cow::Owned(_)));
        assert_eq!(&*cleaned, b"PORT x\xff");
    }

    #[test]
    fn disguised_verbs() {
        let denied = ["DELE".to_string()];
        for plain in [
            &b"PORT 1,2,3,4,5,6"[..],
            b"port 1,2",
            b"PASV",
            b"USER x",
            b" USER x",
            b"dele x",
            b"PO\x80RT 1",
            b"PASV  ",
            b"",
        ] {
            assert_eq!(disguised_verb(plain, &denied), None, "{:?}", String::from_utf8_lossy(plain));
        }
        for (line, verb) in [
            (&b" PORT 1,2"[..], "PORT"),
            (b"PO\xff\xf1RT 1,2", "PORT"),
            (b"eprt\t|1|", "EPRT"),
            (b"pasv\r", "PASV"),
            (b"\tDeLe x", "DELE"),
        ] {
            assert_eq!(disguised_verb(line, &denied).as_deref(), Some(verb), "{:?}", String::from_utf8_lossy(line));
        }
    }

    use crate::counting;

    #[test]
    fn plain_lines_allocate_once_each() {
        use crate::config::PortMode;
        use crate::conntrack::State;

        let orig = Tuple {
            src: "192.0.2.10".parse().unwrap(),
            dst: "198.51.100.20".parse().unwrap(),
            sport: 40000,
            dport: 21,
            proto: PROTO_TCP,
        };
        let conn = Conn::for_test(orig, orig.reversed(), State::Established);
        let cfg = Ftp::default();
        let table = Table::new(1, 64);
        let mut ports = PortAllocator::new(1);
        let pinholes = new_pinholes();
        let mut scratch = Scratch::default();
        let mut events = Vec::new();
        // One segment through the session, in a context over the state above.
        macro_rules! segment {
            ($ftp:expr, $events:expr, $dir:expr, $seg:expr) => {{
                let mut cx = Ctx {
                    cfg: &cfg,
                    now: Nanos(0),
                    conn: &conn,
                    table: &table,
                    ports: &mut ports,
                    pinholes: &pinholes,
                    nat_ports: PortMode::Random,
                    events: $events,
                    scratch: &mut scratch,
                    capture: false,
                    worker: 0,
                    lines: true,
                };
                $ftp.on_segment(&mut cx, $dir, $seg)
            }};
        }
        let mut ftp = FtpSession::new(0, &conn, 1000);
        ftp.server_isn(5000);
        let (mut c, mut s) = (1000u32, 5000u32);
        // Each round: commands one per segment and two in one segment, a
        // command and a reply cut across segments, replies to all.
        let client: [&[u8]; 4] = [b"CWD /pub\r\n", b"TYPE I\r\nPWD\r\n", b"SIZE read", b"me.txt\r\n"];
        let server: [&[u8]; 4] =
            [b"250 Directory changed\r\n", b"200 Type set to I\r\n257 \"/pub\"\r\n", b"213 1", b"234\r\n"];
        let lines_per_round = 8;
        let mut round = |ftp: &mut FtpSession, events: &mut Vec<EventKind>| {
            for (dir, payloads) in [(Dir::Orig, client), (Dir::Reply, server)] {
                for p in payloads {
                    let (seq, ack) = if dir == Dir::Orig { (c, s) } else { (s, c) };
                    let seg = Seg { seq, ack, flags: tcp_flags::ACK | tcp_flags::PSH, payload: p };
                    let (verdict, edit) = segment!(ftp, &mut *events, dir, &seg);
                    assert_eq!((verdict, edit), (SegVerdict::Forward, Edit::default()));
                    if dir == Dir::Orig {
                        c = c.wrapping_add(p.len() as u32);
                    } else {
                        s = s.wrapping_add(p.len() as u32);
                    }
                }
            }
        };
        // Warm up the reused buffers and the event list.
        for _ in 0..4 {
            round(&mut ftp, &mut events);
            assert_eq!(events.len(), lines_per_round);
            events.clear();
        }
        let before = counting::allocs();
        for _ in 0..50 {
            round(&mut ftp, &mut events);
            events.clear();
        }
        let during = counting::allocs() - before;
        // One per line: the String the event carries.
        assert_eq!(during, 50 * lines_per_round as u64);
        assert_eq!(ftp.pending_replies(), 0);

        // Closing: each FIN gives back the room its sender's half kept.
        let room = |f: &FtpSession| -> usize {
            f.halves.iter().flatten().map(|h| h.held.capacity() + h.unacked.capacity() + h.stream.capacity()).sum()
        };
        assert!(room(&ftp) > 0, "the open session kept buffers");
        for (dir, seq, ack) in [(Dir::Orig, c, s), (Dir::Reply, s, c.wrapping_add(1))] {
            let seg = Seg { seq, ack, flags: tcp_flags::ACK | tcp_flags::FIN, payload: b"" };
            assert_eq!(segment!(ftp, &mut events, dir, &seg).0, SegVerdict::Forward);
        }
        assert_eq!(room(&ftp), 0, "a closed session holds no buffer room");
    }
}
