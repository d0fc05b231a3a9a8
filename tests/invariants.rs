//! Property tests of the engine as a whole (proptest):
//! - every frame the gateway emits verifies (etherparse) for random FTP
//!   sessions through masquerade and to a published server;
//! - sequence/ack translation is a bijection on the bytes that pass: what
//!   each end receives is exactly what the other sent with the recorded
//!   rewrites applied, every segment lands contiguously in the receiver's own
//!   sequence space (`FtpSim` checks that), and acknowledgements map back to
//!   the sender's own numbers;
//! - a pinhole admits only its announced peer: strangers' SYNs to pinhole
//!   ports are never forwarded and never consume the pinhole;
//! - every input frame is accounted for: frames_in == forwarded + consumed +
//!   dropped, one verdict per `process` call.
//!
//! Regression tests for crashes the fuzzers found live at the end.

mod common;
use common::*;
use ftpgate::config::Config;
use ftpgate::engine::Verdict;
use proptest::prelude::*;

/// One step of a random control session.
#[derive(Clone, Debug)]
enum Step {
    /// The client sends these lines, cut into segments at these points.
    Client(Vec<Vec<u8>>, Vec<usize>),
    /// The server answers with these lines, cut likewise.
    Server(Vec<Vec<u8>>, Vec<usize>),
}

/// A client command line; `own` is the client's address (PORT/EPRT name it).
fn client_line(own: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let port = 1024u16..=65535;
    let v6 = own.contains(':');
    let octets = if v6 { "192,0,2,10".to_string() } else { own.replace('.', ",") };
    let (o1, o2) = (octets.clone(), octets);
    // On IPv6 a PORT (IPv4 only) would name another host: a bounce. Use EPRT there.
    let port_cmd = if v6 { "EPRT |2|" } else { "PORT " };
    prop_oneof![
        port.clone().prop_map(move |p| if v6 {
            format!("{port_cmd}{own}|{p}|").into_bytes()
        } else {
            format!("{port_cmd}{o1},{},{}", p >> 8, p & 0xff).into_bytes()
        }),
        (port.clone(), prop::sample::select(vec!['|', '!', '#'])).prop_map(move |(p, d)| {
            let af = if v6 { 2 } else { 1 };
            format!("EPRT {d}{af}{d}{own}{d}{p}{d}").into_bytes()
        }),
        Just(b"PASV".to_vec()),
        Just(b"EPSV".to_vec()),
        Just(b"LIST".to_vec()),
        Just(b"USER anonymous".to_vec()),
        // Refused (privileged data port; LPSV): the server gets NOOP, the client a 5xx.
        (0u16..1024).prop_map(move |p| if v6 {
            format!("EPRT |2|{own}|{}|", p.max(1)).into_bytes()
        } else {
            format!("PORT {o2},{},{}", p >> 8, p & 0xff).into_bytes()
        }),
        Just(b"LPSV".to_vec()),
        "[A-Z]{3,4}( [a-z0-9./]{0,40})?".prop_map(String::into_bytes),
    ]
    .prop_map(|mut l| {
        l.extend_from_slice(b"\r\n");
        l
    })
}

fn server_line(pub_v4: [u8; 4]) -> impl Strategy<Value = Vec<u8>> {
    let port = 1024u16..=65535;
    let [a, b, c, d] = pub_v4;
    prop_oneof![
        port.clone().prop_map(
            move |p| format!("227 Entering Passive Mode ({a},{b},{c},{d},{},{}).", p >> 8, p & 0xff).into_bytes()
        ),
        port.prop_map(|p| format!("229 Entering Extended Passive Mode (|||{p}|)").into_bytes()),
        Just(b"200 Command okay.".to_vec()),
        Just(b"150 Opening data connection.".to_vec()),
        Just(b"226 Transfer complete.".to_vec()),
        Just(b"230-Welcome\r\n230 Logged in.".to_vec()),
        Just(b"500 What?".to_vec()),
        "[1-5][0-9][0-9] [a-zA-Z ]{0,30}".prop_map(String::into_bytes),
    ]
    .prop_map(|mut l| {
        l.extend_from_slice(b"\r\n");
        l
    })
}

fn steps(own: &'static str, server_addr: [u8; 4]) -> impl Strategy<Value = Vec<Step>> {
    let cuts = prop::collection::vec(0usize..200, 0..4);
    let step = prop_oneof![
        (prop::collection::vec(client_line(own), 1..4), cuts.clone()).prop_map(|(l, c)| Step::Client(l, c)),
        (prop::collection::vec(server_line(server_addr), 1..3), cuts).prop_map(|(l, c)| Step::Server(l, c)),
    ];
    prop::collection::vec(step, 1..24)
}

/// Cut `bytes` at the given points (taken modulo its length).
fn segments(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % bytes.len().max(1)).filter(|&c| c > 0).collect();
    at.sort();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at.into_iter().chain([bytes.len()]) {
        out.push(bytes[prev..c].to_vec());
        prev = c;
    }
    out
}

/// What one end sent, and the rewrites the gateway recorded for its lines:
/// (first, last+1 line index the rewrite's last line may have, the lines
/// before, after). A rewrite covers one line, or, where the gateway replaces
/// a whole multi-line reply by one refusal, the held lines it takes out
/// (rewritten to nothing) followed by the final line.
#[derive(Default)]
struct Sent {
    bytes: Vec<u8>,
    rewrites: Vec<(usize, usize, Vec<String>, String)>,
}

impl Sent {
    fn lines(&self) -> usize {
        self.bytes.iter().filter(|&&b| b == b'\n').count()
    }

    /// `received` must be this stream with each recorded rewrite applied, in
    /// order, to a line with its `before` text among the lines completed by
    /// the segment that caused it. (`after` differs from `before`, so the
    /// walk is unambiguous: a received line equal to the next rewrite's
    /// `after` where the sent line is its `before` is that rewrite.)
    fn check_received(&self, received: &[u8], who: &str) {
        let trim = |l: &[u8]| -> Vec<u8> { l.strip_suffix(b"\r\n").unwrap_or(l).to_vec() };
        let sent: Vec<Vec<u8>> = self.bytes.split_inclusive(|&b| b == b'\n').map(trim).collect();
        let got: Vec<Vec<u8>> = received.split_inclusive(|&b| b == b'\n').map(trim).collect();
        let show = |v: &[Vec<u8>]| v.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect::<Vec<_>>();
        let mut r = self.rewrites.iter().peekable();
        let mut j = 0;
        let mut i = 0;
        while i < sent.len() {
            let line = &sent[i];
            let g =
                got.get(j).unwrap_or_else(|| panic!("{who} is missing line {i} {:?}", String::from_utf8_lossy(line)));
            match r.peek() {
                Some((lo, hi, befores, after))
                    if (*lo..*hi).contains(&(i + befores.len() - 1))
                        && sent
                            .get(i..i + befores.len())
                            .is_some_and(|s| s.iter().zip(befores.iter()).all(|(a, b)| a == b.as_bytes()))
                        && after.as_bytes() == &g[..] =>
                {
                    i += befores.len();
                    r.next();
                }
                _ => {
                    assert_eq!(
                        show(std::slice::from_ref(g)),
                        show(std::slice::from_ref(line)),
                        "{who} line {j}\nsent {:?}\ngot  {:?}",
                        show(&sent),
                        show(&got)
                    );
                    i += 1;
                }
            }
            j += 1;
        }
        assert_eq!(j, got.len(), "{who} got extra lines: {:?}", show(&got[j..]));
        assert!(r.next().is_none(), "{who}: a rewrite matched no line");
    }
}

/// Replay `steps` through `sim`; returns what each end sent. A rewrite is
/// decided when its line completes, so the `alg_rewrite` events a segment
/// causes belong, in order, to the lines that segment completed.
fn drive(sim: &mut FtpSim, steps: &[Step]) -> (Sent, Sent) {
    let (mut c, mut s) = (Sent::default(), Sent::default());
    s.bytes.extend_from_slice(b"220 ready\r\n"); // the greeting the caller sent
    for step in steps {
        let (lines, cuts, client) = match step {
            Step::Client(l, c) => (l, c, true),
            Step::Server(l, c) => (l, c, false),
        };
        let bytes: Vec<u8> = lines.concat();
        for seg in segments(&bytes, cuts) {
            let events_before = sim.s.events.len();
            let sent = if client { &mut c } else { &mut s };
            let first = sent.lines();
            sent.bytes.extend_from_slice(&seg);
            let done = sent.lines();
            let (v, _) = if client { sim.client(&seg) } else { sim.server(&seg) };
            assert!(
                matches!(v, Verdict::Forward(_) | Verdict::Consumed),
                "segment {:?}: {v:?}",
                String::from_utf8_lossy(&seg)
            );
            let sent = if client { &mut c } else { &mut s };
            let mut pending_out: Vec<String> = Vec::new();
            for ev in &sim.s.events[events_before..] {
                let ev: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
                if ev["event"] == "alg_rewrite" {
                    let (before, after) = (ev["before"].as_str().unwrap(), ev["after"].as_str().unwrap());
                    pending_out.push(before.to_string());
                    if !after.is_empty() {
                        // The lines taken out so far belong to this one's reply.
                        let befores = std::mem::take(&mut pending_out);
                        sent.rewrites.push((first, done, befores, after.to_string()));
                    }
                }
            }
        }
    }
    (c, s)
}

/// Every emitted frame (forwarded ones were checked by `FtpSim::took`).
fn generated_verify(sim: &FtpSim) {
    for (_, f) in &sim.s.frames {
        decode_verified(f);
    }
}

fn check_bijection(sim: &mut FtpSim, c: &Sent, s: &Sent) {
    c.check_received(&sim.server_got, "server");
    s.check_received(&sim.client_got, "client");
    // Acknowledging everything received maps back to everything sent, in each sender's own numbers.
    let (_, cs) = sim.server(b"");
    assert_eq!(cs.map(|x| x.ack), Some(sim.c_seq), "server's ACK in the client's sequence space");
    let (_, ss) = sim.client(b"");
    assert_eq!(ss.map(|x| x.ack), Some(sim.s_seq), "client's ACK in the server's sequence space");
}

fn masq_cfg() -> Config {
    lab_config(true)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn masquerade_sessions_verify_and_translate_bijectively(steps in steps("192.0.2.10", [198, 51, 100, 20]), preserve in any::<bool>()) {
        let mut cfg = masq_cfg();
        if preserve {
            cfg.nat.ports = ftpgate::config::PortMode::Preserve;
        }
        let mut sim = FtpSim::masq(cfg);
        sim.greet();
        let (c, s) = drive(&mut sim, &steps);
        generated_verify(&sim);
        check_bijection(&mut sim, &c, &s);
        prop_assert!(sim.e.pinholes().len() <= sim.e.config().ftp.max_pinholes as usize);
    }

    #[test]
    fn published_server_sessions_verify_and_translate_bijectively(steps in steps("203.0.113.5", [192, 0, 2, 20])) {
        let mut sim = FtpSim::published(published_config());
        sim.greet();
        let (c, s) = drive(&mut sim, &steps);
        generated_verify(&sim);
        check_bijection(&mut sim, &c, &s);
    }

    #[test]
    fn ipv6_sessions_verify_and_translate_bijectively(steps in steps("2001:db8:1::10", [198, 51, 100, 20])) {
        let mut sim = FtpSim::start(masq_cfg(), ("2001:db8:1::10", 40000), ("2001:db8:2::20", 21), ("2001:db8:2::20", 21), INSIDE, OUTSIDE);
        sim.greet();
        // PORT and 227 are IPv4-only; on IPv6 they are refused or left alone, and the streams still match.
        let (c, s) = drive(&mut sim, &steps);
        generated_verify(&sim);
        check_bijection(&mut sim, &c, &s);
    }

    #[test]
    fn pinholes_admit_only_the_announced_peer(
        ports in prop::collection::vec(1024u16..=65535, 1..6),
        passive in prop::collection::vec(any::<bool>(), 6),
        strangers in prop::collection::vec((1u8..=254, 1u16..=65535), 1..12),
    ) {
        let mut sim = FtpSim::masq(masq_cfg());
        sim.greet();
        for (i, p) in ports.iter().enumerate() {
            if passive[i] {
                sim.client(b"PASV\r\n");
                sim.server(format!("227 ok (198,51,100,20,{},{})\r\n", p >> 8, p & 0xff).as_bytes());
            } else {
                sim.client(format!("PORT 192,0,2,10,{},{}\r\n", p >> 8, p & 0xff).as_bytes());
                sim.server(b"200 ok\r\n");
            }
        }
        let pins: Vec<_> = sim.e.pinholes().iter().map(|r| (*r.key(), r.value().peer, r.value().ingress)).collect();
        prop_assert!(!pins.is_empty());
        for &((addr, port), peer, ingress) in &pins {
            for &(host, sport) in &strangers {
                // A stranger on the side the data connection comes from.
                let src = if ingress == OUTSIDE { format!("203.0.113.{host}") } else { format!("192.0.2.{}", host.max(11)) };
                if ip(&src) == peer {
                    continue;
                }
                sim.t += 1;
                let (mac, src_s): (_, &'static str) = (if ingress == OUTSIDE { GW_OUT_MAC } else { GW_IN_MAC }, Box::leak(src.clone().into_boxed_str()));
                let dst: &'static str = Box::leak(addr.to_string().into_boxed_str());
                let (v, _) = feed(&mut sim.e, &mut sim.s, sim.t, ingress, tcp(SERVER_MAC, mac, Tcp { src: (src_s, sport), dst: (dst, port), seq: 1, ack: 0, flags: "S", payload: b"" }));
                let uses = sim.s.of_kind("pinhole_use").len();
                prop_assert_eq!(uses, 0, "stranger {} used a pinhole", src);
                prop_assert!(sim.e.pinholes().contains_key(&(addr, port)), "stranger {} removed the pinhole", src);
                if ingress == OUTSIDE {
                    prop_assert!(!matches!(v, Verdict::Forward(_)), "stranger {}:{} forwarded to {}:{}", src, sport, addr, port);
                }
            }
            // The announced peer is admitted.
            sim.t += 1;
            let peer_s: &'static str = Box::leak(peer.to_string().into_boxed_str());
            let dst: &'static str = Box::leak(addr.to_string().into_boxed_str());
            let mac = if ingress == OUTSIDE { GW_OUT_MAC } else { GW_IN_MAC };
            let (v, out) = feed(&mut sim.e, &mut sim.s, sim.t, ingress, tcp(SERVER_MAC, mac, Tcp { src: (peer_s, 20), dst: (dst, port), seq: 1, ack: 0, flags: "S", payload: b"" }));
            prop_assert!(matches!(v, Verdict::Forward(_)), "peer {} refused: {:?}", peer, v);
            decode_verified(&out);
            // The pinhole admitted one connection; the next use is gone. (Later keys
            // are used by peers only; reset the counter by clearing events.)
            sim.s.events.clear();
        }
    }

    #[test]
    fn every_frame_is_accounted_for(
        steps in steps("192.0.2.10", [198, 51, 100, 20]),
        junk in prop::collection::vec((0usize..3, prop::collection::vec(any::<u8>(), 0..120)), 0..40),
        udp_n in 0u16..20,
    ) {
        let mut sim = FtpSim::masq(masq_cfg());
        sim.greet();
        drive(&mut sim, &steps);
        for (ingress, bytes) in junk {
            sim.t += 1;
            feed(&mut sim.e, &mut sim.s, sim.t, ingress, bytes);
        }
        for i in 0..udp_n {
            sim.t += 1;
            let f = udp(CLIENT_MAC, GW_IN_MAC, ("192.0.2.10", 5000 + i), ("198.51.100.20", 53), b"q");
            feed(&mut sim.e, &mut sim.s, sim.t, INSIDE, f);
            sim.t += 1;
            let f = ping(SERVER_MAC, GW_OUT_MAC, "203.0.113.9", "198.51.100.1", i, i, false);
            feed(&mut sim.e, &mut sim.s, sim.t, OUTSIDE, f);
        }
        let st = sim.e.stats();
        prop_assert_eq!(st.frames_in, sim.t, "one process call per tick of the sim clock");
        prop_assert_eq!(st.frames_in, st.forwarded + st.consumed + st.dropped_total());
        prop_assert_eq!(st.generated as usize, sim.s.frames.len());
        generated_verify(&sim);
    }
}

/// Whatever EPRT spelling the parser accepts, the rewritten line the server
/// gets must be one the parser reads as the public address and port the
/// pinhole waits on (found by reading the ALG: the delimiter was taken from
/// a fixed offset, so `EPRT  |1|...` with two spaces came out with a space
/// as its delimiter).
#[test]
fn rewritten_eprt_parses_whatever_the_spacing() {
    for line in
        [&b"EPRT |1|192.0.2.10|40000|\r\n"[..], b"EPRT  |1|192.0.2.10|40000|\r\n", b"eprt !1!192.0.2.10!40000!\r\n"]
    {
        let mut sim = FtpSim::masq(masq_cfg());
        sim.greet();
        let (v, seen) = sim.client(line);
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let got = seen.unwrap().payload;
        let text = got.strip_suffix(b"\r\n").unwrap();
        match ftpgate::ftp::parse::parse_command(text) {
            Ok(ftpgate::ftp::parse::Command::Eprt(a)) => {
                assert_eq!(a.ip(), ip("198.51.100.1"), "{:?}", String::from_utf8_lossy(&got));
                assert!(sim.e.pinholes().contains_key(&(a.ip(), a.port())));
            }
            other => {
                panic!("{:?} went out as {:?}: {other:?}", String::from_utf8_lossy(line), String::from_utf8_lossy(&got))
            }
        }
    }
}

/// Found by the `wire` fuzz target: the pseudo-header sum overflowed u32
/// when the two addresses' 32-bit words summed to nearly 2^32 (debug: panic;
/// release: the carry was lost and a rewritten segment's TCP checksum was
/// off by one, about one address pair in 65536). Full recomputation must
/// agree with etherparse for such addresses.
#[test]
fn transport_checksum_with_high_addresses() {
    use ftpgate::wire::checksum;
    for (s, d) in [
        ("255.255.255.255", "255.255.255.255"),
        ("255.255.255.254", "255.255.255.255"),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
    ] {
        let f = tcp(
            CLIENT_MAC,
            GW_IN_MAC,
            Tcp { src: (s, 65535), dst: (d, 65535), seq: u32::MAX, ack: u32::MAX, flags: "PA", payload: &[0xff; 33] },
        );
        let p = etherparse::SlicedPacket::from_ethernet(&f).unwrap();
        let l4 = match p.transport.unwrap() {
            etherparse::TransportSlice::Tcp(t) => t.slice().to_vec(),
            _ => unreachable!(),
        };
        let want = u16::from_be_bytes([l4[16], l4[17]]);
        assert_eq!(checksum::transport(ip(s), ip(d), 6, &l4, 16), want, "{s} -> {d}");
    }
}

/// Found by the `wire` fuzz target: an ICMP error quoting fewer than 4 bytes
/// of the inner UDP/TCP header has no inner ports for the parser, but
/// `set_inner_sport` still wrote one into the 2-3 quoted bytes and recorded
/// it in `Meta`, so the setters' view and a fresh parse disagreed. The setter
/// now follows the parser's rule (both ports quoted, or none touched).
#[test]
fn inner_port_setter_matches_the_parser_on_a_truncated_quote() {
    use ftpgate::wire::{parse_frame, setters, FrameKind};
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x08, 0x00]);
    let inner_len = 20 + 3;
    let total = 20 + 8 + inner_len;
    // Outer IPv4: 203.0.113.9 -> 192.0.2.10, ICMP.
    f.extend_from_slice(&[0x45, 0, 0, total as u8, 0, 0, 0, 0, 64, 1, 0, 0, 203, 0, 113, 9, 192, 0, 2, 10]);
    // ICMP destination unreachable, port unreachable.
    f.extend_from_slice(&[3, 3, 0, 0, 0, 0, 0, 0]);
    // Quoted IPv4 header (UDP) and three bytes of its UDP header.
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 10, 203, 0, 113, 9]);
    f.extend_from_slice(&[0x9c, 0x40, 0x00]);
    let FrameKind::Ip(mut m) = parse_frame(&f) else { panic!("parses") };
    let inner = m.icmp.and_then(|i| i.inner).expect("inner header");
    assert_eq!((inner.sport, inner.dport), (0, 0), "no ports in a 3-byte quote");
    let before = f.clone();
    setters::set_inner_sport(&mut f, &mut m, 1234);
    let FrameKind::Ip(again) = parse_frame(&f) else { panic!("still parses") };
    assert_eq!(again, m, "setter and parser agree");
    assert_eq!(f, before, "nothing to change");
}

/// Found by the `wire` fuzz target: an ICMPv6 error quoting an IPv6 packet
/// that carries ICMPv4 (protocol 1) with type 128. The parser reads no identifier
/// (wrong family), but `set_inner_dport` took it for an ICMPv6 echo and rewrote it.
#[test]
fn inner_port_setter_ignores_icmp_of_the_other_family() {
    use ftpgate::wire::{parse_frame, setters, FrameKind};
    let a: std::net::Ipv6Addr = "2001:db8:2::20".parse().unwrap();
    let b: std::net::Ipv6Addr = "2001:db8:1::10".parse().unwrap();
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0x86, 0xdd]);
    let payload_len: u16 = 8 + 40 + 8;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&payload_len.to_be_bytes());
    f.extend_from_slice(&[58, 64]);
    f.extend_from_slice(&a.octets());
    f.extend_from_slice(&b.octets());
    // ICMPv6 destination unreachable.
    f.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]);
    // Quoted IPv6 header, next header 1 (ICMPv4).
    f.extend_from_slice(&[0x60, 0, 0, 0, 0, 8, 1, 64]);
    f.extend_from_slice(&b.octets());
    f.extend_from_slice(&a.octets());
    // Type 128 is an echo request only in ICMPv6; here it is ICMPv4 (type 128 is unassigned).
    f.extend_from_slice(&[128, 0, 0, 0, 0x40, 0x00, 0, 1]);
    let FrameKind::Ip(mut m) = parse_frame(&f) else { panic!("parses") };
    let inner = m.icmp.and_then(|i| i.inner).expect("inner header");
    assert_eq!((inner.sport, inner.dport), (0, 0));
    let before = f.clone();
    setters::set_inner_dport(&mut f, &mut m, 999);
    let FrameKind::Ip(again) = parse_frame(&f) else { panic!("still parses") };
    assert_eq!(again, m, "setter and parser agree");
    assert_eq!(f, before, "nothing to change");
}
