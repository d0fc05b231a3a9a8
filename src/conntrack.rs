//! The connection table: every connection keyed twice, by the tuple its
//! initiator's packets carry on arrival (`Dir::Orig`) and by the tuple the
//! replies carry on arrival (`Dir::Reply`, after NAT). A lookup answers both
//! "is this known" and "which way is it going" in one probe.
//!
//! A plain owned hash table with a seeded foldhash: each worker owns its
//! table, so no locks on the per-frame path. The index stores only a 4-byte
//! slot number per key (`hashbrown::HashTable`); the key itself is compared
//! against the connection it points to, which the frame needs next anyway.
//! That keeps the index at about 10 bytes per connection.

use std::collections::HashMap;
use std::hash::BuildHasher;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{IfIndex, Timeouts};
use crate::time::Nanos;
use crate::wire::{tcp_flags, Mac};

/// A flow as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    pub fn reversed(&self) -> Tuple {
        Tuple { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, proto: self.proto }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dir {
    Orig = 0,
    Reply = 1,
}

impl Dir {
    pub fn flip(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
    pub fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// UDP/ICMP/other: seen one way only.
    New,
    /// UDP/ICMP/other: seen both ways.
    Replied,
    SynSent,
    SynRecv,
    Established,
    /// One side has sent FIN.
    FinWait,
    /// Both sides sent FIN; lingering to absorb the last ACKs and retransmissions.
    TimeWait,
    /// Reset; lingering briefly.
    Close,
}

impl State {
    /// The connection is over for the log (its `connection_end` has been emitted).
    pub fn is_closed(self) -> bool {
        matches!(self, State::TimeWait | State::Close)
    }
}

/// Per-direction TCP sequence tracking, after Guido van Rooij's "Real Stateful
/// TCP Packet Filtering in IP Filter", as Linux conntrack does it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDir {
    /// Highest sequence number this side has sent, plus one.
    pub end: u32,
    /// Highest sequence number the other side has allowed this side to send.
    pub maxend: u32,
    /// Largest window the other side has advertised (scaled), at least 1.
    pub maxwin: u32,
    pub scale: u8,
    /// This side's SYN carried a window-scale option.
    pub scaled: bool,
    pub init: bool,
    pub fin: bool,
}

/// Index of a connection in the table's slab.
pub type ConnId = u32;

#[derive(Clone, Debug)]
pub struct Conn {
    pub orig: Tuple,
    pub reply: Tuple,
    pub state: State,
    pub expires: Nanos,
    /// [interface the initiator is on, interface the responder is on]
    /// (`IfIndex` values, narrowed: a gateway has far fewer than 256).
    pub ifaces: [u8; 2],
    /// Next-hop MAC for each direction ([toward the responder, toward the initiator]),
    /// learned from the frames themselves; all-zero while unknown.
    pub macs: [Mac; 2],
    pub tcp: [TcpDir; 2],
    /// Index of the FTP ALG state when this is an FTP control connection.
    pub alg: Option<u32>,
    /// Set on data connections admitted by a pinhole: the control connection.
    pub parent: Option<ConnId>,
    pub ended: bool,
}

impl Conn {
    /// Source address/port NAT changes for packets going in `dir`, if any.
    pub fn snat(&self, dir: Dir) -> Option<(IpAddr, u16)> {
        let (from, to) = self.translation(dir);
        (from.src != to.src || from.sport != to.sport).then_some((to.src, to.sport))
    }
    /// Destination NAT for packets going in `dir`, if any.
    pub fn dnat(&self, dir: Dir) -> Option<(IpAddr, u16)> {
        let (from, to) = self.translation(dir);
        (from.dst != to.dst || from.dport != to.dport).then_some((to.dst, to.dport))
    }
    /// (tuple on arrival, tuple on departure) for packets going in `dir`.
    pub fn translation(&self, dir: Dir) -> (Tuple, Tuple) {
        match dir {
            Dir::Orig => (self.orig, self.reply.reversed()),
            Dir::Reply => (self.reply, self.orig.reversed()),
        }
    }
    pub fn is_nat(&self) -> bool {
        self.orig != self.reply.reversed()
    }
    /// Egress interface for packets going in `dir`.
    pub fn egress(&self, dir: Dir) -> IfIndex {
        match dir {
            Dir::Orig => self.ifaces[1] as IfIndex,
            Dir::Reply => self.ifaces[0] as IfIndex,
        }
    }

    /// The interface on `side` 0 (initiator) or 1 (responder).
    pub fn iface(&self, side: usize) -> IfIndex {
        self.ifaces[side] as IfIndex
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key4 {
    src: [u8; 4],
    dst: [u8; 4],
    ports: [u16; 2],
    proto: u8,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Key6 {
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u16; 2],
    proto: u8,
}

/// (slot << 1) | dir
type Slot = u32;

pub struct Table {
    index: hashbrown::HashTable<Slot>,
    hasher: foldhash::quality::SeedableRandomState,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    live: usize,
    sweep_cursor: usize,
    per_source: HashMap<IpAddr, u32, foldhash::fast::RandomState>,
}

pub enum Lookup {
    Hit(ConnId, Dir),
    Miss,
}

impl Table {
    pub fn new(seed: u64, capacity: usize) -> Table {
        let hasher = foldhash::quality::SeedableRandomState::with_seed(seed, foldhash::SharedSeed::global_fixed());
        Table {
            index: hashbrown::HashTable::with_capacity(capacity * 2),
            hasher,
            conns: Vec::with_capacity(capacity),
            free: Vec::new(),
            live: 0,
            sweep_cursor: 0,
            per_source: HashMap::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Connections currently counted against `src` (for `max_connections_per_source`).
    pub fn count_for_source(&self, src: IpAddr) -> u32 {
        self.per_source.get(&src).copied().unwrap_or(0)
    }

    #[inline]
    pub fn lookup(&self, t: &Tuple) -> Option<(ConnId, Dir)> {
        let conns = &self.conns;
        let slot = *self.index.find(hash_tuple(&self.hasher, t), |&s| slot_tuple(conns, s) == Some(t))?;
        let dir = if slot & 1 == 0 { Dir::Orig } else { Dir::Reply };
        Some((slot >> 1, dir))
    }

    /// True when `t` is in use as either key of some connection.
    pub fn contains(&self, t: &Tuple) -> bool {
        self.lookup(t).is_some()
    }

    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id as usize).and_then(|c| c.as_ref())
    }

    #[inline]
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize).and_then(|c| c.as_mut())
    }

    /// Insert a connection. The caller has checked that neither tuple is in use.
    pub fn insert(&mut self, conn: Conn) -> ConnId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.conns.push(None);
                (self.conns.len() - 1) as ConnId
            }
        };
        let (orig, reply) = (conn.orig, conn.reply);
        *self.per_source.entry(conn.orig.src).or_insert(0) += 1;
        self.conns[id as usize] = Some(conn);
        self.put_key(&orig, (id << 1) | Dir::Orig as u32);
        self.put_key(&reply, (id << 1) | Dir::Reply as u32);
        self.live += 1;
        id
    }

    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let (orig, reply) = {
            let c = self.conns.get(id as usize)?.as_ref()?;
            (c.orig, c.reply)
        };
        self.del_key(&orig, id << 1);
        self.del_key(&reply, (id << 1) | 1);
        let conn = self.conns[id as usize].take()?;
        if let Some(n) = self.per_source.get_mut(&conn.orig.src) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&conn.orig.src);
            }
        }
        self.free.push(id);
        self.live -= 1;
        Some(conn)
    }

    /// Visit up to `budget` slots from where the last sweep stopped and return
    /// the connections whose time has passed. Amortises expiry over many ticks
    /// so that no tick walks a million entries.
    pub fn sweep(&mut self, now: Nanos, budget: usize, expired: &mut Vec<ConnId>) {
        let n = self.conns.len();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            if self.sweep_cursor >= n {
                self.sweep_cursor = 0;
            }
            if let Some(c) = &self.conns[self.sweep_cursor] {
                if c.expires <= now {
                    expired.push(self.sweep_cursor as ConnId);
                }
            }
            self.sweep_cursor += 1;
        }
    }

    /// Iterate live connections (admin and tests; not the per-frame path).
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.conns.iter().enumerate().filter_map(|(i, c)| c.as_ref().map(|c| (i as ConnId, c)))
    }

    /// Approximate heap bytes held (for the memory-per-connection benchmark).
    pub fn heap_bytes(&self) -> usize {
        // hashbrown: one slot value plus one control byte per bucket.
        let buckets = (self.index.capacity() * 8 / 7).next_power_of_two();
        let per_source = (self.per_source.capacity() * 8 / 7).next_power_of_two() * (std::mem::size_of::<(IpAddr, u32)>() + 1);
        buckets * (std::mem::size_of::<Slot>() + 1)
            + per_source
            + self.conns.capacity() * std::mem::size_of::<Option<Conn>>()
            + self.free.capacity() * 4
    }

    fn put_key(&mut self, t: &Tuple, slot: Slot) {
        let (conns, hasher) = (&self.conns, &self.hasher);
        let h = hash_tuple(hasher, t);
        self.index.insert_unique(h, slot, |&s| slot_tuple(conns, s).map_or(0, |t| hash_tuple(hasher, t)));
    }

    fn del_key(&mut self, t: &Tuple, slot: Slot) {
        if let Ok(e) = self.index.find_entry(hash_tuple(&self.hasher, t), |&s| s == slot) {
            e.remove();
        }
    }
}

/// The tuple a slot stands for: its connection's orig or reply key.
#[inline]
fn slot_tuple(conns: &[Option<Conn>], slot: Slot) -> Option<&Tuple> {
    let c = conns.get((slot >> 1) as usize)?.as_ref()?;
    Some(if slot & 1 == 0 { &c.orig } else { &c.reply })
}

#[inline]
fn hash_tuple(hasher: &foldhash::quality::SeedableRandomState, t: &Tuple) -> u64 {
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => hasher.hash_one(key4(s, d, t)),
        (IpAddr::V6(s), IpAddr::V6(d)) => hasher.hash_one(key6(s, d, t)),
        // Mixed families never match a connection; any hash will do.
        _ => 0,
    }
}

#[inline]
fn key4(s: Ipv4Addr, d: Ipv4Addr, t: &Tuple) -> Key4 {
    Key4 { src: s.octets(), dst: d.octets(), ports: [t.sport, t.dport], proto: t.proto }
}

#[inline]
fn key6(s: Ipv6Addr, d: Ipv6Addr, t: &Tuple) -> Key6 {
    Key6 { src: s.octets(), dst: d.octets(), ports: [t.sport, t.dport], proto: t.proto }
}


/// Serial-number comparison (RFC 1982) for 32-bit sequence numbers.
#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
pub fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// What one TCP segment did to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOutcome {
    Ok,
    /// The segment lies outside what either side could legitimately send now.
    OutOfWindow,
    /// The connection just ended (second FIN, or RST).
    Ended(crate::event::EndReason),
}

/// A TCP segment's fields as the tracker needs them.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload_len: u32,
    /// Window-scale option, from SYN / SYN-ACK only.
    pub wscale: Option<u8>,
}

/// Advance the TCP state and window tracking of `conn` for a segment going
/// in `dir`. Sequence numbers are those of the sender's side of the wire
/// (before any ALG shift on this hop).
pub fn track_tcp(conn: &mut Conn, dir: Dir, seg: &Segment, now: Nanos, to: &Timeouts) -> TcpOutcome {
    let f = seg.flags;
    let syn = f & tcp_flags::SYN != 0;
    let ack = f & tcp_flags::ACK != 0;
    let fin = f & tcp_flags::FIN != 0;
    let rst = f & tcp_flags::RST != 0;

    let end = seg.seq.wrapping_add(seg.payload_len).wrapping_add(syn as u32).wrapping_add(fin as u32);
    let (s, r) = split(&mut conn.tcp, dir);

    if syn && !s.init {
        s.init = true;
        s.end = end;
        s.scale = seg.wscale.unwrap_or(0);
        s.scaled = seg.wscale.is_some();
        s.maxwin = (seg.window as u32).max(1);
        s.maxend = end;
    } else if !s.init {
        // Picked up without this side's SYN (the responder's first segment is
        // its SYN-ACK, so this is unusual): trust the first segment seen.
        s.init = true;
        s.end = end;
        s.maxend = end;
        s.maxwin = (seg.window as u32).max(1);
    } else {
        let win = if syn { seg.window as u32 } else { (seg.window as u32) << s.scale.min(14) };
        // Acceptable: not beyond what the receiver allowed, not older than a
        // window behind what we have seen. Slack of one max window each way
        // keeps lost-capture and window-probe cases from being false alarms.
        if r.init {
            let upper = s.maxend.wrapping_add(r.maxwin.max(1));
            let lower = s.end.wrapping_sub(r.maxwin.max(1)).wrapping_sub(1);
            let in_win = seq_le(seg.seq, upper) && seq_lt(lower, end);
            if !in_win {
                return TcpOutcome::OutOfWindow;
            }
        }
        if seq_lt(s.end, end) {
            s.end = end;
        }
        if seq_lt(s.maxend, s.end) {
            s.maxend = s.end;
        }
        if win > s.maxwin {
            s.maxwin = win;
        }
    }
    // The receiver may now send up to what this side acknowledges plus its window.
    if ack {
        let win = (seg.window as u32) << if syn { 0 } else { s.scale.min(14) };
        let allowed = seg.ack.wrapping_add(win.max(1));
        if r.init && seq_lt(r.maxend, allowed) {
            r.maxend = allowed;
        }
        if r.init && win > s.maxwin {
            s.maxwin = win;
        }
    }
    if syn && ack && dir == Dir::Reply && !(conn.tcp[0].scaled && conn.tcp[1].scaled) {
        // RFC 7323: scaling is on only when both SYNs carried the option.
        conn.tcp[0].scale = 0;
        conn.tcp[1].scale = 0;
    }

    let (timeout, outcome) = next_state(conn, dir, syn, ack, fin, rst);
    conn.expires = now.saturating_add(match timeout {
        StateTimeout::Established => to.tcp_established,
        StateTimeout::Transitory => to.tcp_transitory,
        StateTimeout::Close => std::time::Duration::from_secs(10),
    });
    outcome
}

enum StateTimeout {
    Established,
    Transitory,
    Close,
}

fn next_state(conn: &mut Conn, dir: Dir, syn: bool, ack: bool, fin: bool, rst: bool) -> (StateTimeout, TcpOutcome) {
    use crate::event::EndReason;
    if rst {
        let was_closed = conn.state.is_closed();
        conn.state = State::Close;
        let out = if was_closed { TcpOutcome::Ok } else { TcpOutcome::Ended(EndReason::Rst) };
        return (StateTimeout::Close, out);
    }
    if fin {
        conn.tcp[dir.idx()].fin = true;
    }
    let st = match conn.state {
        State::SynSent if syn && ack && dir == Dir::Reply => State::SynRecv,
        State::SynRecv if ack && !syn && dir == Dir::Orig => State::Established,
        State::Established | State::SynRecv | State::SynSent if fin => State::FinWait,
        s => s,
    };
    let st = if conn.tcp[0].fin && conn.tcp[1].fin && !conn.state.is_closed() { State::TimeWait } else { st };
    let ended = st == State::TimeWait && !conn.state.is_closed();
    conn.state = st;
    let t = match st {
        State::Established => StateTimeout::Established,
        State::Close => StateTimeout::Close,
        _ => StateTimeout::Transitory,
    };
    (t, if ended { TcpOutcome::Ended(EndReason::Fin) } else { TcpOutcome::Ok })
}

fn split(d: &mut [TcpDir; 2], dir: Dir) -> (&mut TcpDir, &mut TcpDir) {
    let (a, b) = d.split_at_mut(1);
    match dir {
        Dir::Orig => (&mut a[0], &mut b[0]),
        Dir::Reply => (&mut b[0], &mut a[0]),
    }
}

/// The window-scale option (kind 3) from a SYN's TCP options, if present.
pub fn tcp_wscale(options: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = *options.get(i + 1)? as usize;
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return Some(options[i + 2].min(14));
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tuple(a: &str, sp: u16, b: &str, dp: u16) -> Tuple {
        Tuple { src: a.parse().unwrap(), dst: b.parse().unwrap(), sport: sp, dport: dp, proto: 6 }
    }

    fn conn(orig: Tuple, reply: Tuple) -> Conn {
        Conn {
            orig,
            reply,
            state: State::SynSent,
            expires: Nanos(0),
            ifaces: [0, 1],
            macs: [[0; 6]; 2],
            tcp: [TcpDir::default(); 2],
            alg: None,
            parent: None,
            ended: false,
        }
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            tcp_established: Duration::from_secs(432000),
            tcp_transitory: Duration::from_secs(120),
            udp: Duration::from_secs(30),
            icmp: Duration::from_secs(30),
        }
    }

    #[test]
    fn both_keys_find_the_connection_with_direction() {
        let mut t = Table::new(7, 16);
        let orig = tuple("192.0.2.10", 40000, "198.51.100.20", 21);
        let reply = tuple("198.51.100.20", 21, "198.51.100.1", 61000);
        let id = t.insert(conn(orig, reply));
        assert_eq!(t.lookup(&orig), Some((id, Dir::Orig)));
        assert_eq!(t.lookup(&reply), Some((id, Dir::Reply)));
        assert_eq!(t.lookup(&orig.reversed()), None);
        let c = t.get(id).unwrap();
        assert_eq!(c.snat(Dir::Orig), Some(("198.51.100.1".parse().unwrap(), 61000)));
        assert_eq!(c.dnat(Dir::Reply), Some(("192.0.2.10".parse().unwrap(), 40000)));
        assert_eq!(c.dnat(Dir::Orig), None);
        assert_eq!(t.count_for_source(orig.src), 1);
        t.remove(id);
        assert!(t.lookup(&orig).is_none() && t.lookup(&reply).is_none() && t.is_empty());
        assert_eq!(t.count_for_source(orig.src), 0);
    }

    #[test]
    fn ipv6_keys_work_and_slots_are_reused() {
        let mut t = Table::new(1, 0);
        let o = tuple("2001:db8:1::10", 1, "2001:db8:2::20", 2);
        let a = t.insert(conn(o, o.reversed()));
        t.remove(a);
        let b = t.insert(conn(o, o.reversed()));
        assert_eq!(a, b);
        assert_eq!(t.lookup(&o.reversed()), Some((b, Dir::Reply)));
    }

    #[test]
    fn sweep_finds_expired_over_several_ticks() {
        let mut t = Table::new(1, 0);
        for i in 0..10u16 {
            let o = tuple("192.0.2.10", 1000 + i, "198.51.100.20", 80);
            let mut c = conn(o, o.reversed());
            c.expires = Nanos(if i % 2 == 0 { 5 } else { 50 });
            t.insert(c);
        }
        let mut out = Vec::new();
        t.sweep(Nanos(10), 4, &mut out);
        t.sweep(Nanos(10), 4, &mut out);
        t.sweep(Nanos(10), 4, &mut out);
        out.sort();
        out.dedup();
        assert_eq!(out, vec![0, 2, 4, 6, 8]);
    }

    fn seg(seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment { seq, ack, flags, window: 65535, payload_len: len, wscale: None }
    }

    #[test]
    fn handshake_data_fin_and_junk() {
        use tcp_flags::*;
        let o = tuple("192.0.2.10", 40000, "198.51.100.20", 80);
        let mut c = conn(o, o.reversed());
        let to = timeouts();
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1000, 0, SYN, 0), Nanos(1), &to), TcpOutcome::Ok);
        assert_eq!(track_tcp(&mut c, Dir::Reply, &seg(5000, 1001, SYN | ACK, 0), Nanos(2), &to), TcpOutcome::Ok);
        assert_eq!(c.state, State::SynRecv);
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1001, 5001, ACK, 0), Nanos(3), &to), TcpOutcome::Ok);
        assert_eq!(c.state, State::Established);
        assert_eq!(c.expires, Nanos(3).saturating_add(to.tcp_established));
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1001, 5001, ACK | PSH, 100), Nanos(4), &to), TcpOutcome::Ok);
        // A segment far outside the window (an injected RST with a guessed sequence).
        assert_eq!(
            track_tcp(&mut c, Dir::Reply, &seg(5001u32.wrapping_add(3_000_000_000), 1101, RST, 0), Nanos(5), &to),
            TcpOutcome::OutOfWindow
        );
        assert_eq!(c.state, State::Established);
        // Retransmission of old data is fine.
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1001, 5001, ACK, 100), Nanos(6), &to), TcpOutcome::Ok);
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1101, 5001, ACK | FIN, 0), Nanos(7), &to), TcpOutcome::Ok);
        assert_eq!(c.state, State::FinWait);
        assert_eq!(
            track_tcp(&mut c, Dir::Reply, &seg(5001, 1102, ACK | FIN, 0), Nanos(8), &to),
            TcpOutcome::Ended(crate::event::EndReason::Fin)
        );
        assert_eq!(c.state, State::TimeWait);
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1102, 5002, ACK, 0), Nanos(9), &to), TcpOutcome::Ok);
    }

    #[test]
    fn rst_in_window_ends() {
        use tcp_flags::*;
        let o = tuple("192.0.2.10", 40000, "198.51.100.20", 80);
        let mut c = conn(o, o.reversed());
        let to = timeouts();
        track_tcp(&mut c, Dir::Orig, &seg(1000, 0, SYN, 0), Nanos(1), &to);
        assert_eq!(
            track_tcp(&mut c, Dir::Reply, &seg(0, 1001, RST | ACK, 0), Nanos(2), &to),
            TcpOutcome::Ended(crate::event::EndReason::Rst)
        );
        assert_eq!(c.state, State::Close);
    }

    #[test]
    fn wscale_option() {
        assert_eq!(tcp_wscale(&[2, 4, 5, 0xb4, 1, 3, 3, 7]), Some(7));
        assert_eq!(tcp_wscale(&[1, 1, 0, 3, 3, 7]), None);
        assert_eq!(tcp_wscale(&[3, 3]), None);
        assert_eq!(tcp_wscale(&[8, 0]), None);
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(seq_lt(u32::MAX - 5, 3));
        assert!(!seq_lt(3, u32::MAX - 5));
        assert!(seq_le(7, 7));
    }
}
