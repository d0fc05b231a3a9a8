//! Frames the gateway originates: ARP replies, neighbour advertisements, echo
//! replies, TCP resets, ICMP/ICMPv6 errors. Allocating is fine here: these are
//! rare by construction (and rate-limited by the engine).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Arp, Mac, Meta};

/// ARP reply to `req` saying `req.tpa` is at `our_mac`.
pub fn arp_reply(req: &Arp, our_mac: Mac) -> Vec<u8> {
    let _ = (req, our_mac);
    todo!()
}

/// ARP request asking who has `target`.
pub fn arp_request(our_mac: Mac, our_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let _ = (our_mac, our_ip, target);
    todo!()
}

/// A TCP RST from `src` to `dst` (addresses and ports as given), with
/// `seq`/`ack`; the ACK flag is set when `ack` is Some. TTL/hop limit 64.
pub fn tcp_rst(src_mac: Mac, dst_mac: Mac, src: (IpAddr, u16), dst: (IpAddr, u16), seq: u32, ack: Option<u32>) -> Vec<u8> {
    let _ = (src_mac, dst_mac, src, dst, seq, ack);
    todo!()
}

/// ICMP time exceeded (type 11 code 0) or ICMPv6 time exceeded (type 3 code 0)
/// from `from` back to the sender of `orig` (the offending frame as received),
/// quoting as much of it as RFC 792 / RFC 4443 allow (v4: IP header + 8 bytes
/// is the minimum; quote up to 548 bytes v4, 1232 v6 total packet).
pub fn icmp_time_exceeded(orig: &[u8], meta: &Meta, from: IpAddr, src_mac: Mac, dst_mac: Mac) -> Vec<u8> {
    let _ = (orig, meta, from, src_mac, dst_mac);
    todo!()
}

/// ICMP destination unreachable (v4 type 3, v6 type 1) with `code`, same quoting rules.
pub fn icmp_unreachable(orig: &[u8], meta: &Meta, code: u8, from: IpAddr, src_mac: Mac, dst_mac: Mac) -> Vec<u8> {
    let _ = (orig, meta, code, from, src_mac, dst_mac);
    todo!()
}

/// Turn an echo request (ICMP 8 / ICMPv6 128) addressed to us into the echo
/// reply in place: swap addresses and MACs, set the type, fix checksums, TTL 64.
pub fn echo_reply_in_place(frame: &mut [u8], meta: &mut Meta) {
    let _ = (frame, meta);
    todo!()
}

/// ICMPv6 neighbour advertisement answering a solicitation for `target`.
pub fn neighbor_advert(our_mac: Mac, target: Ipv6Addr, to_mac: Mac, to_ip: Ipv6Addr) -> Vec<u8> {
    let _ = (our_mac, target, to_mac, to_ip);
    todo!()
}

/// ICMPv6 neighbour solicitation for `target` from `our_ip`.
pub fn neighbor_solicit(our_mac: Mac, our_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let _ = (our_mac, our_ip, target);
    todo!()
}
