//! Property tests for `ftpgate::wire`: frames built by etherparse, rewritten by
//! random sequences of our setters, then checked by etherparse's own full
//! checksum computations (an independent implementation) and against a model
//! of the values that were set. Also: the parser never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{
    Icmpv4Header, Icmpv4Type, Icmpv6Slice, Icmpv6Type, Ipv4Header, Ipv6Header, PacketBuilder, SlicedPacket, TcpHeader,
    TcpOptionElement, UdpHeader,
};
use ftpgate::wire::{parse_frame, setters, FrameKind, Mac, Meta};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Inner {
    Tcp,
    Udp,
    Echo,
}

#[derive(Clone, Debug)]
enum Kind {
    Tcp { sack_pre: usize, sack: Vec<(u32, u32)> },
    Udp { zero_csum: bool },
    Echo,
    Error { inner: Inner, truncate: bool },
}

#[derive(Clone, Debug)]
struct Spec {
    v6: bool,
    vlan: Option<u16>,
    kind: Kind,
    a: [u8; 16],
    b: [u8; 16],
    ttl: u8,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    payload: Vec<u8>,
}

#[derive(Clone, Debug)]
enum Op {
    Macs(Mac, Mac),
    DecTtl,
    SrcIp([u8; 16]),
    DstIp([u8; 16]),
    SrcPort(u16),
    DstPort(u16),
    Seq(u32),
    Ack(u32),
    Sack(u32),
    InnerSrc([u8; 16]),
    InnerDst([u8; 16]),
    InnerSport(u16),
    InnerDport(u16),
    Replace(usize, usize, Vec<u8>),
    /// The NAT fast path: both addresses and ports at once.
    Translate([u8; 16], u16, [u8; 16], u16),
}

fn ip(v6: bool, a: [u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]))
    }
}

fn v4(a: [u8; 16]) -> [u8; 4] {
    [a[0], a[1], a[2], a[3]]
}

const MAC_A: Mac = [0x02, 0, 0, 0, 0, 0xa];
const MAC_B: Mac = [0x02, 0, 0, 0, 0, 0xb];

fn sack_options(pre: usize, blocks: &[(u32, u32)]) -> Vec<u8> {
    let mut o = vec![1u8; pre];
    o.push(5);
    o.push((2 + 8 * blocks.len()) as u8);
    for &(l, r) in blocks {
        o.extend(l.to_be_bytes());
        o.extend(r.to_be_bytes());
    }
    while !o.len().is_multiple_of(4) {
        o.push(0);
    }
    o
}

/// The IP packet (no Ethernet) an ICMP error quotes: sent from the error's
/// destination to somewhere else, as if it were the packet that failed.
fn quoted(s: &Spec, inner: &Inner) -> Vec<u8> {
    let (src, dst) = (s.b, s.a);
    let step = if s.v6 { PacketBuilder::ipv6(src, dst, 1) } else { PacketBuilder::ipv4(v4(src), v4(dst), 1) };
    let mut v = Vec::new();
    match inner {
        Inner::Tcp => step.tcp(s.dport, s.sport, s.seq, 1000).write(&mut v, &s.payload).unwrap(),
        Inner::Udp => step.udp(s.dport, s.sport).write(&mut v, &s.payload).unwrap(),
        Inner::Echo if s.v6 => step.icmpv6_echo_request(s.sport, 1).write(&mut v, &s.payload).unwrap(),
        Inner::Echo => step.icmpv4_echo_request(s.sport, 1).write(&mut v, &s.payload).unwrap(),
    }
    v
}

fn build(s: &Spec) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
    let step = if s.v6 { eth.ipv6(s.a, s.b, s.ttl) } else { eth.ipv4(v4(s.a), v4(s.b), s.ttl) };
    let mut f = Vec::new();
    match &s.kind {
        Kind::Tcp { sack_pre, sack } => {
            let mut t = step.tcp(s.sport, s.dport, s.seq, 4096).ack(s.ack);
            if !sack.is_empty() {
                t = t.options_raw(&sack_options(*sack_pre, sack)).unwrap();
            }
            t.write(&mut f, &s.payload).unwrap();
        }
        Kind::Udp { zero_csum } => {
            step.udp(s.sport, s.dport).write(&mut f, &s.payload).unwrap();
            if *zero_csum && !s.v6 {
                let at = f.len() - s.payload.len() - 2;
                f[at..at + 2].copy_from_slice(&[0, 0]);
            }
        }
        Kind::Echo if s.v6 => step.icmpv6_echo_request(s.sport, 7).write(&mut f, &s.payload).unwrap(),
        Kind::Echo => step.icmpv4_echo_request(s.sport, 7).write(&mut f, &s.payload).unwrap(),
        Kind::Error { inner, truncate } => {
            let mut q = quoted(s, inner);
            if *truncate {
                // RFC 792's minimum: the IP header and 8 bytes.
                q.truncate(if s.v6 { 48 } else { 28 });
            }
            if s.v6 {
                step.icmpv6_raw(1, 4, [0; 4]).write(&mut f, &q).unwrap();
            } else {
                step.icmpv4_raw(3, 3, [0; 4]).write(&mut f, &q).unwrap();
            }
        }
    }
    if let Some(vid) = s.vlan {
        f.splice(12..12, [0x81, 0x00, (vid >> 8) as u8 & 0x0f, vid as u8]);
    }
    f
}

/// What the frame should hold after the operations.
#[derive(Clone, Debug)]
struct Model {
    macs: (Mac, Mac),
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    sack: Vec<(u32, u32)>,
    payload: Vec<u8>,
    inner_src: IpAddr,
    inner_dst: IpAddr,
    inner_sport: u16,
    inner_dport: u16,
}

fn model(s: &Spec) -> Model {
    let sack = match &s.kind {
        Kind::Tcp { sack, .. } => sack.clone(),
        _ => Vec::new(),
    };
    // The quoted packet runs the other way; a quoted echo carries `sport` as its id.
    let (inner_sport, inner_dport) = match s.kind {
        Kind::Error { inner: Inner::Echo, .. } => (s.sport, s.sport),
        _ => (s.dport, s.sport),
    };
    Model {
        macs: (MAC_A, MAC_B),
        src: ip(s.v6, s.a),
        dst: ip(s.v6, s.b),
        ttl: s.ttl,
        sport: s.sport,
        dport: s.dport,
        seq: s.seq,
        ack: s.ack,
        sack,
        payload: s.payload.clone(),
        inner_src: ip(s.v6, s.b),
        inner_dst: ip(s.v6, s.a),
        inner_sport,
        inner_dport,
    }
}

fn meta_of(f: &[u8]) -> Meta {
    match parse_frame(f) {
        FrameKind::Ip(m) => m,
        k => panic!("not an IP frame: {k:?}"),
    }
}

/// Apply `op` to the frame and the model; the model only changes where the op applies.
fn apply(f: &mut Vec<u8>, m: &mut Meta, md: &mut Model, s: &Spec, op: &Op) {
    let tcp = matches!(s.kind, Kind::Tcp { .. });
    let echo = matches!(s.kind, Kind::Echo);
    let err = matches!(s.kind, Kind::Error { .. });
    let inner_echo = matches!(s.kind, Kind::Error { inner: Inner::Echo, .. });
    match op {
        Op::Macs(a, b) => {
            setters::set_macs(f, m, *a, *b);
            md.macs = (*a, *b);
        }
        Op::DecTtl => {
            if m.ttl > 1 {
                setters::dec_ttl(f, m);
                md.ttl -= 1;
            }
        }
        Op::SrcIp(a) => {
            setters::set_src_ip(f, m, ip(s.v6, *a));
            md.src = ip(s.v6, *a);
        }
        Op::DstIp(a) => {
            setters::set_dst_ip(f, m, ip(s.v6, *a));
            md.dst = ip(s.v6, *a);
        }
        Op::SrcPort(p) | Op::DstPort(p) => {
            let dst = matches!(op, Op::DstPort(_));
            if dst {
                setters::set_dst_port(f, m, *p);
            } else {
                setters::set_src_port(f, m, *p);
            }
            if echo {
                md.sport = *p;
                md.dport = *p;
            } else if !err {
                if dst {
                    md.dport = *p;
                } else {
                    md.sport = *p;
                }
            }
        }
        Op::Translate(a, sp, b, dp) => {
            setters::translate(f, m, (ip(s.v6, *a), *sp), (ip(s.v6, *b), *dp));
            md.src = ip(s.v6, *a);
            md.dst = ip(s.v6, *b);
            if echo {
                md.sport = *dp;
                md.dport = *dp;
            } else if !err {
                md.sport = *sp;
                md.dport = *dp;
            }
        }
        Op::Seq(v) => {
            setters::set_tcp_seq(f, m, *v);
            if tcp {
                md.seq = *v;
            }
        }
        Op::Ack(v) => {
            setters::set_tcp_ack(f, m, *v);
            if tcp {
                md.ack = *v;
            }
        }
        Op::Sack(d) => {
            let d = *d;
            setters::map_sack(f, m, |x| x.wrapping_add(d));
            for e in md.sack.iter_mut() {
                *e = (e.0.wrapping_add(d), e.1.wrapping_add(d));
            }
        }
        Op::InnerSrc(a) => {
            setters::set_inner_src_ip(f, m, ip(s.v6, *a));
            if err {
                md.inner_src = ip(s.v6, *a);
            }
        }
        Op::InnerDst(a) => {
            setters::set_inner_dst_ip(f, m, ip(s.v6, *a));
            if err {
                md.inner_dst = ip(s.v6, *a);
            }
        }
        Op::InnerSport(p) | Op::InnerDport(p) => {
            let dst = matches!(op, Op::InnerDport(_));
            if dst {
                setters::set_inner_dport(f, m, *p);
            } else {
                setters::set_inner_sport(f, m, *p);
            }
            if inner_echo {
                md.inner_sport = *p;
                md.inner_dport = *p;
            } else if err {
                if dst {
                    md.inner_dport = *p;
                } else {
                    md.inner_sport = *p;
                }
            }
        }
        Op::Replace(a, b, new) => {
            let len = md.payload.len();
            let (start, end) = if tcp && len > 0 {
                let (x, y) = (a % (len + 1), b % (len + 1));
                (x.min(y), x.max(y))
            } else {
                (0, 0)
            };
            let before = f.len();
            let d = setters::replace_tcp_payload(f, m, start, end, new);
            if tcp {
                md.payload.splice(start..end, new.iter().copied());
                assert_eq!(d, new.len() as isize - (end - start) as isize);
                assert_eq!(f.len() as isize, before as isize + d);
            } else {
                assert_eq!(d, 0);
            }
        }
    }
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// Check an L4 segment's checksum with etherparse, given its addresses;
/// returns the first four bytes (ports / ICMP header start) for field checks.
fn check_l4(v6: bool, proto: u8, src: IpAddr, dst: IpAddr, seg: &[u8]) {
    let (s4, d4) = (addr_bytes(src), addr_bytes(dst));
    match proto {
        6 => {
            let (h, rest) = TcpHeader::from_slice(seg).unwrap();
            let want = if v6 {
                h.calc_checksum_ipv6_raw(s4.try_into().unwrap(), d4.try_into().unwrap(), rest).unwrap()
            } else {
                h.calc_checksum_ipv4_raw(s4.try_into().unwrap(), d4.try_into().unwrap(), rest).unwrap()
            };
            assert_eq!(h.checksum, want, "tcp checksum");
        }
        17 => {
            let (h, rest) = UdpHeader::from_slice(seg).unwrap();
            if h.checksum == 0 && !v6 {
                return;
            }
            let want = if v6 {
                h.calc_checksum_ipv6_raw(s4.try_into().unwrap(), d4.try_into().unwrap(), rest).unwrap()
            } else {
                h.calc_checksum_ipv4_raw(s4.try_into().unwrap(), d4.try_into().unwrap(), rest).unwrap()
            };
            assert_eq!(h.checksum, want, "udp checksum");
        }
        1 => {
            let (h, rest) = Icmpv4Header::from_slice(seg).unwrap();
            assert_eq!(h.checksum, h.icmp_type.calc_checksum(rest), "icmp checksum");
        }
        58 => {
            let sl = Icmpv6Slice::from_slice(seg).unwrap();
            assert!(sl.is_checksum_valid(s4.try_into().unwrap(), d4.try_into().unwrap()), "icmpv6 checksum");
        }
        p => panic!("unexpected protocol {p}"),
    }
}

/// The independent check: etherparse decodes the frame, every checksum is
/// recomputed in full, and the fields hold what the model says.
fn check(f: &[u8], m: &Meta, md: &Model, s: &Spec) {
    assert_eq!(parse_frame(f), FrameKind::Ip(*m), "meta out of step");
    let sp = SlicedPacket::from_ethernet(f).unwrap();
    assert_eq!(&f[0..6], &md.macs.1);
    assert_eq!(&f[6..12], &md.macs.0);
    let (payload, src, dst, ttl) = match sp.net.unwrap() {
        etherparse::NetSlice::Ipv4(i) => {
            let h = i.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "ipv4 header checksum");
            (i.payload().payload, IpAddr::from(h.source), IpAddr::from(h.destination), h.time_to_live)
        }
        etherparse::NetSlice::Ipv6(i) => {
            let h = i.header().to_header();
            (i.payload().payload, IpAddr::from(h.source), IpAddr::from(h.destination), h.hop_limit)
        }
        n => panic!("{n:?}"),
    };
    assert_eq!((src, dst, ttl), (md.src, md.dst, md.ttl));
    let proto = m.proto;
    check_l4(s.v6, proto, src, dst, payload);
    match &s.kind {
        Kind::Tcp { .. } => {
            let (h, rest) = TcpHeader::from_slice(payload).unwrap();
            assert_eq!((h.source_port, h.destination_port), (md.sport, md.dport));
            assert_eq!((h.sequence_number, h.acknowledgment_number), (md.seq, md.ack));
            assert_eq!(rest, &md.payload[..]);
            let mut edges = Vec::new();
            for o in h.options_iterator() {
                if let Ok(TcpOptionElement::SelectiveAcknowledgement(first, more)) = o {
                    edges.push(first);
                    edges.extend(more.iter().flatten());
                }
            }
            assert_eq!(edges, md.sack);
        }
        Kind::Udp { zero_csum } => {
            let (h, _) = UdpHeader::from_slice(payload).unwrap();
            assert_eq!((h.source_port, h.destination_port), (md.sport, md.dport));
            if *zero_csum && !s.v6 {
                assert_eq!(h.checksum, 0, "no-checksum UDP must stay so");
            }
        }
        Kind::Echo => {
            if s.v6 {
                let (h, _) = etherparse::Icmpv6Header::from_slice(payload).unwrap();
                let Icmpv6Type::EchoRequest(e) = h.icmp_type else { panic!() };
                assert_eq!(e.id, md.sport);
            } else {
                let (h, _) = Icmpv4Header::from_slice(payload).unwrap();
                let Icmpv4Type::EchoRequest(e) = h.icmp_type else { panic!() };
                assert_eq!(e.id, md.sport);
            }
        }
        Kind::Error { truncate, .. } => {
            let q = &payload[8..];
            let (isrc, idst, iproto, l4, ilen) = if s.v6 {
                let (h, _) = Ipv6Header::from_slice(q).unwrap();
                (
                    IpAddr::from(h.source),
                    IpAddr::from(h.destination),
                    h.next_header.0,
                    40,
                    40 + h.payload_length as usize,
                )
            } else {
                let h = Ipv4Header::from_slice(q).unwrap().0;
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "inner ipv4 header checksum");
                let ihl = h.header_len();
                (IpAddr::from(h.source), IpAddr::from(h.destination), h.protocol.0, ihl, h.total_len as usize)
            };
            assert_eq!((isrc, idst), (md.inner_src, md.inner_dst));
            let p = &q[l4..];
            if iproto == 1 || iproto == 58 {
                assert_eq!(u16::from_be_bytes([p[4], p[5]]), md.inner_sport);
            } else {
                assert_eq!(u16::from_be_bytes([p[0], p[1]]), md.inner_sport);
                assert_eq!(u16::from_be_bytes([p[2], p[3]]), md.inner_dport);
            }
            if !truncate {
                assert_eq!(ilen, q.len());
                check_l4(s.v6, iproto, isrc, idst, &q[l4..ilen]);
            }
        }
    }
}

fn arb_addr() -> impl Strategy<Value = [u8; 16]> {
    // The extremes are where sums overflow and checksums turn into 0 or 0xFFFF.
    prop_oneof![6 => any::<[u8; 16]>(), 1 => Just([0xff; 16]), 1 => Just([0; 16])]
}

fn arb_kind() -> impl Strategy<Value = Kind> {
    let inner = prop_oneof![Just(Inner::Tcp), Just(Inner::Udp), Just(Inner::Echo)];
    prop_oneof![
        (0usize..4, prop::collection::vec(any::<(u32, u32)>(), 0..=4))
            .prop_map(|(sack_pre, sack)| Kind::Tcp { sack_pre, sack }),
        any::<bool>().prop_map(|zero_csum| Kind::Udp { zero_csum }),
        Just(Kind::Echo),
        (inner, any::<bool>()).prop_map(|(inner, truncate)| Kind::Error { inner, truncate }),
    ]
}

fn arb_spec() -> impl Strategy<Value = Spec> {
    (
        any::<bool>(),
        prop::option::of(1u16..4095),
        arb_kind(),
        arb_addr(),
        arb_addr(),
        1u8..=255,
        (any::<u16>(), any::<u16>(), any::<u32>(), any::<u32>()),
        prop::collection::vec(any::<u8>(), 0..120),
    )
        .prop_map(|(v6, vlan, kind, a, b, ttl, (sport, dport, seq, ack), payload)| Spec {
            v6,
            vlan,
            kind,
            a,
            b,
            ttl,
            sport,
            dport,
            seq,
            ack,
            payload,
        })
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (any::<Mac>(), any::<Mac>()).prop_map(|(a, b)| Op::Macs(a, b)),
        Just(Op::DecTtl),
        arb_addr().prop_map(Op::SrcIp),
        arb_addr().prop_map(Op::DstIp),
        any::<u16>().prop_map(Op::SrcPort),
        any::<u16>().prop_map(Op::DstPort),
        any::<u32>().prop_map(Op::Seq),
        any::<u32>().prop_map(Op::Ack),
        any::<u32>().prop_map(Op::Sack),
        arb_addr().prop_map(Op::InnerSrc),
        arb_addr().prop_map(Op::InnerDst),
        any::<u16>().prop_map(Op::InnerSport),
        any::<u16>().prop_map(Op::InnerDport),
        (any::<usize>(), any::<usize>(), prop::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(a, b, n)| Op::Replace(a, b, n)),
        (arb_addr(), any::<u16>(), arb_addr(), any::<u16>()).prop_map(|(a, sp, b, dp)| Op::Translate(a, sp, b, dp)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn setters_keep_every_checksum_right(s in arb_spec(), ops in prop::collection::vec(arb_op(), 0..12)) {
        let mut f = build(&s);
        let mut m = meta_of(&f);
        let mut md = model(&s);
        check(&f, &m, &md, &s);
        for op in &ops {
            apply(&mut f, &mut m, &mut md, &s, op);
            prop_assert_eq!(parse_frame(&f), FrameKind::Ip(m), "after {:?}", op);
        }
        check(&f, &m, &md, &s);

        // A minimal quote gets exactly the same edits as a full one, so what
        // is there of it must equal the front of the full quote.
        if let Kind::Error { inner, truncate: false } = &s.kind {
            let st = Spec { kind: Kind::Error { inner: inner.clone(), truncate: true }, ..s.clone() };
            let mut g = build(&st);
            let mut gm = meta_of(&g);
            let mut gmd = model(&st);
            for op in &ops {
                apply(&mut g, &mut gm, &mut gmd, &st, op);
            }
            check(&g, &gm, &gmd, &st);
            let (fq, gq) = (&f[m.l4 + 8..], &g[gm.l4 + 8..]);
            prop_assert_eq!(&fq[..gq.len()], gq);
        }
    }

    #[test]
    fn parse_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = parse_frame(&bytes);
        // And with plausible Ethernet/IP starts, to get deeper.
        for et in [[0x08, 0x00, 0x45], [0x86, 0xdd, 0x60], [0x81, 0x00, 0x00], [0x08, 0x06, 0x00]] {
            let mut g = vec![0u8; 12];
            g.extend_from_slice(&et[..2]);
            g.push(et[2]);
            g.extend_from_slice(&bytes);
            let _ = parse_frame(&g);
        }
    }

    #[test]
    fn mutated_frames_never_panic(
        s in arb_spec(),
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        ops in prop::collection::vec(arb_op(), 0..6),
    ) {
        let mut f = build(&s);
        for (i, b) in &flips {
            let at = i.index(f.len());
            f[at] = *b;
        }
        let n = cut.index(f.len() + 1);
        for g in [&f[..], &f[..n]] {
            // Whatever parses must also survive every setter, on its own meta.
            if let FrameKind::Ip(mut m) = parse_frame(g) {
                let mut g = g.to_vec();
                let mut md = model(&s);
                let s2 = Spec { v6: m.v6, ..s.clone() };
                // The model is meaningless here; only the absence of panics counts.
                for op in &ops {
                    apply_unchecked(&mut g, &mut m, &mut md, &s2, op);
                }
                let _ = parse_frame(&g);
            }
        }
    }
}

/// Like `apply` but without the assertions that only hold for well-formed input.
fn apply_unchecked(f: &mut Vec<u8>, m: &mut Meta, md: &mut Model, s: &Spec, op: &Op) {
    match op {
        Op::Replace(a, b, new) => {
            let len = m.tcp.map(|t| t.payload_len).unwrap_or(0);
            let (x, y) = (a % (len + 1), b % (len + 1));
            setters::replace_tcp_payload(f, m, x.min(y), x.max(y), new);
        }
        Op::DecTtl => {
            if m.ttl > 1 {
                setters::dec_ttl(f, m);
            }
        }
        _ => apply(f, m, md, s, op),
    }
}
