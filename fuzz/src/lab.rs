//! The lab topology of tests/common (`tests/common/lab.rs`, included by
//! path) and frame builders, for the harnesses.

use std::net::IpAddr;

use etherparse::PacketBuilder;

#[path = "../../tests/common/lab.rs"]
mod topology;
pub use topology::*;

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
