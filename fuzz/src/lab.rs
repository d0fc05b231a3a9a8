//! The lab topology of tests/common (inside 192.0.2.0/24 + 2001:db8:1::/64,
//! outside 198.51.100.0/24 + 2001:db8:2::/64) and frame builders, for the
//! harnesses. Kept apart from tests/common because a fuzz crate cannot use
//! an integration test's module.

use std::net::IpAddr;

use etherparse::PacketBuilder;
use ftpgate::config::*;

pub const INSIDE: usize = 0;
pub const OUTSIDE: usize = 1;
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x20];
pub const GW_IN_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 1];
pub const GW_OUT_MAC: [u8; 6] = [0x02, 0x66, 0x67, 0, 0, 2];

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn iface(name: &str, dev: &str, addrs: [&str; 2], gateway: Option<&str>) -> Interface {
    Interface {
        name: name.into(),
        device: Some(dev.into()),
        addresses: addrs.iter().map(|a| a.parse().expect("literal prefix")).collect(),
        gateway: gateway.map(ip),
        routes: vec![],
        mac: None,
        mtu: 1500,
    }
}

/// Masquerade inside → outside, policy inside → outside only; with
/// `published`, also 198.51.100.1:21 forwarded to 192.0.2.20:21.
pub fn config(published: bool) -> Config {
    let mut c = Config {
        interfaces: vec![
            iface("inside", "veth-gw-in", ["192.0.2.1/24", "2001:db8:1::1/64"], None),
            iface("outside", "veth-gw-out", ["198.51.100.1/24", "2001:db8:2::1/64"], Some("198.51.100.254")),
        ],
        nat: Nat {
            masquerade: vec![Masquerade { from: INSIDE, to: OUTSIDE }],
            forward: vec![],
            ports: PortMode::Random,
        },
        ftp: Ftp::default(),
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
        timeouts: Timeouts::default(),
    };
    if published {
        c.nat.forward = vec![Forward {
            on: OUTSIDE,
            protocol: Protocol::Tcp,
            port: 21,
            to: "192.0.2.20:21".parse().expect("literal"),
        }];
        c.policy.rules.push(Rule {
            name: "ftp-in".into(),
            action: Action::Allow,
            from: Some(OUTSIDE),
            to: Some(INSIDE),
            source: vec![],
            destination: vec!["192.0.2.20/32".parse().expect("literal")],
            protocol: Protocol::Tcp,
            ports: vec![(21, 21)],
        });
    }
    c
}

/// TCP flag bits for [`tcp`].
pub mod flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}

/// An Ethernet/IP/TCP frame with valid checksums. Mixed families give an empty frame.
#[allow(clippy::too_many_arguments)]
pub fn tcp(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    fl: u8,
    payload: &[u8],
) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut b = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64).tcp(src.1, dst.1, seq, 64240),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64).tcp(src.1, dst.1, seq, 64240),
        _ => return Vec::new(),
    };
    if fl & flags::SYN != 0 {
        b = b.syn();
    }
    if fl & flags::ACK != 0 {
        b = b.ack(ack);
    }
    if fl & flags::FIN != 0 {
        b = b.fin();
    }
    if fl & flags::RST != 0 {
        b = b.rst();
    }
    if fl & flags::PSH != 0 {
        b = b.psh();
    }
    let mut out = Vec::with_capacity(80 + payload.len());
    if b.write(&mut out, payload).is_err() {
        out.clear();
    }
    out
}

/// An Ethernet/IP/UDP frame with a valid checksum.
pub fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: (IpAddr, u16), dst: (IpAddr, u16), payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64).udp(src.1, dst.1),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64).udp(src.1, dst.1),
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    if b.write(&mut out, payload).is_err() {
        out.clear();
    }
    out
}
