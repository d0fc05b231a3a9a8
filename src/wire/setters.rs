//! In-place field setters. Each keeps the IPv4 header checksum and the L4
//! checksum (TCP, UDP, ICMPv6 pseudo-header; ICMP for inner-header edits)
//! correct by RFC 1624 incremental update, and updates `meta` to match.
//! A UDP checksum of zero (IPv4: "none") stays zero.
//! For later fragments (no L4 header) only the IP header is touched.

use std::net::IpAddr;

use super::{Mac, Meta};

pub fn set_macs(frame: &mut [u8], meta: &mut Meta, src: Mac, dst: Mac) {
    let _ = (frame, meta, src, dst);
    todo!()
}

/// Decrement TTL / hop limit by one. Caller checks it was > 1 first.
pub fn dec_ttl(frame: &mut [u8], meta: &mut Meta) {
    let _ = (frame, meta);
    todo!()
}

pub fn set_src_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    let _ = (frame, meta, ip);
    todo!()
}

pub fn set_dst_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    let _ = (frame, meta, ip);
    todo!()
}

/// TCP/UDP source port; for ICMP/ICMPv6 echo, the identifier.
pub fn set_src_port(frame: &mut [u8], meta: &mut Meta, port: u16) {
    let _ = (frame, meta, port);
    todo!()
}

/// TCP/UDP destination port; for ICMP/ICMPv6 echo, the identifier.
pub fn set_dst_port(frame: &mut [u8], meta: &mut Meta, port: u16) {
    let _ = (frame, meta, port);
    todo!()
}

pub fn set_tcp_seq(frame: &mut [u8], meta: &mut Meta, seq: u32) {
    let _ = (frame, meta, seq);
    todo!()
}

pub fn set_tcp_ack(frame: &mut [u8], meta: &mut Meta, ack: u32) {
    let _ = (frame, meta, ack);
    todo!()
}

/// Apply `f` to both edges of every SACK block in the TCP options.
pub fn map_sack(frame: &mut [u8], meta: &Meta, f: impl Fn(u32) -> u32) {
    let _ = (frame, meta, f);
    todo!()
}

/// Rewrite the source address of the packet quoted inside an ICMP error.
pub fn set_inner_src_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    let _ = (frame, meta, ip);
    todo!()
}
pub fn set_inner_dst_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    let _ = (frame, meta, ip);
    todo!()
}
pub fn set_inner_sport(frame: &mut [u8], meta: &mut Meta, port: u16) {
    let _ = (frame, meta, port);
    todo!()
}
pub fn set_inner_dport(frame: &mut [u8], meta: &mut Meta, port: u16) {
    let _ = (frame, meta, port);
    todo!()
}

/// Replace bytes `start..end` of the TCP payload (offsets relative to the
/// payload) with `new`. The frame may grow or shrink; IP lengths, the IPv4
/// header checksum and the TCP checksum are fixed and `meta` is updated.
/// Returns the change in length.
pub fn replace_tcp_payload(frame: &mut Vec<u8>, meta: &mut Meta, start: usize, end: usize, new: &[u8]) -> isize {
    let _ = (frame, meta, start, end, new);
    todo!()
}
