//! The FTP ALG end to end through the engine: rewrites with sequence
//! shifting, pinholes admitting exactly the announced peer, refusals, resets,
//! splits, retransmissions and the FTPS blind spot.

mod common;
use common::*;
use ftpgate::engine::Verdict;
use ftpgate::event::DropReason;

fn port_args(line: &[u8]) -> (std::net::Ipv4Addr, u16) {
    let s = std::str::from_utf8(line).unwrap().trim_end();
    let args = s.split_once(' ').unwrap().1;
    let n: Vec<u16> = args.split(',').map(|x| x.parse().unwrap()).collect();
    (std::net::Ipv4Addr::new(n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8), n[4] * 256 + n[5])
}

#[test]
fn active_mode_through_masquerade_rewrites_and_admits_only_the_server() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let (v, _) = sim.client(b"USER anonymous\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let (_, seen) = sim.client(b"PORT 192,0,2,10,156,64\r\n");
    let seen = seen.expect("PORT forwarded");
    let (addr, port) = port_args(&seen.payload);
    assert_eq!(addr, std::net::Ipv4Addr::new(198, 51, 100, 1), "PORT carries the public address");
    assert_ne!(port, 156 * 256 + 64, "and a random port by default");
    let rw = &sim.s.of_kind("alg_rewrite")[0];
    assert_eq!(rw["before"], "PORT 192,0,2,10,156,64");
    let delta = seen.payload.len() as i64 - 24;
    assert_eq!(rw["delta"], delta);
    let pin = &sim.s.of_kind("pinhole_open")[0];
    assert_eq!(pin["peer"], "198.51.100.20");
    assert_eq!(pin["address"], "198.51.100.1");
    assert_eq!(pin["port"], port);

    // Later bytes are shifted; the server's ACK maps back for the client.
    let (_, seen) = sim.client(b"LIST\r\n");
    assert_eq!(seen.unwrap().payload, b"LIST\r\n");
    let (v, c) = sim.server(b"200 PORT command successful\r\n");
    assert_eq!(v, Verdict::Forward(INSIDE));
    assert_eq!(c.unwrap().ack, sim.c_seq, "client sees its own sequence space acknowledged");

    // A stranger on the outside tries the pinhole first: not admitted.
    let (v, _) = from_server(
        &mut sim.e,
        &mut sim.s,
        50,
        Tcp { src: ("203.0.113.66", 20), dst: ("198.51.100.1", port), seq: 1, ack: 0, flags: "S", payload: b"" },
    );
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    // The server connects from port 20: admitted, to the client's announced port.
    let (v, out) = from_server(
        &mut sim.e,
        &mut sim.s,
        51,
        Tcp { src: ("198.51.100.20", 20), dst: ("198.51.100.1", port), seq: 1, ack: 0, flags: "S", payload: b"" },
    );
    assert_eq!(v, Verdict::Forward(INSIDE));
    let d = decode_verified(&out);
    assert_eq!((d.dst, d.dport), (ip("192.0.2.10"), 156 * 256 + 64));
    assert_eq!(sim.s.of_kind("pinhole_use").len(), 1);
    // Used once: a second SYN from the server to the same port is not a pinhole.
    let (v, _) = from_server(
        &mut sim.e,
        &mut sim.s,
        52,
        Tcp { src: ("198.51.100.20", 21000), dst: ("198.51.100.1", port), seq: 1, ack: 0, flags: "S", payload: b"" },
    );
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
}

#[test]
fn preserve_keeps_the_port_and_grows_the_line_like_linux() {
    let mut cfg = lab_config(true);
    cfg.nat.ports = ftpgate::config::PortMode::Preserve;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let (_, seen) = sim.client(b"PORT 192,0,2,10,138,185\r\n");
    assert_eq!(seen.unwrap().payload, b"PORT 198,51,100,1,138,185\r\n");
    let (_, seen) = sim.client(b"RETR x\r\n");
    assert_eq!(seen.unwrap().seq, C_ISN.wrapping_add(1 + 25 + 2), "two bytes later, as the kernel does");
}

#[test]
fn passive_mode_to_a_published_server_rewrites_227_and_229() {
    let mut sim = FtpSim::published(published_config());
    sim.greet();
    sim.client(b"PASV\r\n");
    let (v, seen) = sim.server(b"227 Entering Passive Mode (192,0,2,20,195,80).\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let text = String::from_utf8(seen.unwrap().payload).unwrap();
    assert!(text.starts_with("227 Entering Passive Mode (198,51,100,1,"), "{text}");
    assert!(text.ends_with(").\r\n"), "surrounding text kept: {text}");
    let inner = text.split('(').nth(1).unwrap().split(')').next().unwrap();
    let n: Vec<u16> = inner.split(',').map(|x| x.parse().unwrap()).collect();
    let port = n[4] * 256 + n[5];
    // The client connects to the public port and lands on the server's.
    let (v, out) = feed(
        &mut sim.e,
        &mut sim.s,
        60,
        OUTSIDE,
        tcp(
            CLIENT_MAC,
            GW_OUT_MAC,
            Tcp { src: ("203.0.113.5", 50001), dst: ("198.51.100.1", port), seq: 1, ack: 0, flags: "S", payload: b"" },
        ),
    );
    assert_eq!(v, Verdict::Forward(INSIDE));
    let d = decode_verified(&out);
    assert_eq!((d.dst, d.dport), (ip("192.0.2.20"), 195 * 256 + 80));

    sim.client(b"EPSV\r\n");
    let (_, seen) = sim.server(b"229 Entering Extended Passive Mode (|||50001|)\r\n");
    let text = String::from_utf8(seen.unwrap().payload).unwrap();
    let p: u16 = text.split("|||").nth(1).unwrap().trim_end_matches(|c: char| !c.is_ascii_digit()).parse().unwrap();
    let pin = sim.s.of_kind("pinhole_open");
    assert_eq!(pin.last().unwrap()["port"], p);
    assert_eq!(pin.last().unwrap()["peer"], "203.0.113.5");
}

#[test]
fn bounce_is_reset_with_rsts_to_both_ends_and_no_pinhole() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let (v, _) = sim.client(b"PORT 203,0,113,9,0,80\r\n");
    assert_eq!(v, Verdict::Drop(DropReason::Bounce));
    assert!(sim.s.of_kind("pinhole_open").is_empty());
    let reset = sim.s.of_kind("reset");
    assert_eq!(reset.len(), 1);
    assert_eq!(reset[0]["reason"], "bounce");
    let rsts: Vec<_> = sim.s.frames.iter().map(|(i, f)| (*i, decode_verified(f))).collect();
    assert_eq!(rsts.len(), 2);
    let to_client = rsts.iter().find(|(i, _)| *i == INSIDE).unwrap();
    assert_eq!(to_client.1.dst, ip("192.0.2.10"));
    assert_eq!(to_client.1.seq, sim.client_rcv, "the RST is in the client's window");
    let to_server = rsts.iter().find(|(i, _)| *i == OUTSIDE).unwrap();
    assert_eq!((to_server.1.src, to_server.1.sport), sim.client_seen);
    assert_eq!(to_server.1.seq, sim.server_rcv, "and in the server's");
    // Nothing more passes on that control connection's data.
    let (v, _) = sim.client(b"LIST\r\n");
    assert!(!matches!(v, Verdict::Forward(OUTSIDE)) || sim.s.of_kind("connection_end").len() == 1);
}

#[test]
fn bounce_with_drop_policy_blocks_the_rest_of_the_stream() {
    let mut cfg = lab_config(true);
    cfg.ftp.on_violation = ftpgate::config::OnViolation::Drop;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let (v, _) = sim.client(b"PORT 2,2,2,3,0,80\r\n");
    assert_eq!(v, Verdict::Drop(DropReason::Bounce));
    assert!(sim.s.frames.is_empty(), "no RSTs with on_violation: drop");
    // Its retransmission is dropped too.
    let seq = sim.c_seq.wrapping_sub(19);
    let (v, _) = sim.raw_client("PA", seq, sim.client_rcv, b"PORT 2,2,2,3,0,80\r\n");
    assert!(matches!(v, Verdict::Drop(_)));
}

#[test]
fn a_port_split_across_segments_is_held_then_rewritten() {
    let mut cfg = lab_config(true);
    cfg.nat.ports = ftpgate::config::PortMode::Preserve;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let (v, seen) = sim.client(b"NOOP\r\nPORT 192,0,");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(seen.unwrap().payload, b"NOOP\r\n", "the partial PORT is held back");
    let (v, seen) = sim.client(b"2,");
    assert_eq!(v, Verdict::Consumed);
    assert!(seen.is_none());
    let (v, seen) = sim.client(b"10,4,1\r\nLIST\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(seen.unwrap().payload, b"PORT 198,51,100,1,4,1\r\nLIST\r\n");
    assert_eq!(sim.server_got, b"NOOP\r\nPORT 198,51,100,1,4,1\r\nLIST\r\n");
}

#[test]
fn a_retransmitted_rewritten_segment_is_byte_identical() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let start = sim.c_seq;
    let (_, first) = sim.client(b"PORT 192,0,2,10,200,1\r\n");
    let first = first.unwrap();
    // The same segment again (ACK lost), and re-cut in two.
    let (_, again) = sim.raw_client("PA", start, sim.client_rcv, b"PORT 192,0,2,10,200,1\r\n");
    let again = decode_verified(&again);
    assert_eq!((again.seq, &again.payload), (first.seq, &first.payload));
    let (_, a) = sim.raw_client("PA", start, sim.client_rcv, b"PORT 192,0,");
    let (_, b) = sim.raw_client("PA", start.wrapping_add(11), sim.client_rcv, b"2,10,200,1\r\n");
    let (a, b) = (decode_verified(&a), decode_verified(&b));
    let mut joined = a.payload.clone();
    joined.extend_from_slice(&b.payload);
    assert_eq!(joined, first.payload);
    assert_eq!(b.seq, a.seq.wrapping_add(a.payload.len() as u32));
    assert_eq!(sim.s.of_kind("pinhole_open").len(), 1, "one PORT, one pinhole");
}

#[test]
fn several_rewrites_in_flight_before_an_ack() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    let ack_before = sim.server_rcv;
    for p in 1..=3u8 {
        let line = format!("PORT 192,0,2,10,{},{}\r\n", 100 + p, p);
        let (v, _) = sim.client(line.as_bytes());
        assert_eq!(v, Verdict::Forward(OUTSIDE));
    }
    assert_ne!(ack_before, sim.server_rcv);
    // The server acknowledges everything at once; the client must see its own total.
    let (_, c) = sim.server(b"200 ok\r\n");
    assert_eq!(c.unwrap().ack, sim.c_seq);
    // An ACK for only the first rewritten line maps to that line's end.
    let first_len = sim.s.of_kind("alg_rewrite")[0]["after"].as_str().unwrap().len() as u32 + 2;
    let (_, out) = sim.raw_server("A", sim.s_seq, ack_before.wrapping_add(first_len), b"");
    let first_orig = "PORT 192,0,2,10,101,1\r\n".len() as u32;
    assert_eq!(decode_verified(&out).ack, C_ISN.wrapping_add(1 + first_orig), "exactly the end of the first PORT");
}

#[test]
fn refusals_answer_the_client_and_the_server_never_sees_the_command() {
    let mut cfg = lab_config(true);
    cfg.ftp.deny_commands = vec!["DELE".into()];
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let (v, seen) = sim.client(b"DELE important.txt\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(seen.unwrap().payload, b"NOOP\r\n");
    let (_, c) = sim.server(b"200 NOOP ok.\r\n");
    let reply = String::from_utf8(c.unwrap().payload).unwrap();
    assert!(reply.starts_with("550 DELE"), "{reply}");
    let d = &sim.s.of_kind("drop")[0];
    assert_eq!(d["reason"], "command_denied");

    // A privileged data port is refused the same way.
    let (_, seen) = sim.client(b"PORT 192,0,2,10,0,22\r\n");
    assert_eq!(seen.unwrap().payload, b"NOOP\r\n");
    let (_, c) = sim.server(b"200 NOOP ok.\r\n");
    assert!(String::from_utf8(c.unwrap().payload).unwrap().starts_with("501 "));
    assert_eq!(sim.s.of_kind("drop")[1]["reason"], "privileged_port");
    assert!(sim.s.of_kind("pinhole_open").is_empty());
    assert_eq!(sim.client_got.windows(4).filter(|w| w == b"550 ").count(), 1);
}

#[test]
fn modes_can_be_denied() {
    let mut cfg = lab_config(true);
    cfg.ftp.active = ftpgate::config::Action::Deny;
    cfg.ftp.passive = ftpgate::config::Action::Deny;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let (_, seen) = sim.client(b"EPRT |1|192.0.2.10|5000|\r\n");
    assert_eq!(seen.unwrap().payload, b"NOOP\r\n");
    let (_, seen) = sim.client(b"PASV\r\n");
    assert_eq!(seen.unwrap().payload, b"NOOP\r\n");
    let drops = sim.s.of_kind("drop");
    assert!(drops.iter().all(|d| d["reason"] == "mode_denied") && drops.len() == 2);
}

#[test]
fn a_server_refused_port_withdraws_its_pinhole() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    sim.client(b"PORT 192,0,2,10,100,100\r\n");
    assert_eq!(sim.s.of_kind("pinhole_open").len(), 1);
    sim.server(b"500 Illegal PORT command.\r\n");
    let port = sim.s.of_kind("pinhole_open")[0]["port"].as_u64().unwrap() as u16;
    let (v, _) = from_server(
        &mut sim.e,
        &mut sim.s,
        90,
        Tcp { src: ("198.51.100.20", 20), dst: ("198.51.100.1", port), seq: 1, ack: 0, flags: "S", payload: b"" },
    );
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
}

#[test]
fn unsolicited_and_banner_227_open_nothing() {
    let mut sim = FtpSim::masq(lab_config(true));
    let (v, _) = sim.server(b"220-Welcome\r\n227 Entering Passive Mode (6,6,6,6,1,1)\r\n220 ready\r\n");
    assert_eq!(v, Verdict::Forward(INSIDE));
    sim.server(b"227 Entering Passive Mode (7,7,7,7,1,1)\r\n");
    assert!(sim.s.of_kind("pinhole_open").is_empty());
    // A multi-line 227 uses only its final line.
    sim.client(b"PASV\r\n");
    sim.server(b"227-Entering Passive Mode (8,8,8,8,1,1)\r\n227 Entering Passive Mode (198,51,100,20,100,1)\r\n");
    let pins = sim.s.of_kind("pinhole_open");
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0]["address"], "198.51.100.20");
    assert_eq!(pins[0]["port"], 100 * 256 + 1);
}

#[test]
fn pasv_naming_another_host_is_fixed_to_the_server() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    sim.client(b"PASV\r\n");
    let (_, c) = sim.server(b"227 Entering Passive Mode (10,1,2,3,100,1)\r\n");
    assert_eq!(c.unwrap().payload, b"227 Entering Passive Mode (198,51,100,20,100,1)\r\n");
    let pin = &sim.s.of_kind("pinhole_open")[0];
    assert_eq!(pin["address"], "198.51.100.20");
}

#[test]
fn auth_tls_blinds_the_alg() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    sim.client(b"AUTH TLS\r\n");
    sim.server(b"234 Proceed with negotiation.\r\n");
    let enc = sim.s.of_kind("ftp_encrypted");
    assert_eq!(enc.len(), 1);
    assert_eq!(enc[0]["line"], "AUTH TLS");
    let (v, seen) = sim.client(b"PORT 192,0,2,10,1,2\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(seen.unwrap().payload, b"PORT 192,0,2,10,1,2\r\n", "not parsed, not rewritten");
    assert!(sim.s.of_kind("pinhole_open").is_empty());
}

#[test]
fn max_pinholes_closes_the_oldest_and_end_closes_all() {
    let mut cfg = lab_config(true);
    cfg.ftp.max_pinholes = 2;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    for p in 1..=3u8 {
        sim.client(format!("PORT 192,0,2,10,100,{p}\r\n").as_bytes());
    }
    assert_eq!(sim.s.of_kind("pinhole_open").len(), 3);
    assert_eq!(sim.s.of_kind("pinhole_expire").len(), 1);
    let (v, _) = sim.raw_client("FA", sim.c_seq, sim.client_rcv, b"");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let (v, _) = sim.raw_server("FA", sim.s_seq, sim.server_rcv.wrapping_add(1), b"");
    assert_eq!(v, Verdict::Forward(INSIDE));
    assert_eq!(sim.s.of_kind("pinhole_expire").len(), 3, "all closed with the control connection");
    assert_eq!(sim.s.of_kind("connection_end")[0]["reason"], "fin");
}

#[test]
fn pinholes_expire_on_the_packet_clock() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    sim.client(b"PORT 192,0,2,10,100,1\r\n");
    sim.e.tick(ftpgate::time::Nanos(31_000_000_000), &mut sim.s);
    assert_eq!(sim.s.of_kind("pinhole_expire").len(), 1);
}

#[test]
fn no_nat_opens_pinholes_without_rewriting() {
    let mut sim = FtpSim::masq(lab_config(false));
    sim.greet();
    let (_, seen) = sim.client(b"PORT 192,0,2,10,100,1\r\n");
    assert_eq!(seen.unwrap().payload, b"PORT 192,0,2,10,100,1\r\n");
    assert!(sim.s.of_kind("alg_rewrite").is_empty());
    let pin = &sim.s.of_kind("pinhole_open")[0];
    assert_eq!(pin["address"], "192.0.2.10");
    // The server's data connection passes although policy denies outside → inside.
    let (v, _) = from_server(
        &mut sim.e,
        &mut sim.s,
        70,
        Tcp {
            src: ("198.51.100.20", 20),
            dst: ("192.0.2.10", 100 * 256 + 1),
            seq: 1,
            ack: 0,
            flags: "S",
            payload: b"",
        },
    );
    assert_eq!(v, Verdict::Forward(INSIDE));
}

#[test]
fn a_pinhole_admits_its_peer_only_on_the_peers_interface() {
    let mut sim = FtpSim::masq(lab_config(false));
    sim.greet();
    sim.client(b"PORT 192,0,2,10,100,1\r\n");
    assert_eq!(sim.s.of_kind("pinhole_open").len(), 1);
    let syn = |sport| Tcp {
        src: ("198.51.100.20", sport),
        dst: ("192.0.2.10", 100 * 256 + 1),
        seq: 1,
        ack: 0,
        flags: "S",
        payload: b"",
    };
    // The server's address, but from the inside: spoofed. The pinhole does
    // not apply (the policy decides, as for any SYN) and is not used up.
    let (v, _) = feed(&mut sim.e, &mut sim.s, 70, INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, syn(20)));
    assert_ne!(v, Verdict::Forward(INSIDE), "spoofed SYN went through the pinhole");
    assert!(sim.s.of_kind("pinhole_use").is_empty(), "{:?}", sim.s.of_kind("pinhole_use"));
    // The real server, from the outside, still finds it.
    let (v, _) = from_server(&mut sim.e, &mut sim.s, 71, syn(20));
    assert_eq!(v, Verdict::Forward(INSIDE));
    assert_eq!(sim.s.of_kind("pinhole_use").len(), 1);
    // Used once: a second connection from the server is the policy's again.
    let (v, _) = from_server(&mut sim.e, &mut sim.s, 72, syn(21));
    assert_ne!(v, Verdict::Forward(INSIDE));
}

#[test]
fn ipv6_eprt_opens_a_pinhole_for_the_announced_port() {
    let mut sim = FtpSim::start(
        lab_config(false),
        ("2001:db8:1::10", 40000),
        ("2001:db8:2::20", 21),
        ("2001:db8:2::20", 21),
        INSIDE,
        OUTSIDE,
    );
    sim.greet();
    let (_, seen) = sim.client(b"EPRT |2|2001:db8:1::10|5282|\r\n");
    assert_eq!(seen.unwrap().payload, b"EPRT |2|2001:db8:1::10|5282|\r\n");
    let pin = &sim.s.of_kind("pinhole_open")[0];
    assert_eq!(pin["address"], "2001:db8:1::10");
    assert_eq!(pin["port"], 5282);
    let (v, _) = sim.client(b"EPRT |2|2001:db8:1::99|5283|\r\n");
    assert_eq!(v, Verdict::Drop(DropReason::Bounce), "another host is a bounce in IPv6 too");
}

#[test]
fn pass_is_masked_in_the_log() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    sim.client(b"USER bob\r\nPASS hunter2\r\n");
    let cmds = sim.s.of_kind("ftp_command");
    assert_eq!(cmds[1]["line"], "PASS ****");
    assert!(!serde_json::to_string(&sim.s.events_json()).unwrap().contains("hunter2"));
}

#[test]
fn a_session_picked_up_mid_stream_resynchronises_at_a_line_boundary() {
    let mut cfg = lab_config(false);
    cfg.policy.pickup = true;
    let mut e = ftpgate::engine::Engine::new(cfg, 1);
    let mut s = Collect::default();
    let c = |seq: u32, payload: &'static [u8]| {
        tcp(
            CLIENT_MAC,
            GW_IN_MAC,
            Tcp { src: ("192.0.2.10", 40000), dst: ("198.51.100.20", 21), seq, ack: 7000, flags: "PA", payload },
        )
    };
    // The capture starts inside a PORT line: its tail must not count.
    let (v, _) = feed(&mut e, &mut s, 1, INSIDE, c(5000, b"RT 192,0,2,10,1,2\r\nPORT 192,0,2,10,100,4\r\n"));
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let pins = s.of_kind("pinhole_open");
    assert_eq!(pins.len(), 1, "only the complete line after the boundary");
    assert_eq!(pins[0]["port"], 100 * 256 + 4);
    assert_eq!(s.of_kind("connection_new")[0]["dst"], "198.51.100.20:21");
    // The server's side, first seen now, also starts unsynchronised.
    let srv = |seq: u32, payload: &'static [u8]| {
        tcp(
            SERVER_MAC,
            GW_OUT_MAC,
            Tcp { src: ("198.51.100.20", 21), dst: ("192.0.2.10", 40000), seq, ack: 5041, flags: "PA", payload },
        )
    };
    let (v, _) = feed(&mut e, &mut s, 2, OUTSIDE, srv(7000, b"200 PORT ok\r\n"));
    assert_eq!(v, Verdict::Forward(INSIDE));

    // Without pickup the same segment is a reply to nothing.
    let mut e = ftpgate::engine::Engine::new(lab_config(false), 1);
    let (v, _) = feed(&mut e, &mut s, 3, INSIDE, c(5000, b"PORT 192,0,2,10,100,4\r\n"));
    assert_eq!(v, Verdict::Drop(DropReason::NoConnection));
}

#[test]
fn pickup_orients_the_session_from_the_control_port() {
    let mut cfg = lab_config(false);
    cfg.policy.pickup = true;
    let mut e = ftpgate::engine::Engine::new(cfg, 1);
    let mut s = Collect::default();
    // First seen: the server's reply (outside → inside, which the rules would not allow as a new connection).
    let (v, _) = from_server(
        &mut e,
        &mut s,
        1,
        Tcp {
            src: ("198.51.100.20", 21),
            dst: ("192.0.2.10", 40000),
            seq: 7000,
            ack: 5000,
            flags: "PA",
            payload: b"230 ok\r\n",
        },
    );
    assert_eq!(v, Verdict::Forward(INSIDE), "judged as the client's connection to port 21");
    assert_eq!(s.of_kind("connection_new")[0]["src"], "192.0.2.10:40000");
    let (v, _) = from_client(
        &mut e,
        &mut s,
        2,
        Tcp {
            src: ("192.0.2.10", 40000),
            dst: ("198.51.100.20", 21),
            seq: 5000,
            ack: 7008,
            flags: "PA",
            payload: b"NOOP\r\nPASV\r\n",
        },
    );
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    from_server(
        &mut e,
        &mut s,
        3,
        Tcp {
            src: ("198.51.100.20", 21),
            dst: ("192.0.2.10", 40000),
            seq: 7008,
            ack: 5012,
            flags: "PA",
            payload: b"200 ok\r\n227 Entering Passive Mode (198,51,100,20,100,1)\r\n",
        },
    );
    let pins = s.of_kind("pinhole_open");
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0]["peer"], "192.0.2.10");
}

#[test]
fn a_grown_segment_is_split_to_fit_the_egress_mtu() {
    let mut cfg = lab_config(true);
    cfg.interfaces[OUTSIDE].mtu = 60; // 20 bytes of TCP payload per segment
    cfg.nat.ports = ftpgate::config::PortMode::Preserve;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();
    let before = sim.server_rcv;
    let (v, rest) = sim.raw_client("PA", sim.c_seq, sim.client_rcv, b"PORT 192,0,2,10,100,1\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let (iface, first) = sim.s.frames.last().cloned().unwrap();
    assert_eq!(iface, OUTSIDE);
    let (a, b) = (decode_verified(&first), decode_verified(&rest));
    assert!(first.len() - 14 <= 60 && rest.len() - 14 <= 60, "both fit the MTU");
    assert_eq!(a.seq, before);
    assert_eq!(b.seq, before.wrapping_add(a.payload.len() as u32));
    let mut line = a.payload.clone();
    line.extend_from_slice(&b.payload);
    assert_eq!(line, b"PORT 198,51,100,1,100,1\r\n");
}

#[test]
fn capture_loss_on_a_control_connection_resynchronises_at_the_next_line() {
    let mut sim = FtpSim::masq(lab_config(true));
    sim.greet();
    // "USER a\r\n" went by but is missing from the capture; the server's ACK shows it.
    let lost = 8u32;
    let after = sim.c_seq.wrapping_add(lost);
    let (v, _) = sim.raw_server("PA", sim.s_seq, after, b"331 ok\r\n");
    assert_eq!(v, Verdict::Forward(INSIDE));
    let (v, out) = sim.raw_client("PA", after, sim.client_rcv, b"PASS x\r\nPORT 192,0,2,10,100,1\r\n");
    assert_eq!(v, Verdict::Forward(OUTSIDE), "not held back forever as out of order");
    let gap = sim.s.of_kind("capture_gap");
    assert_eq!(gap.len(), 1);
    assert_eq!(gap[0]["bytes"], lost);
    assert_eq!(gap[0]["from"], "client");
    // The line right after the hole is not trusted; the next one is parsed.
    let pins = sim.s.of_kind("pinhole_open");
    assert_eq!(pins.len(), 1);
    let payload = decode_verified(&out).payload;
    assert!(payload.starts_with(b"PASS x\r\nPORT 198,51,100,1,"), "{}", String::from_utf8_lossy(&payload));

    // Live (in the path), a hole is real: the segment waits for the retransmission.
    let mut cfg = lab_config(true);
    cfg.interfaces[0].mac = Some(GW_IN_MAC);
    let mut live = FtpSim::masq(cfg);
    live.e.set_resolve_neighbors(true);
    live.greet();
    let after = live.c_seq.wrapping_add(lost);
    live.raw_server("PA", live.s_seq, after, b"331 ok\r\n");
    let (v, _) = live.raw_client("PA", after, live.client_rcv, b"PORT 192,0,2,10,100,1\r\n");
    assert_eq!(v, Verdict::Drop(DropReason::Invalid));
    assert!(live.s.of_kind("capture_gap").is_empty());
}
