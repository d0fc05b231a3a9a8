//! Limits under attack. Each test floods one resource and asserts that
//! memory stays bounded (connection table entries and heap, pinholes, the
//! ALG's held bytes and rewrite history) while a legitimate FTP session
//! keeps working at the same time.
//!
//! Sizes are chosen to run in well under 5 s in a debug build; the
//! `#[ignore]`d `*_large` variants repeat the floods at sizes for release
//! builds (`cargo test --release --test floods -- --ignored`).

mod common;
use std::net::IpAddr;

use common::*;
use ftpgate::config::{Config, PortMode};
use ftpgate::engine::{Engine, Sink, Verdict};
use ftpgate::event::{DropReason, Event};
use ftpgate::ftp::alg::MAX_LINE;
use ftpgate::time::Nanos;

/// Another FTP control connection through the same engine as an `FtpSim`,
/// tracking both ends' sequence numbers (less checking than `FtpSim`; the
/// legitimate session is the `FtpSim` one).
struct Ctl {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    client_seen: (IpAddr, u16),
    side: (usize, usize),
    c_seq: u32,
    s_seq: u32,
    srv_rcv: u32,
    cli_rcv: u32,
}

fn s(a: IpAddr) -> &'static str {
    Box::leak(a.to_string().into_boxed_str())
}

impl Ctl {
    /// A masqueraded client `client` → `server`:21, handshake done.
    fn open(sim: &mut FtpSim, client: (&str, u16), server: &str) -> Ctl {
        let mut c = Ctl {
            client: (ip(client.0), client.1),
            server: (ip(server), 21),
            client_seen: (ip(client.0), client.1),
            side: (INSIDE, OUTSIDE),
            c_seq: 1000,
            s_seq: 9000,
            srv_rcv: 0,
            cli_rcv: 0,
        };
        let (v, out) = c.raw(sim, true, "S", b"");
        assert_eq!(v, Verdict::Forward(OUTSIDE), "attacker SYN passes");
        let o = decode_verified(&out);
        c.client_seen = (o.src, o.sport);
        c.c_seq += 1;
        c.srv_rcv = c.c_seq;
        let (v, _) = c.raw(sim, false, "SA", b"");
        assert_eq!(v, Verdict::Forward(INSIDE));
        c.s_seq += 1;
        c.cli_rcv = c.s_seq;
        c.raw(sim, true, "A", b"");
        c
    }

    fn raw(&mut self, sim: &mut FtpSim, from_client: bool, flags: &str, payload: &[u8]) -> (Verdict, Vec<u8>) {
        sim.t += 1;
        let (src, dst, seq, ack, mac, side) = if from_client {
            (self.client, self.server, self.c_seq, self.cli_rcv, GW_IN_MAC, self.side.0)
        } else {
            (self.server, self.client_seen, self.s_seq, self.srv_rcv, GW_OUT_MAC, self.side.1)
        };
        let f = tcp(CLIENT_MAC, mac, Tcp { src: (s(src.0), src.1), dst: (s(dst.0), dst.1), seq, ack, flags, payload });
        feed(&mut sim.e, &mut sim.s, sim.t, side, f)
    }

    /// Send `bytes` from the client; the server acknowledges what it got.
    fn client(&mut self, sim: &mut FtpSim, bytes: &[u8]) -> Verdict {
        let (v, out) = self.raw(sim, true, "PA", bytes);
        if !matches!(v, Verdict::Drop(_)) {
            self.c_seq = self.c_seq.wrapping_add(bytes.len() as u32);
        }
        if let Verdict::Forward(_) = v {
            let o = decode_verified(&out);
            self.srv_rcv = o.seq.wrapping_add(o.payload.len() as u32);
        }
        v
    }

    fn server(&mut self, sim: &mut FtpSim, bytes: &[u8]) -> Verdict {
        let (v, out) = self.raw(sim, false, "PA", bytes);
        if !matches!(v, Verdict::Drop(_)) {
            self.s_seq = self.s_seq.wrapping_add(bytes.len() as u32);
        }
        if let Verdict::Forward(_) = v {
            let o = decode_verified(&out);
            self.cli_rcv = o.seq.wrapping_add(o.payload.len() as u32);
        }
        v
    }
}

/// The legitimate session still works: PASV → 227 rewritten → the client's
/// data connection is admitted through the pinhole.
fn legit_passive_works(sim: &mut FtpSim, port: u16) {
    let (v, _) = sim.client(b"PASV\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE), "legitimate PASV");
    let [p1, p2] = port.to_be_bytes();
    let line = format!("227 Entering Passive Mode (198,51,100,20,{p1},{p2}).\r\n");
    let (v, _) = sim.server(line.as_bytes());
    assert_eq!(v, Verdict::Forward(INSIDE), "legitimate 227");
    sim.t += 1;
    let syn = tcp(
        CLIENT_MAC,
        GW_IN_MAC,
        Tcp {
            src: ("192.0.2.10", 41000 + port % 1000),
            dst: ("198.51.100.20", port),
            seq: 5,
            ack: 0,
            flags: "S",
            payload: b"",
        },
    );
    let (v, out) = feed(&mut sim.e, &mut sim.s, sim.t, INSIDE, syn);
    assert_eq!(v, Verdict::Forward(OUTSIDE), "legitimate data connection");
    decode_verified(&out);
}

fn legit_session(sim: &FtpSim) -> &ftpgate::ftp::alg::FtpSession {
    let client = std::net::SocketAddr::new(ip(sim.client.0), sim.client.1);
    sim.e.ftp_sessions().find(|s| s.session.client == client).expect("the legitimate session exists")
}

fn max_held(e: &Engine) -> usize {
    e.ftp_sessions().map(|s| s.buffered_bytes()).max().unwrap_or(0)
}

fn port_flood(rounds: u32) {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let mut bad = Ctl::open(&mut sim, ("192.0.2.66", 45000), "198.51.100.20");
    let max_pinholes = sim.e.config().ftp.max_pinholes as usize;
    let mut heap_after_warmup = 0;
    for i in 0..rounds {
        let port = 1024 + (i % 60000) as u16;
        let [p1, p2] = port.to_be_bytes();
        let v = bad.client(&mut sim, format!("PORT 192,0,2,66,{p1},{p2}\r\n").as_bytes());
        assert_eq!(v, Verdict::Forward(OUTSIDE), "PORT {i}");
        let v = bad.server(&mut sim, b"200 PORT command successful\r\n");
        assert_eq!(v, Verdict::Forward(INSIDE));
        assert!(sim.e.pinholes().len() <= 2 * max_pinholes, "pinholes {}", sim.e.pinholes().len());
        for sess in sim.e.ftp_sessions() {
            assert!(sess.pinholes.len() <= max_pinholes);
            // MAX_REWRITES (64) remembered, plus the one not yet acknowledged.
            assert!(sess.rewrite_history() <= 66, "rewrite history {} after {i} PORTs", sess.rewrite_history());
            assert!(sess.pending_replies() <= 1);
            assert_eq!(sess.buffered_bytes(), 0, "nothing held between complete lines");
        }
        if i == 200 {
            heap_after_warmup = sim.e.table().heap_bytes();
        }
        if i % 500 == 250 {
            legit_passive_works(&mut sim, 20000 + (i / 500) as u16);
        }
    }
    // The legitimate data connections made along the way linger closed for a
    // while (TIME_WAIT) and take a few slots; the flood itself adds nothing.
    let heap = sim.e.table().heap_bytes();
    assert!(heap <= heap_after_warmup + 16 * 1024, "the flood does not grow the table: {heap} > {heap_after_warmup}");
    assert!(sim.e.table().len() < 20, "table {}", sim.e.table().len());
    // The legitimate session's own active mode still works.
    let (_, seen) = sim.client(b"PORT 192,0,2,10,156,64\r\n");
    assert!(seen.expect("legitimate PORT forwarded").payload.starts_with(b"PORT 198,51,100,1,"));
    assert!(legit_session(&sim).pinholes.len() <= max_pinholes);
}

#[test]
fn port_flood_on_one_control_connection() {
    port_flood(3000);
}

#[test]
#[ignore = "large: run with --release -- --ignored"]
fn port_flood_on_one_control_connection_large() {
    port_flood(200_000);
}

fn many_controls(n: u16, ports_each: u16) {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let max_pinholes = sim.e.config().ftp.max_pinholes as usize;
    let mut bad: Vec<Ctl> = (0..n).map(|i| Ctl::open(&mut sim, ("192.0.2.66", 2000 + i), "198.51.100.20")).collect();
    for (k, c) in bad.iter_mut().enumerate() {
        for j in 0..ports_each {
            let [p1, p2] = (5000 + j).to_be_bytes();
            assert_eq!(
                c.client(&mut sim, format!("PORT 192,0,2,66,{p1},{p2}\r\n").as_bytes()),
                Verdict::Forward(OUTSIDE)
            );
            assert_eq!(c.server(&mut sim, b"200 ok\r\n"), Verdict::Forward(INSIDE));
        }
        let sessions = sim.e.ftp_sessions().count();
        assert!(sim.e.pinholes().len() <= sessions * max_pinholes, "after {k}: {} pinholes", sim.e.pinholes().len());
    }
    assert_eq!(sim.e.ftp_sessions().count(), usize::from(n) + 1);
    assert_eq!(sim.e.pinholes().len(), usize::from(n) * max_pinholes.min(usize::from(ports_each)));
    legit_passive_works(&mut sim, 30000);
    // Closing the attacker's control connections closes their pinholes.
    for c in bad.iter_mut() {
        let (v, _) = c.raw(&mut sim, true, "RA", b"");
        assert_eq!(v, Verdict::Forward(OUTSIDE));
    }
    assert!(
        sim.e.pinholes().len() <= 1,
        "only the legitimate session's pinhole may be left: {}",
        sim.e.pinholes().len()
    );
    assert!(max_held(&sim.e) == 0);
}

#[test]
fn many_control_connections_each_opening_pinholes() {
    many_controls(150, 8);
}

#[test]
#[ignore = "large: run with --release -- --ignored"]
fn many_control_connections_each_opening_pinholes_large() {
    many_controls(10_000, 8);
}

/// A sink that keeps only counts (floods make millions of events).
#[derive(Default)]
struct Count {
    frames: usize,
    events: usize,
}
impl Sink for Count {
    fn transmit(&mut self, _: usize, frame: &[u8]) {
        decode_verified(frame);
        self.frames += 1;
    }
    fn event(&mut self, _: Event) {
        self.events += 1;
    }
}

fn syn_flood(max_connections: u32, extra: u32) {
    let mut cfg = published_config();
    cfg.limits.max_connections = max_connections;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let mut count = Count::default();
    // Spoofed sources from the outside to the published FTP server: each SYN makes state.
    let mut limited = 0;
    let mut heap_full = 0;
    for i in 0..(max_connections + extra) {
        // Distinct tuples, at most 10000 per source (under the per-source limit).
        let src = std::net::Ipv4Addr::from(0x6440_0000u32 + i / 10_000).to_string();
        let sport = 1024 + (i % 10_000) as u16;
        let f = tcp(
            CLIENT_MAC,
            GW_OUT_MAC,
            Tcp { src: (s(ip(&src)), sport), dst: ("198.51.100.1", 21), seq: i, ack: 0, flags: "S", payload: b"" },
        );
        let mut f = f;
        sim.t += 1;
        let v = sim.e.process(Nanos(sim.t * 1_000_000), sim.t, OUTSIDE, &mut f, &mut count);
        match v {
            Verdict::Forward(INSIDE) => {}
            Verdict::Drop(DropReason::Limit) => limited += 1,
            other => panic!("SYN {i}: {other:?}"),
        }
        assert!(sim.e.table().len() <= max_connections as usize);
        if sim.e.table().len() == max_connections as usize && heap_full == 0 {
            heap_full = sim.e.table().heap_bytes();
        }
        if i % 997 == 0 {
            // The established session keeps flowing through the flood.
            let (v, _) = sim.client(b"NOOP\r\n");
            assert_eq!(v, Verdict::Forward(OUTSIDE));
            let (v, _) = sim.server(b"200 NOOP ok\r\n");
            assert_eq!(v, Verdict::Forward(INSIDE));
        }
    }
    let filled_at = max_connections - 1; // the legitimate control connection holds one entry
    assert_eq!(limited, extra + max_connections - filled_at, "every SYN beyond the limit is dropped with `limit`");
    assert_eq!(sim.e.table().heap_bytes(), heap_full, "no growth once full");
    // A new legitimate connection is refused while the table is full ...
    let (v, _) = from_client(
        &mut sim.e,
        &mut sim.s,
        sim.t + 1,
        Tcp { src: ("192.0.2.10", 41111), dst: ("198.51.100.20", 80), seq: 1, ack: 0, flags: "S", payload: b"" },
    );
    assert_eq!(v, Verdict::Drop(DropReason::Limit));
    // ... the established one is not ...
    let (v, _) = sim.client(b"LIST\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    // ... and once the half-open entries time out (tcp_transitory), new ones pass again.
    sim.t += 130_000;
    sim.e.tick(Nanos(sim.t * 1_000_000), &mut count);
    for _ in 0..16 {
        sim.e.tick(Nanos(sim.t * 1_000_000), &mut count);
    }
    assert!(sim.e.table().len() < 10, "flood expired: {}", sim.e.table().len());
    assert!(sim.e.ftp_sessions().count() <= 2, "their FTP sessions went with them");
    let (v, _) = sim.server(b"150 here it comes\r\n");
    assert_eq!(v, Verdict::Forward(INSIDE), "the established session outlived the flood");
    legit_passive_works(&mut sim, 40000);
}

#[test]
fn syn_flood_fills_the_connection_table() {
    syn_flood(3000, 500);
}

#[test]
#[ignore = "large: run with --release -- --ignored"]
fn syn_flood_fills_the_connection_table_large() {
    syn_flood(500_000, 50_000);
}

#[test]
fn slow_drip_port_line_one_byte_per_segment() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let line = b"PORT 192,0,2,10,156,64\r\n";
    for (i, b) in line.iter().enumerate() {
        let (v, seen) = sim.client(&[*b]);
        if i + 1 < line.len() {
            assert_eq!(v, Verdict::Consumed, "byte {i} held");
            assert!(seen.is_none());
            assert_eq!(legit_session(&sim).buffered_bytes(), 2 * (i + 1), "held bytes plus the reassembler's copy");
        } else {
            assert_eq!(v, Verdict::Forward(OUTSIDE));
        }
    }
    assert!(sim.server_got.starts_with(b"PORT 198,51,100,1,"), "the server got the rewritten line once");
    assert_eq!(sim.server_got.iter().filter(|&&b| b == b'\n').count(), 1);
    assert_eq!(legit_session(&sim).buffered_bytes(), 0);
    assert_eq!(sim.e.pinholes().len(), 1);
    // The server's acknowledgement maps back to everything the client sent.
    let (_, c) = sim.server(b"200 ok\r\n");
    assert_eq!(c.unwrap().ack, sim.c_seq);

    // A dripped line that never ends is cut off at MAX_LINE: a violation, not growth.
    let mut held_max = 0;
    let mut verdicts = Vec::new();
    sim.client(b"PORT ");
    for _ in 0..(MAX_LINE + 100) {
        let (v, _) = sim.client(b"9");
        held_max = held_max.max(max_held(&sim.e));
        verdicts.push(v);
        if !matches!(v, Verdict::Consumed) {
            break;
        }
    }
    assert_eq!(verdicts.last(), Some(&Verdict::Drop(DropReason::Malformed)), "overlong PORT line is a violation");
    assert!(held_max <= 2 * (MAX_LINE + 2), "held at most about a line: {held_max}");
    assert!(sim.s.of_kind("reset").len() == 1);
}

#[test]
fn overlong_lines_are_violations_without_growth() {
    for strict_drop in [false, true] {
        let mut cfg = lab_config(true);
        if strict_drop {
            cfg.ftp.on_violation = ftpgate::config::OnViolation::Drop;
        }
        let mut sim = FtpSim::masq(cfg);
        sim.greet();
        // An innocuous verb (not held), 1000 bytes per segment, no LF.
        let chunk = [b'A'; 1000];
        let mut last = Verdict::Consumed;
        let mut n = 0;
        while n < 20 {
            n += 1;
            let (v, _) = sim.client(&chunk);
            assert!(max_held(&sim.e) <= 2 * (MAX_LINE + 2));
            last = v;
            if matches!(v, Verdict::Drop(_)) {
                break;
            }
        }
        assert_eq!(last, Verdict::Drop(DropReason::Malformed), "overlong line: violation (drop={strict_drop})");
        assert!(n <= (MAX_LINE / 1000 + 2) as i32 as usize);
        // Everything after is dropped, holding nothing.
        for _ in 0..50 {
            let (v, _) = sim.client(&chunk);
            assert!(matches!(v, Verdict::Drop(_)));
            assert!(max_held(&sim.e) <= 2 * (MAX_LINE + 2));
        }
        // The server side too: an endless reply line on a fresh session.
        let mut sim = FtpSim::masq(lab_config(true));
        sim.greet();
        let mut last = Verdict::Consumed;
        for _ in 0..20 {
            let (v, _) = sim.server(&[b'2'; 1000]);
            last = v;
            if matches!(v, Verdict::Drop(_)) {
                break;
            }
        }
        assert_eq!(last, Verdict::Drop(DropReason::Malformed));
        assert!(max_held(&sim.e) <= 2 * (MAX_LINE + 2));
    }
}

#[test]
fn out_of_order_and_overlapping_segments() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let base = sim.c_seq;
    // The second half first: dropped, not buffered.
    let (v, _) = sim.raw_client("PA", base.wrapping_add(5), sim.client_rcv, b"192,0,2,10,156,64\r\n");
    assert_eq!(v, Verdict::Drop(DropReason::Invalid));
    assert_eq!(legit_session(&sim).buffered_bytes(), 0, "nothing held out of order");
    // The first half: held (it may be a PORT).
    let (v, _) = sim.raw_client("PA", base, sim.client_rcv, b"PORT ");
    assert_eq!(v, Verdict::Consumed);
    // An overlapping segment with conflicting content for the held bytes and
    // the rest of the line: the held (first-seen) bytes win.
    let (v, out) = sim.raw_client("PA", base, sim.client_rcv, b"XXXX 192,0,2,10,156,64\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    sim.c_seq = base.wrapping_add(24);
    let seen = sim.took(v, &out, true).unwrap();
    assert!(
        seen.payload.starts_with(b"PORT 198,51,100,1,"),
        "the held PORT was parsed and rewritten: {:?}",
        String::from_utf8_lossy(&seen.payload)
    );
    assert_eq!(sim.s.of_kind("pinhole_open").len(), 1);
    // An exact retransmission re-emits the same bytes (FtpSim checks they match).
    let (v, out) = sim.raw_client("PA", base, sim.client_rcv, b"PORT 192,0,2,10,156,64\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    sim.took(v, &out, true);
    assert_eq!(sim.s.of_kind("pinhole_open").len(), 1, "a retransmission opens nothing new");
    // A segment overlapping old and new bytes: only the new part is parsed.
    let (v, out) = sim.raw_client("PA", base.wrapping_add(20), sim.client_rcv, b"64\r\nNOOP\r\n");
    sim.took(v, &out, true);
    sim.c_seq = base.wrapping_add(30);
    assert!(sim.server_got.ends_with(b"\r\nNOOP\r\n"));
    assert_eq!(sim.s.of_kind("ftp_command").len(), 2);
    assert_eq!(legit_session(&sim).buffered_bytes(), 0);
}

/// Was a known bug, now fixed (the ALG re-sends its first-seen copy): a retransmission of bytes the ALG has
/// already forwarded is forwarded with *its own* content, not the content
/// the ALG inspected (src/ftp/alg.rs `on_segment`, the `a < released_before`
/// branch maps `seg.payload`). If the first copy never reaches the server
/// (e.g. sent with a TTL that expires just past the gateway), the server
/// executes a line the ALG never saw: here a `deny_commands` verb; the same
/// way a PORT to a third host (FTP bounce) slips past the bounce check.
#[test]
fn conflicting_retransmission_of_forwarded_bytes_is_not_forwarded() {
    let mut cfg = lab_config(true);
    cfg.ftp.deny_commands = vec!["DELE".into()];
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let base = sim.c_seq;
    let (v, _) = sim.client(b"NOOP xxxxxxx\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let (v, out) = sim.raw_client("PA", base, sim.client_rcv, b"DELE precious\r\n"[..14].as_ref());
    // Either dropped, or re-sent with the bytes the ALG inspected.
    if let Verdict::Forward(_) = v {
        let o = decode_verified(&out);
        assert_eq!(o.payload, b"NOOP xxxxxxx\r\n", "retransmission must carry the inspected bytes");
    }
}

fn nat_exhaustion(clients_extra: u16) {
    let mut cfg: Config = lab_config(true);
    cfg.nat.ports = PortMode::Preserve;
    cfg.limits.max_connections_per_source = 1_000_000;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let mut count = Count::default();
    // One inside host takes every NAT port towards 198.51.100.20:80.
    let mut ok = 0;
    for port in 1024..=65535u16 {
        let mut f = tcp(
            CLIENT_MAC,
            GW_IN_MAC,
            Tcp { src: ("192.0.2.11", port), dst: ("198.51.100.20", 80), seq: 1, ack: 0, flags: "S", payload: b"" },
        );
        sim.t += 1;
        if let Verdict::Forward(_) = sim.e.process(Nanos(sim.t * 1_000_000), sim.t, INSIDE, &mut f, &mut count) {
            ok += 1;
        }
    }
    assert_eq!(ok, 65535 - 1024 + 1, "each got its own port");
    let heap = sim.e.table().heap_bytes();
    // Anyone else towards the same server ip:port: no port left, dropped with `limit`.
    for i in 0..clients_extra {
        let src = format!("192.0.2.{}", 12 + i % 200);
        let (v, _) = from_client(
            &mut sim.e,
            &mut sim.s,
            sim.t + 1,
            Tcp { src: (s(ip(&src)), 30000 + i), dst: ("198.51.100.20", 80), seq: 1, ack: 0, flags: "S", payload: b"" },
        );
        assert_eq!(v, Verdict::Drop(DropReason::Limit), "extra client {i}");
    }
    assert_eq!(sim.e.table().heap_bytes(), heap);
    // Another server port is a different tuple space: fine.
    let (v, _) = from_client(
        &mut sim.e,
        &mut sim.s,
        sim.t + 2,
        Tcp { src: ("192.0.2.12", 30000), dst: ("198.51.100.20", 443), seq: 1, ack: 0, flags: "S", payload: b"" },
    );
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    // The established FTP session (another server port) keeps working, passive included.
    let (v, _) = sim.client(b"NOOP\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    legit_passive_works(&mut sim, 50000);
}

#[test]
fn nat_ports_to_one_server_exhausted() {
    nat_exhaustion(5);
}

/// Was a known limit, now fixed (ordinary commands are one counted entry): commands the server has not answered
/// yet are queued without a cap (`FtpSession::pending`, ~32 bytes each). A
/// client pipelining commands to a server that reads but does not answer
/// grows the queue by one entry per line, bounded only by what the server's
/// TCP accepts. A cap (Zeek has one) with a violation beyond it would bound it.
#[test]
fn unanswered_pipelined_commands_are_bounded() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    for _ in 0..5000 {
        let (v, _) = sim.client(b"NOOP\r\n");
        assert_eq!(v, Verdict::Forward(OUTSIDE));
    }
    let pending = legit_session(&sim).pending_replies();
    assert!(pending <= 1024, "{pending} commands queued for replies");
}
