//! The whole engine fed a sequence of frames decoded from the fuzzer's bytes.
//!
//! The input is a small program. The first two bytes pick configuration
//! variations (strict mode, on_violation, small limits, max_pinholes, port
//! mode, active/passive/mismatch policies, denied commands); then each
//! operation byte picks one of:
//!
//! - a client or server segment of one of five FTP control flows (two
//!   masqueraded IPv4 clients, one masqueraded IPv6 client, two outside
//!   clients of the published server), built valid, with the harness tracking
//!   each end's sequence numbers and what each end has received so that
//!   segments are mostly in window; the flags, a sequence offset and a payload
//!   drawn from FTP lines (PORT/EPRT with the right or a wrong address,
//!   PASV/EPSV/227/229, AUTH/234, multi-line replies, partial lines, overlong
//!   lines, raw bytes) come from the input;
//! - a data-connection SYN to an open pinhole, from the announced peer or a
//!   stranger;
//! - a raw frame (any bytes, any ingress including an unknown one);
//! - a retransmission of an earlier frame, as sent or with a few bytes flipped;
//! - a clock jump and `tick`.
//!
//! After every frame it asserts: `process` accounted for it exactly once
//! (stats), a forwarded or generated frame's checksums verify whenever the
//! input's did (etherparse), the connection table stays within
//! `max_connections` and the per-source limit, each FTP session holds at most
//! `max_pinholes` pinholes and a bounded number of buffered bytes, the shared
//! pinhole map holds no more than the sessions may, a stranger never uses or
//! removes a pinhole, an admitted data connection goes exactly to the
//! pinhole's target, and every event serialises to JSON.

use std::net::IpAddr;
use std::time::Duration;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use ftpgate::config::*;
use ftpgate::engine::{Engine, Sink, Verdict};
use ftpgate::event::{Event, EventKind};
use ftpgate::ftp::alg::MAX_LINE;
use ftpgate::time::Nanos;

use crate::check::{assert_valid, check, Checked};
use crate::lab::{self, flags, ip, CLIENT_MAC, GW_IN_MAC, GW_OUT_MAC, INSIDE, OUTSIDE, SERVER_MAC};
use crate::Input;

#[derive(Default)]
struct Collect {
    frames: Vec<(usize, Vec<u8>)>,
    /// (address, port) of each pinhole_use event.
    uses: Vec<(IpAddr, u16)>,
    events: u64,
}

impl Sink for Collect {
    fn transmit(&mut self, iface: usize, frame: &[u8]) {
        self.frames.push((iface, frame.to_vec()));
    }
    fn event(&mut self, ev: Event) {
        self.events += 1;
        let json = ev.to_json();
        assert!(!json.contains("internal_error"), "event does not serialise: {ev:?}");
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&json) {
            panic!("event is not valid JSON ({e}): {json}");
        }
        if let EventKind::PinholeUse { address, port, .. } = ev.kind {
            self.uses.push((address, port));
        }
    }
}

/// One FTP control connection as both of its ends see it.
struct Flow {
    client: (IpAddr, u16),
    /// The server as the client addresses it.
    server_pub: (IpAddr, u16),
    /// The server's real address.
    server: (IpAddr, u16),
    client_side: usize,
    server_side: usize,
    /// The client as the server sees it (learned from the forwarded SYN).
    client_seen: (IpAddr, u16),
    c_isn: u32,
    c_next: u32,
    s_isn: u32,
    s_next: u32,
    /// Next byte each receiver expects, in its own view (acks it sends).
    srv_rcv: u32,
    cli_rcv: u32,
}

impl Flow {
    fn new(
        client: (&str, u16),
        server_pub: (&str, u16),
        server: (&str, u16),
        client_side: usize,
        c_isn: u32,
        s_isn: u32,
    ) -> Flow {
        let c = (ip(client.0), client.1);
        Flow {
            client: c,
            server_pub: (ip(server_pub.0), server_pub.1),
            server: (ip(server.0), server.1),
            client_side,
            server_side: 1 - client_side,
            client_seen: c,
            c_isn,
            c_next: c_isn,
            s_isn,
            s_next: s_isn,
            srv_rcv: 0,
            cli_rcv: 0,
        }
    }
}

fn flows() -> Vec<Flow> {
    vec![
        Flow::new(
            ("192.0.2.10", 40000),
            ("198.51.100.20", 21),
            ("198.51.100.20", 21),
            INSIDE,
            0xffff_f000,
            0x1000_0000,
        ),
        Flow::new(
            ("192.0.2.11", 40001),
            ("198.51.100.21", 21),
            ("198.51.100.21", 21),
            INSIDE,
            0x7fff_fff0,
            0xffff_ff00,
        ),
        Flow::new(("2001:db8:1::10", 40002), ("2001:db8:2::20", 21), ("2001:db8:2::20", 21), INSIDE, 1000, 2000),
        Flow::new(("203.0.113.5", 50000), ("198.51.100.1", 21), ("192.0.2.20", 21), OUTSIDE, 0x8000_0000, 5),
        Flow::new(("203.0.113.6", 50001), ("198.51.100.1", 21), ("192.0.2.20", 21), OUTSIDE, 0, 0xffff_fffe),
    ]
}

fn config(inp: &mut Input<'_>) -> Config {
    let mut c = lab::config(true);
    let (a, b) = (inp.u8(), inp.u8());
    c.ftp.strict = a & 1 != 0;
    c.ftp.on_violation = if a & 2 != 0 { OnViolation::Drop } else { OnViolation::Reset };
    if a & 4 != 0 {
        c.limits = Limits { max_connections: 8, max_connections_per_source: 4 };
    }
    c.ftp.max_pinholes = if a & 8 != 0 { 1 } else { 4 };
    if a & 16 != 0 {
        c.nat.ports = PortMode::Preserve;
    }
    if a & 32 != 0 {
        c.ftp.pinhole_timeout = Duration::from_millis(50);
    }
    if a & 64 != 0 {
        c.timeouts.tcp_transitory = Duration::from_secs(1);
        c.timeouts.tcp_established = Duration::from_secs(5);
    }
    if b & 1 != 0 {
        c.ftp.active = Action::Deny;
    }
    if b & 2 != 0 {
        c.ftp.passive = Action::Deny;
    }
    c.ftp.pasv_mismatch = [PasvMismatch::Fix, PasvMismatch::Deny, PasvMismatch::Allow][usize::from(b >> 2) % 3];
    if b & 16 != 0 {
        c.ftp.zero_address = ZeroAddress::Deny;
    }
    if b & 32 != 0 {
        c.ftp.privileged_data_ports = Action::Allow;
    }
    if b & 64 != 0 {
        c.ftp.third_party = Action::Allow;
    }
    if b & 128 != 0 {
        c.ftp.deny_commands = vec!["RETR".into(), "STOR".into(), "SITE".into()];
    }
    c
}

/// One FTP line (with its terminator) about `f`.
fn line(inp: &mut Input<'_>, f: &Flow) -> Vec<u8> {
    let sel = inp.u8();
    let (p1, p2) = (inp.u8(), inp.u8());
    let v4 = |a: IpAddr| match a {
        IpAddr::V4(v) => v.octets(),
        IpAddr::V6(_) => [192, 0, 2, 10],
    };
    match sel % 20 {
        0 => {
            let [a, b, c, d] = v4(f.client.0);
            format!("PORT {a},{b},{c},{d},{p1},{p2}\r\n").into_bytes()
        }
        1 => {
            let [a, b, c, d] = [inp.u8(), inp.u8(), inp.u8(), inp.u8()];
            format!("PORT {a},{b},{c},{d},{p1},{p2}\r\n").into_bytes()
        }
        2 => {
            let af = if f.client.0.is_ipv4() { 1 } else { 2 };
            let port = u16::from_be_bytes([p1, p2]);
            format!("EPRT |{af}|{}|{port}|\r\n", f.client.0).into_bytes()
        }
        3 => format!(
            "EPRT |{}|{}|{}|\r\n",
            p1 % 4,
            ["0.0.0.0", "::", "203.0.113.9", "192.0.2.10"][usize::from(p2 % 4)],
            u32::from(p2) * 300
        )
        .into_bytes(),
        4 => b"PASV\r\n".to_vec(),
        5 => b"EPSV\r\n".to_vec(),
        6 => [&b"EPSV ALL\r\n"[..], b"LPSV\r\n", b"LPRT 4,4,192,0,2,10,2,4,1\r\n", b"EPSV 2\r\n"][usize::from(p1 % 4)]
            .to_vec(),
        7 => [
            &b"AUTH TLS\r\n"[..],
            b"USER anonymous\r\n",
            b"LIST\r\n",
            b"RETR f\r\n",
            b"QUIT\r\n",
            b"NOOP\r\n",
            b"SITE x\r\n",
            b"port 1,2\r\n",
        ][usize::from(p1 % 8)]
        .to_vec(),
        8 => {
            let [a, b, c, d] = v4(f.server.0);
            format!("227 Entering Passive Mode ({a},{b},{c},{d},{p1},{p2}).\r\n").into_bytes()
        }
        9 => {
            let [a, b, c, d] = [inp.u8(), inp.u8(), inp.u8(), inp.u8()];
            format!("227 =({a},{b},{c},{d},{p1},{p2})\r\n").into_bytes()
        }
        10 => format!("229 Entering Extended Passive Mode (|||{}|)\r\n", u16::from_be_bytes([p1, p2])).into_bytes(),
        11 => [
            &b"200 PORT command successful\r\n"[..],
            b"150 Opening data connection\r\n",
            b"226 Transfer complete\r\n",
            b"234 AUTH TLS ok\r\n",
            b"220 ready\r\n",
            b"500 unknown\r\n",
            b"425 Cannot open\r\n",
            b"230 ok\r\n",
        ][usize::from(p1 % 8)]
        .to_vec(),
        12 => format!("{}-multi\r\n", [227u16, 229, 230, 211][usize::from(p1 % 4)]).into_bytes(),
        13 => b" 227 Entering Passive Mode (192,0,2,10,4,1)\r\n".to_vec(),
        14 => {
            let n = usize::from(u16::from_be_bytes([p1, p2])) % (MAX_LINE + 600);
            let mut l = b"PORT ".to_vec();
            l.resize(5 + n, b'9');
            l.extend_from_slice(b"\r\n");
            l
        }
        15 => [&b"PORT 192,0,2,10,4,1\n"[..], b"NO\0OP\r\n", b"US\xffER x\r\n", b"PA\rSV\r\n", b"\r\n", b"\n"]
            [usize::from(p1 % 6)]
        .to_vec(),
        _ => {
            let n = usize::from(p1 % 48);
            let mut l = inp.bytes(n).to_vec();
            if p2 & 1 == 0 {
                l.extend_from_slice(b"\r\n");
            }
            l
        }
    }
}

/// A segment's payload: empty, one line, a cut line, two lines, or raw bytes.
fn payload(inp: &mut Input<'_>, f: &Flow) -> Vec<u8> {
    let sel = inp.u8();
    match sel % 8 {
        0 => Vec::new(),
        1..=3 => line(inp, f),
        4 => {
            // A line cut short: the rest may or may not follow.
            let l = line(inp, f);
            let cut = usize::from(inp.u8()) % (l.len() + 1);
            l[..cut].to_vec()
        }
        5 => {
            let mut l = line(inp, f);
            l.extend(line(inp, f));
            l
        }
        6 => {
            // The tail of a line (what follows a cut).
            let l = line(inp, f);
            let cut = usize::from(inp.u8()) % (l.len() + 1);
            l[cut..].to_vec()
        }
        _ => {
            let n = usize::from(inp.u8());
            inp.bytes(n).to_vec()
        }
    }
}

fn tcp_flags(inp: &mut Input<'_>) -> u8 {
    match inp.u8() % 10 {
        0 => flags::SYN,
        1..=4 => flags::PSH | flags::ACK,
        5 => flags::ACK,
        6 => flags::FIN | flags::ACK,
        7 => flags::RST | flags::ACK,
        8 => flags::RST,
        _ => inp.u8() & 0x1f,
    }
}

fn seq_offset(inp: &mut Input<'_>) -> u32 {
    let d = inp.u8();
    if d < 200 {
        0
    } else {
        ((i32::from(d) - 228) * 3) as u32
    }
}

/// The TCP view of a frame the engine put out.
struct Out {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    len: u32,
    syn: bool,
    fin: bool,
}

fn tcp_out(frame: &[u8]) -> Option<Out> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (s, d) = match p.net.as_ref()? {
        NetSlice::Ipv4(v) => (IpAddr::V4(v.header().source_addr()), IpAddr::V4(v.header().destination_addr())),
        NetSlice::Ipv6(v) => (IpAddr::V6(v.header().source_addr()), IpAddr::V6(v.header().destination_addr())),
        _ => return None,
    };
    match p.transport.as_ref()? {
        TransportSlice::Tcp(t) => Some(Out {
            src: (s, t.source_port()),
            dst: (d, t.destination_port()),
            seq: t.sequence_number(),
            len: t.payload().len() as u32,
            syn: t.syn(),
            fin: t.fin(),
        }),
        _ => None,
    }
}

fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

struct Harness {
    e: Engine,
    sink: Collect,
    flows: Vec<Flow>,
    now: u64,
    packet: u64,
    history: Vec<(usize, Vec<u8>)>,
    max_conns: usize,
    per_source: u32,
    max_pinholes: usize,
}

impl Harness {
    /// Process one frame and check every invariant; returns the verdict and the output buffer.
    fn feed(&mut self, ingress: usize, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
        let input = check(&frame);
        let before = self.e.stats().clone();
        let gen_before = self.sink.frames.len();
        let mut buf = frame;
        self.packet += 1;
        let v = self.e.process(Nanos(self.now), self.packet, ingress, &mut buf, &mut self.sink);
        let s = self.e.stats();

        // Exactly one verdict, counted once.
        assert_eq!(s.frames_in, before.frames_in + 1, "frames_in");
        let done = |s: &ftpgate::engine::Stats| s.forwarded + s.consumed + s.dropped_total();
        assert_eq!(done(s), done(&before) + 1, "one verdict per frame: {v:?}");
        assert_eq!(s.generated as usize, self.sink.frames.len(), "generated frames counted");

        // Checksums: whatever the gateway puts out verifies when the input did.
        let input_ok = input == Checked::Valid;
        if let Verdict::Forward(i) = v {
            assert!(i < 2, "forwarded to interface {i}");
            if input_ok {
                assert_valid(&buf, "forwarded frame");
            }
        }
        if !matches!(input, Checked::Bad(_) | Checked::Unparsable(_)) {
            for (i, (iface, f)) in self.sink.frames[gen_before..].iter().enumerate() {
                assert!(*iface < 2, "generated frame {i} for interface {iface}");
                assert_valid(f, "generated frame");
            }
        }
        self.limits();
        (v, buf)
    }

    fn limits(&self) {
        let t = self.e.table();
        assert!(t.len() <= self.max_conns, "table {} > max_connections {}", t.len(), self.max_conns);
        for f in &self.flows {
            let n = t.count_for_source(f.client.0);
            assert!(n <= self.per_source, "{} has {n} connections > {}", f.client.0, self.per_source);
        }
        let mut sessions = 0;
        for s in self.e.ftp_sessions() {
            sessions += 1;
            assert!(s.pinholes.len() <= self.max_pinholes, "session holds {} pinholes", s.pinholes.len());
            // Held partial line + the reassembler's copy, per direction, plus a rewrite's growth.
            let b = s.buffered_bytes();
            assert!(b <= 4 * (MAX_LINE + 2), "session buffers {b} bytes");
        }
        let pins = self.e.pinholes().len();
        assert!(pins <= sessions * self.max_pinholes, "{pins} pinholes for {sessions} sessions");
    }

    fn client_seg(&mut self, inp: &mut Input<'_>, fi: usize) -> (usize, Vec<u8>, u8, u32) {
        let fl = tcp_flags(inp);
        let off = seq_offset(inp);
        let f = &self.flows[fi];
        let p = if fl & flags::SYN != 0 { Vec::new() } else { payload(inp, f) };
        let seq = if fl & flags::SYN != 0 { f.c_isn } else { f.c_next.wrapping_add(off) };
        let mac = if f.client_side == INSIDE { GW_IN_MAC } else { GW_OUT_MAC };
        let frame = lab::tcp(CLIENT_MAC, mac, f.client, f.server_pub, seq, f.cli_rcv, fl, &p);
        (f.client_side, frame, fl, seq.wrapping_add(p.len() as u32))
    }

    fn server_seg(&mut self, inp: &mut Input<'_>, fi: usize) -> (usize, Vec<u8>, u8, u32) {
        let mut fl = tcp_flags(inp);
        if fl == flags::SYN {
            fl |= flags::ACK;
        }
        let off = seq_offset(inp);
        let f = &self.flows[fi];
        let p = if fl & flags::SYN != 0 { Vec::new() } else { payload(inp, f) };
        let seq = if fl & flags::SYN != 0 { f.s_isn } else { f.s_next.wrapping_add(off) };
        let mac = if f.server_side == INSIDE { GW_IN_MAC } else { GW_OUT_MAC };
        let frame = lab::tcp(SERVER_MAC, mac, f.server, f.client_seen, seq, f.srv_rcv, fl, &p);
        (f.server_side, frame, fl, seq.wrapping_add(p.len() as u32))
    }

    fn op(&mut self, inp: &mut Input<'_>) {
        let op = inp.u8();
        self.now += u64::from(op >> 4) * 1_000_000;
        match op % 8 {
            0 | 1 => {
                let fi = usize::from(inp.u8()) % self.flows.len();
                let (side, frame, fl, end) = self.client_seg(inp, fi);
                self.remember(side, &frame);
                let (v, out) = self.feed(side, frame);
                let f = &mut self.flows[fi];
                if !matches!(v, Verdict::Drop(_)) {
                    f.c_next = if fl & flags::SYN != 0 { f.c_isn.wrapping_add(1) } else { end };
                    if fl & flags::FIN != 0 {
                        f.c_next = f.c_next.wrapping_add(1);
                    }
                }
                if let (Verdict::Forward(_), Some(o)) = (v, tcp_out(&out)) {
                    if o.syn {
                        f.client_seen = o.src;
                    }
                    let end = o.seq.wrapping_add(o.len).wrapping_add(u32::from(o.syn) + u32::from(o.fin));
                    if o.syn || seq_ge(end, f.srv_rcv) {
                        f.srv_rcv = end;
                    }
                }
            }
            2 | 3 => {
                let fi = usize::from(inp.u8()) % self.flows.len();
                let (side, frame, fl, end) = self.server_seg(inp, fi);
                self.remember(side, &frame);
                let (v, out) = self.feed(side, frame);
                let f = &mut self.flows[fi];
                if !matches!(v, Verdict::Drop(_)) {
                    f.s_next = if fl & flags::SYN != 0 { f.s_isn.wrapping_add(1) } else { end };
                    if fl & flags::FIN != 0 {
                        f.s_next = f.s_next.wrapping_add(1);
                    }
                }
                if let (Verdict::Forward(_), Some(o)) = (v, tcp_out(&out)) {
                    let end = o.seq.wrapping_add(o.len).wrapping_add(u32::from(o.syn) + u32::from(o.fin));
                    if o.syn || seq_ge(end, f.cli_rcv) {
                        f.cli_rcv = end;
                    }
                }
            }
            4 => self.data_syn(inp),
            5 => {
                let ingress = usize::from(inp.u8() % 3);
                let n = usize::from(inp.u16()) % 1600;
                let frame = inp.bytes(n).to_vec();
                self.feed(ingress, frame);
            }
            6 => {
                if self.history.is_empty() {
                    return;
                }
                let (side, mut frame) = self.history[usize::from(inp.u8()) % self.history.len()].clone();
                for _ in 0..inp.u8() % 4 {
                    let at = usize::from(inp.u16()) % frame.len().max(1);
                    let x = inp.u8();
                    if let Some(b) = frame.get_mut(at) {
                        *b ^= x;
                    }
                }
                self.feed(side, frame);
            }
            _ => {
                self.now += u64::from(inp.u16()) * 250_000_000;
                self.e.tick(Nanos(self.now), &mut self.sink);
                assert_eq!(self.e.stats().generated as usize, self.sink.frames.len(), "generated frames counted");
                for (iface, f) in &self.sink.frames {
                    assert!(*iface < 2);
                    let _ = f;
                }
                self.limits();
            }
        }
    }

    fn remember(&mut self, side: usize, frame: &[u8]) {
        if self.history.len() >= 32 {
            self.history.remove(0);
        }
        self.history.push((side, frame.to_vec()));
    }

    /// A SYN to a pinhole: from the announced peer it may pass (and then
    /// goes exactly where the pinhole says); from a stranger it never uses
    /// or removes the pinhole.
    fn data_syn(&mut self, inp: &mut Input<'_>) {
        let mut pins: Vec<_> = self.e.pinholes().iter().map(|r| (*r.key(), r.value().clone())).collect();
        pins.sort_by_key(|(k, _)| *k);
        // Fixed-size parameters, so a program decodes the same with or without pinholes.
        let sel = inp.u8();
        let b = inp.u8();
        let sport = if b & 1 != 0 { 20 } else { 30000 + u16::from(b >> 1) };
        let stranger = inp.bool();
        let seq = inp.u32();
        let Some((key, pin)) = (!pins.is_empty()).then(|| pins[usize::from(sel) % pins.len()].clone()) else {
            // No pinhole: a SYN to a public port from a server.
            let port = seq as u16;
            let f = lab::tcp(
                SERVER_MAC,
                GW_OUT_MAC,
                (ip("198.51.100.20"), sport),
                (ip("198.51.100.1"), port),
                1,
                0,
                flags::SYN,
                b"",
            );
            self.feed(OUTSIDE, f);
            return;
        };
        let src = if !stranger {
            pin.peer
        } else {
            match (pin.peer, pin.ingress) {
                (IpAddr::V4(_), INSIDE) => ip("192.0.2.200"),
                (IpAddr::V4(_), _) => ip("203.0.113.200"),
                (IpAddr::V6(_), INSIDE) => ip("2001:db8:1::200"),
                (IpAddr::V6(_), _) => ip("2001:db8:2::200"),
            }
        };
        let mac = if pin.ingress == INSIDE { GW_IN_MAC } else { GW_OUT_MAC };
        let frame = lab::tcp(SERVER_MAC, mac, (src, sport), key, seq, 0, flags::SYN, b"");
        if frame.is_empty() {
            return;
        }
        let uses = self.sink.uses.len();
        let (v, out) = self.feed(pin.ingress, frame);
        let used = self.sink.uses.len() > uses;
        if stranger {
            assert!(!used, "a stranger {src} used the pinhole {key:?} announced for {}", pin.peer);
            assert!(self.e.pinholes().contains_key(&key), "a stranger {src} removed the pinhole {key:?}");
        } else if used {
            assert_eq!(self.sink.uses[uses], key, "the pinhole used is the one addressed");
            if let (Verdict::Forward(_), Some(o)) = (v, tcp_out(&out)) {
                assert_eq!(o.dst, pin.target, "data connection delivered to the pinhole's target");
                if let Some(snat) = pin.snat {
                    assert_eq!(o.src.0, snat, "data connection leaves with the control connection's address");
                }
            }
        }
    }
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let cfg = config(&mut inp);
    let (max_conns, per_source, max_pinholes) =
        (cfg.limits.max_connections as usize, cfg.limits.max_connections_per_source, cfg.ftp.max_pinholes as usize);
    let mut h = Harness {
        e: Engine::new(cfg, 7),
        sink: Collect::default(),
        flows: flows(),
        now: 1_000_000_000,
        packet: 0,
        history: Vec::new(),
        max_conns,
        per_source,
        max_pinholes,
    };
    // Bounded work per input, whatever its length.
    let mut ops = 0;
    while !inp.is_empty() && ops < 4096 {
        h.op(&mut inp);
        ops += 1;
        if h.sink.frames.len() > 1 << 16 {
            h.sink.frames.clear();
            h.sink.frames.shrink_to_fit();
            // Keep the counter check meaningful after clearing.
            h.sink.frames.reserve(0);
            return;
        }
    }
}
