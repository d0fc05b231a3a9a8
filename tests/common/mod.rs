//! Shared helpers for engine-level tests: configurations, frame builders, a
//! collecting sink, and an independent checksum check (etherparse).
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use ftpgate::config::*;
use ftpgate::engine::{Engine, Sink, Verdict};
use ftpgate::event::Event;
use ftpgate::time::Nanos;

pub const INSIDE: usize = 0;
pub const OUTSIDE: usize = 1;
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
pub const GW_IN_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 1];
pub const GW_OUT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 2];

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The lab topology: inside 192.0.2.0/24 + 2001:db8:1::/64, outside
/// 198.51.100.0/24 + 2001:db8:2::/64; masquerade inside → outside.
pub fn lab_config(masquerade: bool) -> Config {
    Config {
        interfaces: vec![
            Interface {
                name: "inside".into(),
                device: Some("veth-gw-in".into()),
                addresses: vec!["192.0.2.1/24".parse().unwrap(), "2001:db8:1::1/64".parse().unwrap()],
                gateway: None,
                routes: vec![],
                mac: None,
                mtu: 1500,
            },
            Interface {
                name: "outside".into(),
                device: Some("veth-gw-out".into()),
                addresses: vec!["198.51.100.1/24".parse().unwrap(), "2001:db8:2::1/64".parse().unwrap()],
                gateway: Some(ip("198.51.100.254")),
                routes: vec![],
                mac: None,
                mtu: 1500,
            },
        ],
        nat: Nat {
            masquerade: if masquerade { vec![Masquerade { from: INSIDE, to: OUTSIDE }] } else { vec![] },
            forward: vec![],
            ports: PortMode::Random,
        },
        ftp: Ftp {
            control_ports: vec![21],
            active: Action::Allow,
            passive: Action::Allow,
            third_party: Action::Deny,
            pasv_mismatch: PasvMismatch::Fix,
            privileged_data_ports: Action::Deny,
            zero_address: ZeroAddress::Peer,
            pinhole_timeout: Duration::from_secs(30),
            max_pinholes: 4,
            strict: false,
            deny_commands: vec![],
            on_violation: OnViolation::Reset,
        },
        policy: Policy {
            pickup: false,
            default: Action::Deny,
            rules: vec![Rule {
                name: "inside-out".into(),
                action: Action::Allow,
                from: Some(INSIDE),
                to: Some(OUTSIDE),
                source: vec![],
                destination: vec![],
                protocol: Protocol::Any,
                ports: vec![],
            }],
        },
        limits: Limits { max_connections: 1_000_000, max_connections_per_source: 20_000 },
        timeouts: Timeouts {
            tcp_established: Duration::from_secs(5 * 86400),
            tcp_transitory: Duration::from_secs(120),
            udp: Duration::from_secs(30),
            icmp: Duration::from_secs(30),
        },
    }
}

/// The published-server layout: FTP server inside at 192.0.2.20, published on 198.51.100.1:21.
pub fn published_config() -> Config {
    let mut c = lab_config(true);
    c.nat.forward = vec![Forward { on: OUTSIDE, protocol: Protocol::Tcp, port: 21, to: "192.0.2.20:21".parse().unwrap() }];
    c.policy.rules.push(Rule {
        name: "ftp-in".into(),
        action: Action::Allow,
        from: Some(OUTSIDE),
        to: Some(INSIDE),
        source: vec![],
        destination: vec!["192.0.2.20/32".parse().unwrap()],
        protocol: Protocol::Tcp,
        ports: vec![(21, 21)],
    });
    c
}

#[derive(Default)]
pub struct Collect {
    pub frames: Vec<(usize, Vec<u8>)>,
    pub events: Vec<Event>,
}

impl Sink for Collect {
    fn transmit(&mut self, iface: usize, frame: &[u8]) {
        self.frames.push((iface, frame.to_vec()));
    }
    fn event(&mut self, ev: Event) {
        self.events.push(ev);
    }
}

impl Collect {
    pub fn events_json(&self) -> Vec<serde_json::Value> {
        self.events.iter().map(|e| serde_json::from_str(&e.to_json()).unwrap()).collect()
    }
    pub fn of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events_json().into_iter().filter(|e| e["event"] == kind).collect()
    }
}

pub struct Tcp<'a> {
    pub src: (&'a str, u16),
    pub dst: (&'a str, u16),
    pub seq: u32,
    pub ack: u32,
    pub flags: &'a str,
    pub payload: &'a [u8],
}

/// An Ethernet/IP/TCP frame. `flags` is any of "S", "A", "F", "R", "P".
pub fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], t: Tcp<'_>) -> Vec<u8> {
    let (s, d) = (ip(t.src.0), ip(t.dst.0));
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut b = match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64).tcp(t.src.1, t.dst.1, t.seq, 64240),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64).tcp(t.src.1, t.dst.1, t.seq, 64240),
        _ => panic!("mixed families"),
    };
    if t.flags.contains('S') {
        b = b.syn();
    }
    if t.flags.contains('A') {
        b = b.ack(t.ack);
    }
    if t.flags.contains('F') {
        b = b.fin();
    }
    if t.flags.contains('R') {
        b = b.rst();
    }
    if t.flags.contains('P') {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, t.payload).unwrap();
    out
}

pub fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: (&str, u16), dst: (&str, u16), payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = match (ip(src.0), ip(dst.0)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64).udp(src.1, dst.1),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64).udp(src.1, dst.1),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

pub fn ping(src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str, id: u16, seq: u16, reply: bool) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut out = Vec::new();
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let b = eth.ipv4(s.octets(), d.octets(), 64);
            let b = if reply { b.icmpv4_echo_reply(id, seq) } else { b.icmpv4_echo_request(id, seq) };
            b.write(&mut out, b"ping").unwrap();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let b = eth.ipv6(s.octets(), d.octets(), 64);
            let b = if reply { b.icmpv6_echo_reply(id, seq) } else { b.icmpv6_echo_request(id, seq) };
            b.write(&mut out, b"ping").unwrap();
        }
        _ => panic!(),
    }
    out
}

/// Decoded view of an emitted frame, with every checksum verified by etherparse.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload: Vec<u8>,
}

pub fn decode_verified(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("emitted frame parses");
    let (src, dst, ttl) = match p.net.as_ref().expect("has IP") {
        NetSlice::Ipv4(v4) => {
            let h = v4.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
            (IpAddr::V4(v4.header().source_addr()), IpAddr::V4(v4.header().destination_addr()), v4.header().ttl())
        }
        NetSlice::Ipv6(v6) => (
            IpAddr::V6(v6.header().source_addr()),
            IpAddr::V6(v6.header().destination_addr()),
            v6.header().hop_limit(),
        ),
        _ => panic!("not IP"),
    };
    let mut seen = Seen { src, dst, sport: 0, dport: 0, ttl, seq: 0, ack: 0, payload: vec![] };
    match p.transport.as_ref().expect("has transport") {
        TransportSlice::Tcp(t) => {
            let h = t.to_header();
            let want = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), t.payload()).unwrap(),
                (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), t.payload()).unwrap(),
                _ => unreachable!(),
            };
            assert_eq!(h.checksum, want, "TCP checksum");
            seen.sport = t.source_port();
            seen.dport = t.destination_port();
            seen.seq = t.sequence_number();
            seen.ack = t.acknowledgment_number();
            seen.payload = t.payload().to_vec();
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            if h.checksum != 0 {
                let want = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => h.calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload()).unwrap(),
                    (IpAddr::V6(s), IpAddr::V6(d)) => h.calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload()).unwrap(),
                    _ => unreachable!(),
                };
                assert_eq!(h.checksum, want, "UDP checksum");
            }
            seen.sport = u.source_port();
            seen.dport = u.destination_port();
            seen.payload = u.payload().to_vec();
        }
        TransportSlice::Icmpv4(i) => {
            let h = i.header();
            assert_eq!(h.checksum, h.icmp_type.calc_checksum(i.payload()), "ICMPv4 checksum");
            seen.payload = i.payload().to_vec();
        }
        TransportSlice::Icmpv6(i) => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else { unreachable!() };
            let h = i.header();
            assert_eq!(h.checksum, h.icmp_type.calc_checksum(s.octets(), d.octets(), i.payload()).unwrap(), "ICMPv6 checksum");
            seen.payload = i.payload().to_vec();
        }
        _ => panic!("unexpected transport"),
    }
    seen
}

/// Feed a frame; return the verdict and (for Forward) the emitted frame.
pub fn feed(e: &mut Engine, sink: &mut Collect, t: u64, ingress: usize, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
    let mut f = frame;
    let v = e.process(Nanos(t * 1_000_000), t, ingress, &mut f, sink);
    (v, f)
}

/// Both ends of an FTP control connection through the engine, each keeping
/// its own sequence numbers, so tests can check that what each end receives
/// is contiguous in its own view after the gateway's rewrites.
pub struct FtpSim {
    pub e: Engine,
    pub s: Collect,
    pub t: u64,
    pub client: (&'static str, u16),
    /// The server as the client addresses it.
    pub server_pub: (&'static str, u16),
    /// The server's real address.
    pub server: (&'static str, u16),
    /// The client as the server sees it (filled in from the SYN's translation).
    pub client_seen: (IpAddr, u16),
    pub client_side: usize,
    pub server_side: usize,
    pub c_seq: u32,
    pub s_seq: u32,
    /// Next byte each receiver expects, in its own view.
    pub server_rcv: u32,
    pub client_rcv: u32,
    /// Everything each receiver got, in order.
    pub server_got: Vec<u8>,
    pub client_got: Vec<u8>,
}

pub const C_ISN: u32 = 0xfffff000; // wraps during the test on purpose
pub const S_ISN: u32 = 0x10000000;

impl FtpSim {
    /// Masqueraded client 192.0.2.10 → server 198.51.100.20:21.
    pub fn masq(cfg: Config) -> FtpSim {
        Self::start(cfg, ("192.0.2.10", 40000), ("198.51.100.20", 21), ("198.51.100.20", 21), INSIDE, OUTSIDE)
    }

    /// Outside client 203.0.113.5 → published server 198.51.100.1:21 → 192.0.2.20:21.
    pub fn published(cfg: Config) -> FtpSim {
        Self::start(cfg, ("203.0.113.5", 50000), ("198.51.100.1", 21), ("192.0.2.20", 21), OUTSIDE, INSIDE)
    }

    pub fn start(
        cfg: Config,
        client: (&'static str, u16),
        server_pub: (&'static str, u16),
        server: (&'static str, u16),
        client_side: usize,
        server_side: usize,
    ) -> FtpSim {
        let mut sim = FtpSim {
            e: Engine::new(cfg, 99),
            s: Collect::default(),
            t: 0,
            client,
            server_pub,
            server,
            client_seen: (ip(client.0), client.1),
            client_side,
            server_side,
            c_seq: C_ISN,
            s_seq: S_ISN,
            server_rcv: 0,
            client_rcv: 0,
            server_got: vec![],
            client_got: vec![],
        };
        let (v, out) = sim.raw_client("S", C_ISN, 0, b"");
        assert_eq!(v, Verdict::Forward(server_side), "SYN passes");
        let o = decode_verified(&out);
        sim.client_seen = (o.src, o.sport);
        sim.c_seq = C_ISN.wrapping_add(1);
        sim.server_rcv = sim.c_seq;
        let (v, _) = sim.raw_server("SA", S_ISN, sim.c_seq, b"");
        assert_eq!(v, Verdict::Forward(client_side), "SYN-ACK passes");
        sim.s_seq = S_ISN.wrapping_add(1);
        sim.client_rcv = sim.s_seq;
        let (v, _) = sim.raw_client("A", sim.c_seq, sim.client_rcv, b"");
        assert_eq!(v, Verdict::Forward(server_side));
        sim
    }

    pub fn raw_client(&mut self, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> (Verdict, Vec<u8>) {
        self.t += 1;
        let f = tcp(CLIENT_MAC, GW_IN_MAC, Tcp { src: self.client, dst: self.server_pub, seq, ack, flags, payload });
        feed(&mut self.e, &mut self.s, self.t, self.client_side, f)
    }

    pub fn raw_server(&mut self, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> (Verdict, Vec<u8>) {
        self.t += 1;
        let dst = self.client_seen;
        let dst_s: &'static str = Box::leak(dst.0.to_string().into_boxed_str());
        let f = tcp(SERVER_MAC, GW_OUT_MAC, Tcp { src: self.server, dst: (dst_s, dst.1), seq, ack, flags, payload });
        feed(&mut self.e, &mut self.s, self.t, self.server_side, f)
    }

    /// The client sends `bytes` as one segment; returns the verdict and what
    /// the server received (checked contiguous in the server's view).
    pub fn client(&mut self, bytes: &[u8]) -> (Verdict, Option<Seen>) {
        let (v, out) = self.raw_client("PA", self.c_seq, self.client_rcv, bytes);
        self.c_seq = self.c_seq.wrapping_add(bytes.len() as u32);
        let seen = self.took(v, &out, true);
        (v, seen)
    }

    pub fn server(&mut self, bytes: &[u8]) -> (Verdict, Option<Seen>) {
        let (v, out) = self.raw_server("PA", self.s_seq, self.server_rcv, bytes);
        self.s_seq = self.s_seq.wrapping_add(bytes.len() as u32);
        let seen = self.took(v, &out, false);
        (v, seen)
    }

    /// Record a forwarded segment at its receiver, checking it starts where
    /// the receiver expects (or is an exact retransmission of what it has).
    pub fn took(&mut self, v: Verdict, out: &[u8], to_server: bool) -> Option<Seen> {
        if !matches!(v, Verdict::Forward(_)) {
            return None;
        }
        let o = decode_verified(out);
        let (rcv, got) = if to_server { (&mut self.server_rcv, &mut self.server_got) } else { (&mut self.client_rcv, &mut self.client_got) };
        if o.seq == *rcv {
            got.extend_from_slice(&o.payload);
            *rcv = rcv.wrapping_add(o.payload.len() as u32);
        } else {
            // A retransmission: it must repeat exactly what the receiver has.
            let back = rcv.wrapping_sub(o.seq) as usize;
            assert!(back <= got.len(), "segment at {} is not contiguous with {}", o.seq, *rcv);
            let from = got.len() - back;
            let overlap = o.payload.len().min(back);
            assert_eq!(&got[from..from + overlap], &o.payload[..overlap], "retransmission differs from the original");
            got.extend_from_slice(&o.payload[overlap..]);
            *rcv = rcv.wrapping_add((o.payload.len() - overlap) as u32);
        }
        Some(o)
    }

    pub fn greet(&mut self) {
        let (v, _) = self.server(b"220 ready\r\n");
        assert!(matches!(v, Verdict::Forward(_)));
    }
}
