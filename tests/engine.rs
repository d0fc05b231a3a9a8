//! The stateful firewall and NAT, frame by frame: masquerade both ways for
//! TCP, UDP and ICMP over IPv4 and IPv6, policy and no-connection drops,
//! ICMP errors translated with their inner header, TTL expiry, limits.
//! Every emitted frame's checksums are verified by etherparse.

mod common;
use common::*;
use ftpgate::engine::{Engine, Verdict};
use ftpgate::event::DropReason;

fn syn(src: (&'static str, u16), dst: (&'static str, u16), seq: u32) -> Tcp<'static> {
    Tcp { src, dst, seq, ack: 0, flags: "S", payload: b"" }
}

#[test]
fn masquerade_tcp_both_ways_with_valid_checksums() {
    for (client, server, public) in
        [("192.0.2.10", "198.51.100.20", "198.51.100.1"), ("2001:db8:1::10", "2001:db8:2::20", "2001:db8:2::1")]
    {
        let mut e = Engine::new(lab_config(true), 7);
        let mut s = Collect::default();
        let (v, out) =
            feed(&mut e, &mut s, 1, INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, syn((client, 40000), (server, 80), 1000)));
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let o = decode_verified(&out);
        assert_eq!(o.src, ip(public));
        assert_eq!(o.dst, ip(server));
        assert_eq!(o.dport, 80);
        assert_eq!(o.ttl, 63);
        assert_ne!(o.sport, 40000, "random ports by default");
        assert!(o.sport >= 1024);
        assert_eq!(&out[6..12], &GW_OUT_MAC, "leaves with the gateway's MAC");
        let nat = s.of_kind("nat");
        assert_eq!(nat.len(), 1);
        assert_eq!(s.of_kind("connection_new")[0]["from"], "inside");

        let sa = Tcp { src: (server, 80), dst: (public, o.sport), seq: 5000, ack: 1001, flags: "SA", payload: b"" };
        let (v, back) = feed(&mut e, &mut s, 2, OUTSIDE, tcp(SERVER_MAC, GW_OUT_MAC, sa));
        assert_eq!(v, Verdict::Forward(INSIDE));
        let b = decode_verified(&back);
        assert_eq!((b.src, b.sport, b.dst, b.dport), (ip(server), 80, ip(client), 40000));
        assert_eq!(&back[0..6], &CLIENT_MAC, "reply goes to the client's MAC, learned");

        let data = Tcp {
            src: (client, 40000),
            dst: (server, 80),
            seq: 1001,
            ack: 5001,
            flags: "PA",
            payload: b"GET / HTTP/1.0\r\n\r\n",
        };
        let (v, out) = feed(&mut e, &mut s, 3, INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, data));
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let d = decode_verified(&out);
        assert_eq!(d.sport, o.sport, "same mapping for the whole connection");
        assert_eq!(d.payload, b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(&out[0..6], &SERVER_MAC, "server MAC learned from its SYN-ACK");
    }
}

#[test]
fn masquerade_udp_and_ping() {
    let mut e = Engine::new(lab_config(true), 7);
    let mut s = Collect::default();
    let (v, out) = feed(
        &mut e,
        &mut s,
        1,
        INSIDE,
        udp(CLIENT_MAC, GW_IN_MAC, ("192.0.2.10", 5353), ("198.51.100.20", 53), b"query"),
    );
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    let o = decode_verified(&out);
    assert_eq!(o.src, ip("198.51.100.1"));
    let (v, back) = feed(
        &mut e,
        &mut s,
        2,
        OUTSIDE,
        udp(SERVER_MAC, GW_OUT_MAC, ("198.51.100.20", 53), ("198.51.100.1", o.sport), b"answer"),
    );
    assert_eq!(v, Verdict::Forward(INSIDE));
    let b = decode_verified(&back);
    assert_eq!((b.dst, b.dport), (ip("192.0.2.10"), 5353));

    for (c, sv, pubaddr) in
        [("192.0.2.10", "198.51.100.20", "198.51.100.1"), ("2001:db8:1::10", "2001:db8:2::20", "2001:db8:2::1")]
    {
        let (v, out) = feed(&mut e, &mut s, 3, INSIDE, ping(CLIENT_MAC, GW_IN_MAC, c, sv, 77, 1, false));
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let o = decode_verified(&out);
        assert_eq!(o.src, ip(pubaddr));
        let id = u16::from_be_bytes([out[out.len() - 8], out[out.len() - 7]]);
        let (v, back) = feed(&mut e, &mut s, 4, OUTSIDE, ping(SERVER_MAC, GW_OUT_MAC, sv, pubaddr, id, 1, true));
        assert_eq!(v, Verdict::Forward(INSIDE), "echo reply maps back ({c})");
        let b = decode_verified(&back);
        assert_eq!(b.dst, ip(c));
        assert_eq!(u16::from_be_bytes([back[back.len() - 8], back[back.len() - 7]]), 77, "identifier restored");
    }
}

#[test]
fn unsolicited_inbound_is_policy_and_stray_reply_is_no_connection() {
    let mut e = Engine::new(lab_config(true), 7);
    let mut s = Collect::default();
    let (v, _) = feed(
        &mut e,
        &mut s,
        1,
        OUTSIDE,
        tcp(SERVER_MAC, GW_OUT_MAC, syn(("198.51.100.20", 5555), ("192.0.2.10", 22), 1)),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    let d = &s.of_kind("drop")[0];
    assert_eq!(d["reason"], "policy");
    assert_eq!(d["src"], "198.51.100.20:5555");
    assert_eq!(d["packet"], 1);

    let stray =
        Tcp { src: ("198.51.100.20", 80), dst: ("198.51.100.1", 40000), seq: 9, ack: 10, flags: "SA", payload: b"" };
    let (v, _) = feed(&mut e, &mut s, 2, OUTSIDE, tcp(SERVER_MAC, GW_OUT_MAC, stray));
    assert_eq!(v, Verdict::Drop(DropReason::NoConnection));
    assert_eq!(s.of_kind("drop")[1]["reason"], "no_connection");

    // A rule decides: the event names it.
    let mut cfg = lab_config(true);
    cfg.policy.rules.insert(
        0,
        ftpgate::config::Rule {
            name: "no-telnet".into(),
            action: ftpgate::config::Action::Deny,
            from: None,
            to: None,
            source: vec![],
            destination: vec![],
            protocol: ftpgate::config::Protocol::Tcp,
            ports: vec![(23, 23)],
        },
    );
    let mut e = Engine::new(cfg, 7);
    let (v, _) = feed(
        &mut e,
        &mut s,
        3,
        INSIDE,
        tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.10", 4000), ("198.51.100.20", 23), 1)),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Policy));
    assert_eq!(s.of_kind("drop")[2]["rule"], "no-telnet");
}

#[test]
fn icmp_error_inner_header_is_translated_back() {
    let mut e = Engine::new(lab_config(true), 7);
    let mut s = Collect::default();
    let (_, out) = feed(
        &mut e,
        &mut s,
        1,
        INSIDE,
        udp(CLIENT_MAC, GW_IN_MAC, ("192.0.2.10", 5000), ("198.51.100.20", 9999), b"x"),
    );
    let o = decode_verified(&out);
    // The server answers port unreachable, quoting the translated datagram.
    let quoted = &out[14..14 + 20 + 8 + 1];
    let mut err = Vec::new();
    etherparse::PacketBuilder::ethernet2(SERVER_MAC, GW_OUT_MAC)
        .ipv4([198, 51, 100, 20], [198, 51, 100, 1], 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port))
        .write(&mut err, quoted)
        .unwrap();
    let (v, back) = feed(&mut e, &mut s, 2, OUTSIDE, err);
    assert_eq!(v, Verdict::Forward(INSIDE));
    let b = decode_verified(&back);
    assert_eq!(b.dst, ip("192.0.2.10"));
    // Inner header: source restored to the client, its checksum valid.
    let inner = &b.payload[..20];
    assert_eq!(&inner[12..16], &[192, 0, 2, 10]);
    let ih = etherparse::Ipv4Header::from_slice(inner).unwrap().0;
    assert_eq!(ih.header_checksum, ih.calc_header_checksum());
    assert_eq!(u16::from_be_bytes([b.payload[20], b.payload[21]]), 5000);
    assert_ne!(o.sport, 0);
}

#[test]
fn ttl_expiry_sends_time_exceeded() {
    let mut e = Engine::new(lab_config(true), 7);
    let mut s = Collect::default();
    let mut f = udp(CLIENT_MAC, GW_IN_MAC, ("192.0.2.10", 5000), ("198.51.100.20", 53), b"x");
    f[14 + 8] = 1; // TTL 1
    let h = etherparse::Ipv4Header::from_slice(&f[14..]).unwrap().0;
    let c = h.calc_header_checksum().to_be_bytes();
    f[24..26].copy_from_slice(&c);
    let (v, _) = feed(&mut e, &mut s, 1, INSIDE, f);
    assert_eq!(v, Verdict::Drop(DropReason::TtlExceeded));
    assert_eq!(s.frames.len(), 1);
    let (iface, te) = &s.frames[0];
    assert_eq!(*iface, INSIDE);
    let t = decode_verified(te);
    assert_eq!((t.src, t.dst), (ip("192.0.2.1"), ip("192.0.2.10")));
    assert_eq!(e.stats().generated, 1);
}

#[test]
fn connection_limit_drops_new_but_established_flows() {
    let mut cfg = lab_config(true);
    cfg.limits.max_connections = 2;
    let mut e = Engine::new(cfg, 7);
    let mut s = Collect::default();
    for port in [1000u16, 1001] {
        let (v, _) = feed(
            &mut e,
            &mut s,
            1,
            INSIDE,
            tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.10", port), ("198.51.100.20", 80), 1)),
        );
        assert_eq!(v, Verdict::Forward(OUTSIDE));
    }
    let (v, _) = feed(
        &mut e,
        &mut s,
        2,
        INSIDE,
        tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.10", 1002), ("198.51.100.20", 80), 1)),
    );
    assert_eq!(v, Verdict::Drop(DropReason::Limit));
    let again = Tcp { src: ("192.0.2.10", 1000), dst: ("198.51.100.20", 80), seq: 1, ack: 0, flags: "S", payload: b"" };
    let (v, _) = feed(&mut e, &mut s, 3, INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, again));
    assert_eq!(v, Verdict::Forward(OUTSIDE), "known connections keep flowing");
}

/// With several workers the limits bound the gateway, not each worker:
/// connections of one source spread over two workers count together, and
/// a connection that ends gives its place back to either worker.
#[test]
fn limits_count_connections_across_workers() {
    let mut cfg = lab_config(true);
    cfg.limits.max_connections_per_source = 3;
    cfg.limits.max_connections = 5;
    let mut w = Engine::workers(&cfg, 7, 2);
    let mut s = Collect::default();
    let open = |w: &mut Vec<Engine>, s: &mut Collect, k: usize, src: &'static str, port: u16, t: u64| {
        let f = tcp(CLIENT_MAC, GW_IN_MAC, syn((src, port), ("198.51.100.20", 80), 1));
        feed(&mut w[k], s, t, INSIDE, f).0
    };
    // Two on worker 0, one on worker 1: the source's three.
    assert_eq!(open(&mut w, &mut s, 0, "192.0.2.10", 1000, 1), Verdict::Forward(OUTSIDE));
    assert_eq!(open(&mut w, &mut s, 0, "192.0.2.10", 1001, 1), Verdict::Forward(OUTSIDE));
    assert_eq!(open(&mut w, &mut s, 1, "192.0.2.10", 1002, 1), Verdict::Forward(OUTSIDE));
    assert_eq!(
        open(&mut w, &mut s, 1, "192.0.2.10", 1003, 2),
        Verdict::Drop(DropReason::Limit),
        "per source, both workers"
    );
    assert_eq!(open(&mut w, &mut s, 0, "192.0.2.10", 1004, 2), Verdict::Drop(DropReason::Limit));
    // Another source: two more reach the gateway's five.
    assert_eq!(open(&mut w, &mut s, 1, "192.0.2.11", 1000, 3), Verdict::Forward(OUTSIDE));
    assert_eq!(open(&mut w, &mut s, 0, "192.0.2.11", 1001, 3), Verdict::Forward(OUTSIDE));
    assert_eq!(
        open(&mut w, &mut s, 1, "192.0.2.11", 1002, 3),
        Verdict::Drop(DropReason::Limit),
        "table full across workers"
    );
    // Worker 0's unanswered SYNs time out (worker 1's clock stays put):
    // their places are free for worker 1.
    for secs in [200, 201, 202] {
        w[0].tick(ftpgate::time::Nanos(secs * 1_000_000_000), &mut s);
    }
    assert_eq!(w[0].table().len(), 0);
    assert_eq!(open(&mut w, &mut s, 1, "192.0.2.10", 1005, 5), Verdict::Forward(OUTSIDE));
    assert_eq!(open(&mut w, &mut s, 1, "192.0.2.10", 1006, 5), Verdict::Forward(OUTSIDE));
    assert_eq!(open(&mut w, &mut s, 1, "192.0.2.10", 1007, 5), Verdict::Drop(DropReason::Limit));
}

#[test]
fn gateway_answers_arp_and_ping_for_itself() {
    let mut e = Engine::new(lab_config(true), 7);
    let mut s = Collect::default();
    let mut arp = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, [0xff; 6])
        .arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &CLIENT_MAC,
                &[192, 0, 2, 10],
                &[0; 6],
                &[192, 0, 2, 1],
            )
            .unwrap(),
        )
        .write(&mut arp)
        .unwrap();
    let (v, _) = feed(&mut e, &mut s, 1, INSIDE, arp);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(s.frames.len(), 1, "ARP reply sent");
    assert_eq!(&s.frames[0].1[0..6], &CLIENT_MAC);
    let (v, _) = feed(&mut e, &mut s, 2, INSIDE, ping(CLIENT_MAC, GW_IN_MAC, "192.0.2.10", "192.0.2.1", 1, 1, false));
    assert_eq!(v, Verdict::Consumed);
    let r = decode_verified(&s.frames[1].1);
    assert_eq!((r.src, r.dst), (ip("192.0.2.1"), ip("192.0.2.10")));
}

#[test]
fn preserve_keeps_the_client_port() {
    let mut cfg = lab_config(true);
    cfg.nat.ports = ftpgate::config::PortMode::Preserve;
    let mut e = Engine::new(cfg, 7);
    let mut s = Collect::default();
    let (_, out) = feed(
        &mut e,
        &mut s,
        1,
        INSIDE,
        tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.10", 40000), ("198.51.100.20", 80), 1)),
    );
    assert_eq!(decode_verified(&out).sport, 40000);
    // A second client with the same port gets another one.
    let (_, out) = feed(
        &mut e,
        &mut s,
        2,
        INSIDE,
        tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.11", 40000), ("198.51.100.20", 80), 1)),
    );
    assert_ne!(decode_verified(&out).sport, 40000);
}

fn arp_frame(op: etherparse::ArpOperation, sha: [u8; 6], spa: [u8; 4], tha: [u8; 6], tpa: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::new();
    etherparse::PacketBuilder::ethernet2(sha, if tha == [0; 6] { [0xff; 6] } else { tha })
        .arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                op,
                &sha,
                &spa,
                &tha,
                &tpa,
            )
            .unwrap(),
        )
        .write(&mut out)
        .unwrap();
    out
}

#[test]
fn live_mode_resolves_the_next_hop_before_forwarding() {
    let mut e = Engine::new(lab_config(true), 7);
    e.set_resolve_neighbors(true);
    let mut s = Collect::default();
    let (v, _) = feed(
        &mut e,
        &mut s,
        1,
        INSIDE,
        tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.10", 40000), ("198.51.100.20", 80), 1)),
    );
    assert_eq!(v, Verdict::Consumed, "held until the server's MAC is known");
    assert_eq!(s.frames.len(), 1);
    let (iface, req) = &s.frames[0];
    assert_eq!(*iface, OUTSIDE);
    assert_eq!(&req[12..14], &[0x08, 0x06], "an ARP request");
    assert_eq!(&req[38..42], &[198, 51, 100, 20], "for the on-link server");
    let reply =
        arp_frame(etherparse::ArpOperation::REPLY, SERVER_MAC, [198, 51, 100, 20], GW_OUT_MAC, [198, 51, 100, 1]);
    let (v, _) = feed(&mut e, &mut s, 2, OUTSIDE, reply);
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(s.frames.len(), 2, "the held SYN went out");
    let (iface, syn_out) = &s.frames[1];
    assert_eq!(*iface, OUTSIDE);
    assert_eq!(&syn_out[0..6], &SERVER_MAC);
    assert_eq!(decode_verified(syn_out).src, ip("198.51.100.1"));

    // A next hop that never answers: three tries, then the frame is dropped with a reason.
    let (v, _) =
        feed(&mut e, &mut s, 3, INSIDE, udp(CLIENT_MAC, GW_IN_MAC, ("192.0.2.10", 5000), ("198.51.100.99", 53), b"q"));
    assert_eq!(v, Verdict::Consumed);
    for sec in 4..8 {
        e.tick(ftpgate::time::Nanos(sec * 1_000_000_000), &mut s);
    }
    let arps = s.frames.iter().filter(|(_, f)| f[12..14] == [0x08, 0x06] && f[38..42] == [198, 51, 100, 99]).count();
    assert_eq!(arps, 3);
    let d = s.of_kind("drop");
    assert_eq!(d.last().unwrap()["reason"], "no_route");
    assert_eq!(e.stats().dropped_for(DropReason::NoRoute), 1);
}

#[test]
fn reload_keeps_allowed_connections_and_evicts_the_rest() {
    let mut e = Engine::new(lab_config(true), 7);
    let mut s = Collect::default();
    for (port, dport) in [(1000u16, 80u16), (1001, 22)] {
        feed(
            &mut e,
            &mut s,
            1,
            INSIDE,
            tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.10", port), ("198.51.100.20", dport), 1)),
        );
    }
    let mut cfg = lab_config(true);
    cfg.policy.rules[0].protocol = ftpgate::config::Protocol::Tcp;
    cfg.policy.rules[0].ports = vec![(80, 80)];
    assert_eq!(e.reload(cfg, &mut s), 1);
    assert_eq!(e.table().len(), 1);
    let end = s.of_kind("connection_end");
    assert_eq!(end[0]["reason"], "evicted");
    assert_eq!(end[0]["dst"], "198.51.100.20:22");
    let again = Tcp { src: ("192.0.2.10", 1000), dst: ("198.51.100.20", 80), seq: 1, ack: 0, flags: "S", payload: b"" };
    let (v, _) = feed(&mut e, &mut s, 2, INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, again));
    assert_eq!(v, Verdict::Forward(OUTSIDE));
}

#[test]
fn a_reused_source_port_starts_a_new_connection() {
    let mut e = Engine::new(lab_config(true), 7);
    let mut s = Collect::default();
    let open = |seq| tcp(CLIENT_MAC, GW_IN_MAC, syn(("192.0.2.10", 41000), ("198.51.100.20", 80), seq));
    let (_, first) = feed(&mut e, &mut s, 1, INSIDE, open(1000));
    let port = decode_verified(&first).sport;
    let sa = Tcp {
        src: ("198.51.100.20", 80),
        dst: ("198.51.100.1", port),
        seq: 9000,
        ack: 1001,
        flags: "SA",
        payload: b"",
    };
    feed(&mut e, &mut s, 2, OUTSIDE, tcp(SERVER_MAC, GW_OUT_MAC, sa));
    let ack =
        Tcp { src: ("192.0.2.10", 41000), dst: ("198.51.100.20", 80), seq: 1001, ack: 9001, flags: "A", payload: b"" };
    feed(&mut e, &mut s, 3, INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, ack));
    // A retransmitted opening SYN of a connection still opening is no reuse.
    let mut e2 = Engine::new(lab_config(true), 7);
    feed(&mut e2, &mut s, 1, INSIDE, open(1000));
    let (v, _) = feed(&mut e2, &mut s, 2, INSIDE, open(1000));
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(e2.table().len(), 1);
    // The old connection vanished without a FIN the gateway saw; the client
    // opens a new one from the same port with a new sequence number.
    let (v, _) = feed(&mut e, &mut s, 4, INSIDE, open(777_000_000));
    assert_eq!(v, Verdict::Forward(OUTSIDE), "not dropped as out of window");
    assert_eq!(e.table().len(), 1);
    assert_eq!(s.of_kind("connection_new").len(), 3);
}
