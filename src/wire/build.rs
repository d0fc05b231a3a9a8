//! Frames the gateway originates: ARP replies, neighbour advertisements, echo
//! replies, TCP resets, ICMP/ICMPv6 errors. Allocating is fine here: these are
//! rare by construction (and rate-limited by the engine).
//!
//! Built frames carry no VLAN tag; `insert_vlan` adds one where needed. Whether
//! an ICMP error may be sent at all (not about an ICMP error, a non-first
//! fragment, a broadcast...) is the engine's call, not the builder's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::checksum::{self, Delta};
use super::{
    tcp_flags, Arp, Mac, Meta, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, PROTO_ICMP, PROTO_ICMPV6,
    PROTO_TCP,
};

const BROADCAST: Mac = [0xff; 6];
/// Largest ICMPv4 error datagram (RFC 1812 §4.3.2.3) and ICMPv6 error packet
/// (RFC 4443 §2.4 (c): the IPv6 minimum MTU).
const ICMP4_MAX: usize = 576;
const ICMP6_MAX: usize = 1280;
const TTL: u8 = 64;

fn eth(dst: Mac, src: Mac, ethertype: u16, cap: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(14 + cap);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&src);
    v.extend_from_slice(&ethertype.to_be_bytes());
    v
}

/// Append a 20-byte IPv4 header with its checksum.
fn ipv4_hdr(v: &mut Vec<u8>, src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize, ttl: u8) {
    let at = v.len();
    let total = (20 + payload_len) as u16;
    v.extend_from_slice(&[0x45, 0]);
    v.extend_from_slice(&total.to_be_bytes());
    // id 0 with DF: these datagrams are small and never fragmented (RFC 6864).
    v.extend_from_slice(&[0, 0, 0x40, 0, ttl, proto, 0, 0]);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
    let c = checksum::ipv4_header(&v[at..at + 20]);
    v[at + 10..at + 12].copy_from_slice(&c.to_be_bytes());
}

fn ipv6_hdr(v: &mut Vec<u8>, src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload_len: usize, hop: u8) {
    v.extend_from_slice(&[0x60, 0, 0, 0]);
    v.extend_from_slice(&(payload_len as u16).to_be_bytes());
    v.push(next);
    v.push(hop);
    v.extend_from_slice(&src.octets());
    v.extend_from_slice(&dst.octets());
}

fn put_csum(v: &mut [u8], at: usize, c: u16) {
    v[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn arp(op: u16, src_mac: Mac, dst_mac: Mac, sha: Mac, spa: Ipv4Addr, tha: Mac, tpa: Ipv4Addr) -> Vec<u8> {
    let mut v = eth(dst_mac, src_mac, ETHERTYPE_ARP, 46);
    v.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    v.extend_from_slice(&op.to_be_bytes());
    v.extend_from_slice(&sha);
    v.extend_from_slice(&spa.octets());
    v.extend_from_slice(&tha);
    v.extend_from_slice(&tpa.octets());
    // Pad to the Ethernet minimum, as hosts do for ARP.
    v.resize(60, 0);
    v
}

/// ARP reply to `req` saying `req.tpa` is at `our_mac`.
pub fn arp_reply(req: &Arp, our_mac: Mac) -> Vec<u8> {
    arp(2, our_mac, req.sha, our_mac, req.tpa, req.sha, req.spa)
}

/// ARP request asking who has `target`.
pub fn arp_request(our_mac: Mac, our_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp(1, our_mac, BROADCAST, our_mac, our_ip, [0; 6], target)
}

/// A TCP RST from `src` to `dst` (addresses and ports as given), with
/// `seq`/`ack`; the ACK flag is set when `ack` is Some. TTL/hop limit 64.
/// Returns an empty frame if the two addresses are of different families.
pub fn tcp_rst(
    src_mac: Mac,
    dst_mac: Mac,
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: Option<u32>,
) -> Vec<u8> {
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&src.1.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.1.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.unwrap_or(0).to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = tcp_flags::RST | if ack.is_some() { tcp_flags::ACK } else { 0 };
    let mut v;
    match (src.0, dst.0) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            v = eth(dst_mac, src_mac, ETHERTYPE_IPV4, 40);
            ipv4_hdr(&mut v, s, d, PROTO_TCP, 20, TTL);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            v = eth(dst_mac, src_mac, ETHERTYPE_IPV6, 60);
            ipv6_hdr(&mut v, s, d, PROTO_TCP, 20, TTL);
        }
        _ => {
            return Vec::new();
        }
    }
    let c = checksum::transport(src.0, dst.0, PROTO_TCP, &tcp, 16);
    put_csum(&mut tcp, 16, c);
    v.extend_from_slice(&tcp);
    v
}

/// ICMP error of type `ty`/`code` quoting the IP packet in `orig`, from
/// `from` to the packet's source. Empty if `from` is of the other family.
fn icmp_error(
    orig: &[u8],
    meta: &Meta,
    v4: (u8, u8),
    v6: (u8, u8),
    from: IpAddr,
    src_mac: Mac,
    dst_mac: Mac,
) -> Vec<u8> {
    // Quote the IP packet as its header says it ends: Ethernet padding is not part of it.
    let end = (meta.l3 + meta.ip_len).min(orig.len());
    let packet = orig.get(meta.l3..end).unwrap_or(&[]);
    match (from, meta.src) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let quote = &packet[..packet.len().min(ICMP4_MAX - 20 - 8)];
            let mut icmp = Vec::with_capacity(8 + quote.len());
            icmp.extend_from_slice(&[v4.0, v4.1, 0, 0, 0, 0, 0, 0]);
            icmp.extend_from_slice(quote);
            let c = checksum::plain(&icmp, 2);
            put_csum(&mut icmp, 2, c);
            let mut v = eth(dst_mac, src_mac, ETHERTYPE_IPV4, 20 + icmp.len());
            ipv4_hdr(&mut v, s, d, PROTO_ICMP, icmp.len(), TTL);
            v.extend_from_slice(&icmp);
            v
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let quote = &packet[..packet.len().min(ICMP6_MAX - 40 - 8)];
            let mut icmp = Vec::with_capacity(8 + quote.len());
            icmp.extend_from_slice(&[v6.0, v6.1, 0, 0, 0, 0, 0, 0]);
            icmp.extend_from_slice(quote);
            let c = checksum::transport(from, meta.src, PROTO_ICMPV6, &icmp, 2);
            put_csum(&mut icmp, 2, c);
            let mut v = eth(dst_mac, src_mac, ETHERTYPE_IPV6, 40 + icmp.len());
            ipv6_hdr(&mut v, s, d, PROTO_ICMPV6, icmp.len(), TTL);
            v.extend_from_slice(&icmp);
            v
        }
        _ => Vec::new(),
    }
}

/// ICMP time exceeded (type 11 code 0) or ICMPv6 time exceeded (type 3 code 0)
/// from `from` back to the sender of `orig` (the offending frame as received),
/// quoting as much of it as RFC 792 / RFC 4443 allow (v4: IP header + 8 bytes
/// is the minimum; quote up to 548 bytes v4, 1232 v6 total packet).
pub fn icmp_time_exceeded(orig: &[u8], meta: &Meta, from: IpAddr, src_mac: Mac, dst_mac: Mac) -> Vec<u8> {
    icmp_error(orig, meta, (11, 0), (3, 0), from, src_mac, dst_mac)
}

/// ICMP destination unreachable (v4 type 3, v6 type 1) with `code`, same quoting rules.
pub fn icmp_unreachable(orig: &[u8], meta: &Meta, code: u8, from: IpAddr, src_mac: Mac, dst_mac: Mac) -> Vec<u8> {
    icmp_error(orig, meta, (3, code), (1, code), from, src_mac, dst_mac)
}

/// Turn an echo request (ICMP 8 / ICMPv6 128) addressed to us into the echo
/// reply in place: swap addresses and MACs, set the type, fix checksums, TTL 64.
/// Anything else (not an echo request, a fragment) is left untouched.
pub fn echo_reply_in_place(frame: &mut [u8], meta: &mut Meta) {
    let Some(icmp) = meta.icmp else { return };
    let (req, rep) = if meta.v6 { (128, 129) } else { (8, 0) };
    if icmp.ty != req || meta.frag.is_some() || frame.len() < meta.l4 + 8 {
        return;
    }
    let (l3, l4) = (meta.l3, meta.l4);
    frame[0..6].copy_from_slice(&meta.eth_src);
    frame[6..12].copy_from_slice(&meta.eth_dst);
    // Swapping the addresses leaves every sum over them unchanged.
    let (sa, da, n) = if meta.v6 { (l3 + 8, l3 + 24, 16) } else { (l3 + 12, l3 + 16, 4) };
    for i in 0..n {
        frame.swap(sa + i, da + i);
    }
    if meta.v6 {
        frame[l3 + 7] = TTL;
    } else {
        let old = u16::from_be_bytes([frame[l3 + 8], frame[l3 + 9]]);
        let new = ((TTL as u16) << 8) | (old & 0xff);
        frame[l3 + 8..l3 + 10].copy_from_slice(&new.to_be_bytes());
        let c = u16::from_be_bytes([frame[l3 + 10], frame[l3 + 11]]);
        put_csum(frame, l3 + 10, checksum::update16(c, old, new));
    }
    let old = u16::from_be_bytes([frame[l4], frame[l4 + 1]]);
    let new = ((rep as u16) << 8) | (old & 0xff);
    frame[l4..l4 + 2].copy_from_slice(&new.to_be_bytes());
    let mut d = Delta::new();
    d.word(old, new);
    let c = u16::from_be_bytes([frame[l4 + 2], frame[l4 + 3]]);
    put_csum(frame, l4 + 2, d.apply(c));
    std::mem::swap(&mut meta.eth_src, &mut meta.eth_dst);
    std::mem::swap(&mut meta.src, &mut meta.dst);
    meta.ttl = TTL;
    if let Some(i) = meta.icmp.as_mut() {
        i.ty = rep;
    }
}

/// Ethernet address an IPv6 multicast group maps to (RFC 2464 §7).
pub fn ipv6_multicast_mac(group: Ipv6Addr) -> Mac {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// Solicited-node multicast address of `target` (RFC 4291 §2.7.1).
pub fn solicited_node(target: Ipv6Addr) -> Ipv6Addr {
    let o = target.octets();
    Ipv6Addr::from([0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15]])
}

/// An ND message (RFC 4861): ICMPv6 `ty`, 4 bytes of flags, the target and one
/// link-layer address option. Hop limit 255, so receivers know it is on-link.
#[allow(clippy::too_many_arguments)]
fn nd(
    ty: u8,
    flags: u8,
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    opt: u8,
) -> Vec<u8> {
    let mut icmp = [0u8; 32];
    icmp[0] = ty;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = opt;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&src_mac);
    let c = checksum::transport(IpAddr::V6(src), IpAddr::V6(dst), PROTO_ICMPV6, &icmp, 2);
    put_csum(&mut icmp, 2, c);
    let mut v = eth(dst_mac, src_mac, ETHERTYPE_IPV6, 72);
    ipv6_hdr(&mut v, src, dst, PROTO_ICMPV6, 32, 255);
    v.extend_from_slice(&icmp);
    v
}

/// ICMPv6 neighbour advertisement answering a solicitation for `target`.
/// Router flag set (the gateway routes), override set; solicited unless the
/// solicitation came from the unspecified address (duplicate address
/// detection), which is answered to all-nodes (RFC 4861 §7.2.4).
pub fn neighbor_advert(our_mac: Mac, target: Ipv6Addr, to_mac: Mac, to_ip: Ipv6Addr) -> Vec<u8> {
    const R: u8 = 0x80;
    const S: u8 = 0x40;
    const O: u8 = 0x20;
    if to_ip.is_unspecified() {
        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        nd(136, R | O, our_mac, ipv6_multicast_mac(all), target, all, target, 2)
    } else {
        nd(136, R | S | O, our_mac, to_mac, target, to_ip, target, 2)
    }
}

/// ICMPv6 neighbour solicitation for `target` from `our_ip`.
pub fn neighbor_solicit(our_mac: Mac, our_ip: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
    let group = solicited_node(target);
    nd(135, 0, our_mac, ipv6_multicast_mac(group), our_ip, group, target, 1)
}

/// Insert an 802.1Q tag with `vid` after the MAC addresses.
pub fn insert_vlan(frame: &mut Vec<u8>, vid: u16) {
    if frame.len() < 12 {
        return;
    }
    let tag = [(ETHERTYPE_VLAN >> 8) as u8, ETHERTYPE_VLAN as u8, ((vid >> 8) & 0x0f) as u8, vid as u8];
    frame.splice(12..12, tag);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse::tests::{eth, icmp, ip4, ip6, tcp, udp, A4, A6, B4, B6};
    use crate::wire::setters::tests::{finish, verify};
    use crate::wire::{parse_frame, FrameKind};

    const US: Mac = [0x02, 0xaa, 0, 0, 0, 1];
    const THEM: Mac = [0x02, 0xbb, 0, 0, 0, 2];

    fn ip(f: &[u8]) -> Meta {
        match parse_frame(f) {
            FrameKind::Ip(m) => m,
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn arp_request_and_reply() {
        let req = arp_request(US, A4.into(), B4.into());
        assert_eq!(req.len(), 60);
        assert_eq!(&req[0..6], &BROADCAST);
        let FrameKind::Arp(a) = parse_frame(&req) else { panic!() };
        assert_eq!(a, Arp { op: 1, sha: US, spa: A4.into(), tha: [0; 6], tpa: B4.into() });
        let asked = Arp { op: 1, sha: THEM, spa: B4.into(), tha: [0; 6], tpa: A4.into() };
        let rep = arp_reply(&asked, US);
        assert_eq!((&rep[0..6], &rep[6..12]), (&THEM[..], &US[..]));
        let FrameKind::Arp(a) = parse_frame(&rep) else { panic!() };
        assert_eq!(a, Arp { op: 2, sha: US, spa: A4.into(), tha: THEM, tpa: B4.into() });
    }

    #[test]
    fn tcp_resets() {
        for (s, d) in [(IpAddr::from(A4), IpAddr::from(B4)), (IpAddr::from(A6), IpAddr::from(B6))] {
            for ack in [None, Some(77)] {
                let f = tcp_rst(US, THEM, (s, 21), (d, 40000), 1234, ack);
                let m = ip(&f);
                verify(&f, &m);
                assert_eq!((m.src, m.dst, m.sport, m.dport, m.ttl), (s, d, 21, 40000, 64));
                let t = m.tcp.unwrap();
                let want = tcp_flags::RST | if ack.is_some() { tcp_flags::ACK } else { 0 };
                assert_eq!((t.flags, t.seq, t.ack, t.payload_len), (want, 1234, ack.unwrap_or(0), 0));
                assert_eq!((m.eth_src, m.eth_dst), (US, THEM));
            }
        }
        assert!(tcp_rst(US, THEM, (A4.into(), 1), (A6.into(), 2), 0, None).is_empty());
    }

    #[test]
    fn icmpv4_errors_quote_the_packet() {
        let mut orig = finish([eth(0x0800), ip4(6, &[], 0, &tcp(40000, 21, &[], b"USER a\r\n"))].concat());
        orig.extend([0; 6]); // Ethernet padding is not quoted
        let om = ip(&orig);
        let from: IpAddr = [203, 0, 113, 1].into();
        let f = icmp_time_exceeded(&orig, &om, from, US, THEM);
        let m = ip(&f);
        verify(&f, &m);
        let i = m.icmp.unwrap();
        assert_eq!((i.ty, i.code, m.src, m.dst), (11, 0, from, om.src));
        assert_eq!(&f[m.l4 + 8..], &orig[14..14 + om.ip_len]);
        let inner = i.inner.unwrap();
        assert_eq!((inner.src, inner.dst, inner.sport, inner.dport), (om.src, om.dst, 40000, 21));

        // A big packet is cut so the error is at most 576 bytes of IP.
        let big = finish([eth(0x0800), ip4(17, &[], 0, &udp(1, 2, &[7; 1400]))].concat());
        let f = icmp_unreachable(&big, &ip(&big), 13, from, US, THEM);
        let m = ip(&f);
        verify(&f, &m);
        assert_eq!((m.ip_len, m.icmp.unwrap().ty, m.icmp.unwrap().code), (576, 3, 13));
    }

    #[test]
    fn icmpv6_errors_quote_the_packet() {
        let orig = finish([eth(0x86dd), ip6(17, &udp(5, 6, &[1; 1500]))].concat());
        let om = ip(&orig);
        let from: IpAddr = "2001:db8::1".parse().unwrap();
        let f = icmp_unreachable(&orig, &om, 4, from, US, THEM);
        let m = ip(&f);
        verify(&f, &m);
        assert_eq!((m.ip_len, m.icmp.unwrap().ty, m.icmp.unwrap().code), (1280, 1, 4));
        assert_eq!(m.icmp.unwrap().inner.unwrap().sport, 5);
        let f = icmp_time_exceeded(
            &orig[..14 + 48 + 10],
            &ip(&finish([eth(0x86dd), ip6(17, &udp(5, 6, &[1; 10]))].concat())),
            from,
            US,
            THEM,
        );
        let m = ip(&f);
        verify(&f, &m);
        assert_eq!((m.icmp.unwrap().ty, m.l4_len), (3, 8 + 58));
    }

    #[test]
    fn echo_reply_v4_and_v6() {
        let mut f = finish([eth(0x0800), ip4(1, &[], 0, &icmp(8, 0, [0, 5, 0, 1], b"0123456789"))].concat());
        let mut m = ip(&f);
        let before = m;
        echo_reply_in_place(&mut f, &mut m);
        verify(&f, &m);
        assert_eq!((m.src, m.dst, m.eth_src, m.eth_dst), (before.dst, before.src, before.eth_dst, before.eth_src));
        assert_eq!((m.icmp.unwrap().ty, m.icmp.unwrap().echo_id, m.ttl), (0, Some(5), 64));

        let mut f = finish([eth(0x86dd), ip6(58, &icmp(128, 0, [0, 5, 0, 1], b"x"))].concat());
        let mut m = ip(&f);
        echo_reply_in_place(&mut f, &mut m);
        verify(&f, &m);
        assert_eq!((m.icmp.unwrap().ty, m.src), (129, IpAddr::from(B6)));

        // Not a request: untouched.
        let g = f.clone();
        echo_reply_in_place(&mut f, &mut m);
        assert_eq!(f, g);
    }

    #[test]
    fn neighbour_discovery() {
        let ours: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let target: Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
        let f = neighbor_solicit(US, ours, target);
        let m = ip(&f);
        verify(&f, &m);
        let group: Ipv6Addr = "ff02::1:ff12:3456".parse().unwrap();
        assert_eq!((m.dst, m.ttl, m.icmp.unwrap().ty), (IpAddr::V6(group), 255, 135));
        assert_eq!(m.eth_dst, [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]);
        assert_eq!(&f[m.l4 + 8..m.l4 + 24], &target.octets());
        assert_eq!(&f[m.l4 + 24..m.l4 + 32], &[1, 1, 2, 0xaa, 0, 0, 0, 1]);

        let peer: Ipv6Addr = "2001:db8::99".parse().unwrap();
        let f = neighbor_advert(US, ours, THEM, peer);
        let m = ip(&f);
        verify(&f, &m);
        assert_eq!((m.src, m.dst, m.ttl, m.eth_dst), (IpAddr::V6(ours), IpAddr::V6(peer), 255, THEM));
        assert_eq!((m.icmp.unwrap().ty, f[m.l4 + 4]), (136, 0xe0));
        assert_eq!(&f[m.l4 + 24..m.l4 + 26], &[2, 1]);

        // Answering duplicate address detection: to all-nodes, not solicited.
        let f = neighbor_advert(US, ours, THEM, Ipv6Addr::UNSPECIFIED);
        let m = ip(&f);
        verify(&f, &m);
        assert_eq!(
            (m.dst, m.eth_dst, f[m.l4 + 4]),
            ("ff02::1".parse::<IpAddr>().unwrap(), [0x33, 0x33, 0, 0, 0, 1], 0xa0)
        );
    }

    #[test]
    fn vlan_insertion() {
        let mut f = tcp_rst(US, THEM, (A4.into(), 1), (B4.into(), 2), 0, None);
        insert_vlan(&mut f, 300);
        let m = ip(&f);
        assert_eq!((m.vlan, m.l3), (Some(300), 18));
        verify(&f, &m);
    }
}
