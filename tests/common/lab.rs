//! The lab topology (inside 192.0.2.0/24 + 2001:db8:1::/64, outside
//! 198.51.100.0/24 + 2001:db8:2::/64, masquerade inside → outside) as a
//! `Config`, in one place for the integration tests (`tests/common`) and the
//! fuzz harnesses (`fuzz/src/lab.rs`, which include this file by path: a
//! fuzz crate cannot use an integration test's module). Needs only ftpgate.
#![allow(dead_code)]

use std::net::IpAddr;

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
