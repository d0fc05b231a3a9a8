//! In-place field setters. Each keeps the IPv4 header checksum and the L4
//! checksum (TCP, UDP, ICMPv6 pseudo-header; ICMP for inner-header edits)
//! correct by RFC 1624 incremental update, and updates `meta` to match.
//! A UDP checksum of zero (IPv4: "none") stays zero.
//! For later fragments (no L4 header) only the IP header is touched. On a
//! first fragment the L4 checksum is still updated: it covers the whole
//! datagram linearly, so an incremental edit keeps it right.
//!
//! The setters trust `meta` to come from `parse_frame` of this very frame (or
//! from earlier setters); offsets are still bounds-checked so a stale meta
//! cannot make them panic, only do nothing.

use std::net::IpAddr;

use super::checksum::{self, Delta};
use super::parse::inner as parse_inner;
use super::{Mac, Meta, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

#[inline(always)]
fn rd16(f: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*f.get(at)?, *f.get(at + 1)?]))
}

#[inline(always)]
fn wr16(f: &mut [u8], at: usize, v: u16) {
    if let Some(s) = f.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

#[inline(always)]
fn rd32(f: &[u8], at: usize) -> Option<u32> {
    let s = f.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Apply `d` to the 16-bit checksum at `at`; returns (old, new) so the same
/// change can be carried into an enclosing checksum.
#[inline]
fn fix(f: &mut [u8], at: usize, d: &Delta, udp: bool) -> Option<(u16, u16)> {
    let old = rd16(f, at)?;
    let new = if udp { d.apply_udp(old) } else { d.apply(old) };
    wr16(f, at, new);
    Some((old, new))
}

/// Where the L4 checksum of this packet sits and whether a pseudo-header
/// covers it; None when there is no L4 header to fix (later fragment,
/// unknown protocol).
#[inline]
fn l4_csum(meta: &Meta) -> Option<(usize, bool, bool)> {
    if meta.is_later_fragment() {
        return None;
    }
    // (offset, covered by the pseudo-header, is UDP)
    match meta.proto {
        PROTO_TCP if meta.tcp.is_some() => Some((meta.l4 + 16, true, false)),
        PROTO_UDP if meta.l4_len >= 8 => Some((meta.l4 + 6, true, true)),
        PROTO_ICMPV6 if meta.v6 && meta.icmp.is_some() => Some((meta.l4 + 2, true, false)),
        PROTO_ICMP if !meta.v6 && meta.icmp.is_some() => Some((meta.l4 + 2, false, false)),
        _ => None,
    }
}

pub fn set_macs(frame: &mut [u8], meta: &mut Meta, src: Mac, dst: Mac) {
    if frame.len() < 12 {
        return;
    }
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
    meta.eth_src = src;
    meta.eth_dst = dst;
}

/// Decrement TTL / hop limit by one. Caller checks it was > 1 first.
pub fn dec_ttl(frame: &mut [u8], meta: &mut Meta) {
    if meta.ttl == 0 {
        return;
    }
    let l3 = meta.l3;
    if meta.v6 {
        if let Some(b) = frame.get_mut(l3 + 7) {
            *b -= (*b > 0) as u8;
            meta.ttl = *b;
        }
        return;
    }
    // TTL shares its word with the protocol byte.
    let Some(old) = rd16(frame, l3 + 8) else { return };
    let ttl = (old >> 8) as u8;
    if ttl == 0 {
        return;
    }
    let new = old - 0x100;
    wr16(frame, l3 + 8, new);
    let mut d = Delta::new();
    d.word(old, new);
    fix(frame, l3 + 10, &d, false);
    meta.ttl = ttl - 1;
}

fn set_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr, dst: bool) {
    if ip.is_ipv6() != meta.v6 {
        debug_assert!(false, "address family differs from the packet's");
        return;
    }
    let l3 = meta.l3;
    let (old, at) = match (dst, meta.v6) {
        (false, false) => (meta.src, l3 + 12),
        (true, false) => (meta.dst, l3 + 16),
        (false, true) => (meta.src, l3 + 8),
        (true, true) => (meta.dst, l3 + 24),
    };
    let Some(slot) = frame.get_mut(at..at + if meta.v6 { 16 } else { 4 }) else { return };
    match ip {
        IpAddr::V4(a) => slot.copy_from_slice(&a.octets()),
        IpAddr::V6(a) => slot.copy_from_slice(&a.octets()),
    }
    let mut d = Delta::new();
    d.addr(old, ip);
    if !meta.v6 {
        fix(frame, l3 + 10, &d, false);
    }
    if let Some((at, true, udp)) = l4_csum(meta) {
        fix(frame, at, &d, udp);
    }
    if dst {
        meta.dst = ip;
    } else {
        meta.src = ip;
    }
}

pub fn set_src_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    set_ip(frame, meta, ip, false)
}

pub fn set_dst_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    set_ip(frame, meta, ip, true)
}

fn set_port(frame: &mut [u8], meta: &mut Meta, port: u16, dst: bool) {
    let Some((csum_at, _, udp)) = l4_csum(meta) else { return };
    let at = match meta.proto {
        PROTO_TCP | PROTO_UDP => meta.l4 + if dst { 2 } else { 0 },
        // Echo has one identifier standing for both ports.
        PROTO_ICMP | PROTO_ICMPV6 if meta.icmp.is_some_and(|i| i.echo_id.is_some()) => meta.l4 + 4,
        _ => return,
    };
    let Some(old) = rd16(frame, at) else { return };
    wr16(frame, at, port);
    let mut d = Delta::new();
    d.word(old, port);
    fix(frame, csum_at, &d, udp);
    if let Some(icmp) = meta.icmp.as_mut() {
        icmp.echo_id = Some(port);
        meta.sport = port;
        meta.dport = port;
    } else if dst {
        meta.dport = port;
    } else {
        meta.sport = port;
    }
}

/// TCP/UDP source port; for ICMP/ICMPv6 echo, the identifier.
pub fn set_src_port(frame: &mut [u8], meta: &mut Meta, port: u16) {
    set_port(frame, meta, port, false)
}

/// TCP/UDP destination port; for ICMP/ICMPv6 echo, the identifier.
pub fn set_dst_port(frame: &mut [u8], meta: &mut Meta, port: u16) {
    set_port(frame, meta, port, true)
}

fn set_tcp32(frame: &mut [u8], meta: &Meta, rel: usize, v: u32) -> bool {
    if meta.tcp.is_none() || meta.is_later_fragment() {
        return false;
    }
    let at = meta.l4 + rel;
    let Some(old) = rd32(frame, at) else { return false };
    frame[at..at + 4].copy_from_slice(&v.to_be_bytes());
    let mut d = Delta::new();
    d.word32(old, v);
    fix(frame, meta.l4 + 16, &d, false);
    true
}

pub fn set_tcp_seq(frame: &mut [u8], meta: &mut Meta, seq: u32) {
    if set_tcp32(frame, meta, 4, seq) {
        if let Some(t) = meta.tcp.as_mut() {
            t.seq = seq;
        }
    }
}

pub fn set_tcp_ack(frame: &mut [u8], meta: &mut Meta, ack: u32) {
    if set_tcp32(frame, meta, 8, ack) {
        if let Some(t) = meta.tcp.as_mut() {
            t.ack = ack;
        }
    }
}

/// Apply `f` to both edges of every SACK block in the TCP options.
pub fn map_sack(frame: &mut [u8], meta: &Meta, f: impl Fn(u32) -> u32) {
    let Some(tcp) = meta.tcp else { return };
    if meta.is_later_fragment() {
        return;
    }
    let end = (meta.l4 + tcp.header_len).min(frame.len());
    let mut pos = meta.l4 + 20;
    let mut d = Delta::new();
    while pos < end {
        match frame[pos] {
            0 => break,
            1 => pos += 1,
            kind => {
                let Some(&len) = frame.get(pos + 1) else { break };
                let len = len as usize;
                if len < 2 || pos + len > end {
                    break;
                }
                if kind == 5 && (len - 2) % 8 == 0 {
                    let mut e = pos + 2;
                    while e + 4 <= pos + len {
                        let old = u32::from_be_bytes([frame[e], frame[e + 1], frame[e + 2], frame[e + 3]]);
                        let new = f(old);
                        frame[e..e + 4].copy_from_slice(&new.to_be_bytes());
                        // Options start at an even offset but an edge may not
                        // (after a lone NOP): account for it byte-aligned.
                        if (e - meta.l4) % 2 == 0 {
                            d.word32(old, new);
                        } else {
                            let o = old.to_be_bytes();
                            let n = new.to_be_bytes();
                            d.word(o[0] as u16, n[0] as u16);
                            d.word(u16::from_be_bytes([o[1], o[2]]), u16::from_be_bytes([n[1], n[2]]));
                            d.word((o[3] as u16) << 8, (n[3] as u16) << 8);
                        }
                        e += 4;
                    }
                }
                pos += len;
            }
        }
    }
    if !d.is_empty() {
        fix(frame, meta.l4 + 16, &d, false);
    }
}

/// The checksum of the quoted packet's L4 header, if it lies within the
/// quote: (offset, covered by inner pseudo-header, is UDP).
fn inner_l4_csum(meta: &Meta, inner: &super::InnerMeta, end: usize) -> Option<(usize, bool, bool)> {
    let (rel, pseudo, udp) = match inner.proto {
        PROTO_TCP => (16, true, false),
        PROTO_UDP => (6, true, true),
        PROTO_ICMPV6 if meta.v6 => (2, true, false),
        PROTO_ICMP if !meta.v6 => (2, false, false),
        _ => return None,
    };
    (inner.l4 + rel + 2 <= end).then_some((inner.l4 + rel, pseudo, udp))
}

/// An edit of the packet quoted in an ICMP error. Every word it changes (the
/// field itself and the inner checksums it disturbs) is also carried into the
/// outer ICMP/ICMPv6 checksum, which covers the quote.
enum InnerEdit {
    Addr { dst: bool, ip: IpAddr },
    Port { dst: bool, port: u16 },
}

fn edit_inner(frame: &mut [u8], meta: &mut Meta, e: InnerEdit) {
    let Some(icmp) = meta.icmp else { return };
    let Some(inner) = icmp.inner else { return };
    if meta.is_later_fragment() {
        return;
    }
    let end = (meta.l3 + meta.ip_len).min(frame.len());
    // Re-derive whether the quoted L4 header is real (not fragment data).
    let Some((_, has_l4)) = parse_inner(frame, inner.l3, end, meta.v6) else { return };
    let outer_at = meta.l4 + 2;
    let mut outer = Delta::new();
    let mut new_inner = inner;
    match e {
        InnerEdit::Addr { dst, ip } => {
            if ip.is_ipv6() != meta.v6 {
                debug_assert!(false, "address family differs from the packet's");
                return;
            }
            let (old, at) = match (dst, meta.v6) {
                (false, false) => (inner.src, inner.l3 + 12),
                (true, false) => (inner.dst, inner.l3 + 16),
                (false, true) => (inner.src, inner.l3 + 8),
                (true, true) => (inner.dst, inner.l3 + 24),
            };
            let n = if meta.v6 { 16 } else { 4 };
            if at + n > end {
                return;
            }
            match ip {
                IpAddr::V4(a) => frame[at..at + 4].copy_from_slice(&a.octets()),
                IpAddr::V6(a) => frame[at..at + 16].copy_from_slice(&a.octets()),
            }
            let mut d = Delta::new();
            d.addr(old, ip);
            outer.addr(old, ip);
            if !meta.v6 {
                if let Some((o, n)) = fix(frame, inner.l3 + 10, &d, false) {
                    outer.word(o, n);
                }
            }
            if has_l4 {
                if let Some((at, true, udp)) = inner_l4_csum(meta, &inner, end) {
                    if let Some((o, n)) = fix(frame, at, &d, udp) {
                        outer.word(o, n);
                    }
                }
            }
            if dst {
                new_inner.dst = ip;
            } else {
                new_inner.src = ip;
            }
        }
        InnerEdit::Port { dst, port } => {
            if !has_l4 {
                return;
            }
            let at = match inner.proto {
                PROTO_TCP | PROTO_UDP => inner.l4 + if dst { 2 } else { 0 },
                PROTO_ICMP | PROTO_ICMPV6 if inner.l4 + 6 <= end => {
                    // Only an echo has an identifier (the parser set both ports from it).
                    let ty = frame[inner.l4];
                    if !super::parse::is_echo(meta.v6, ty) {
                        return;
                    }
                    inner.l4 + 4
                }
                _ => return,
            };
            let Some(old) = rd16(frame, at).filter(|_| at + 2 <= end) else { return };
            wr16(frame, at, port);
            let mut d = Delta::new();
            d.word(old, port);
            outer.word(old, port);
            if let Some((at, _, udp)) = inner_l4_csum(meta, &inner, end) {
                if let Some((o, n)) = fix(frame, at, &d, udp) {
                    outer.word(o, n);
                }
            }
            if matches!(inner.proto, PROTO_ICMP | PROTO_ICMPV6) {
                new_inner.sport = port;
                new_inner.dport = port;
            } else if dst {
                new_inner.dport = port;
            } else {
                new_inner.sport = port;
            }
        }
    }
    fix(frame, outer_at, &outer, false);
    if let Some(i) = meta.icmp.as_mut() {
        i.inner = Some(new_inner);
    }
}

/// Rewrite the source address of the packet quoted inside an ICMP error.
pub fn set_inner_src_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    edit_inner(frame, meta, InnerEdit::Addr { dst: false, ip })
}
pub fn set_inner_dst_ip(frame: &mut [u8], meta: &mut Meta, ip: IpAddr) {
    edit_inner(frame, meta, InnerEdit::Addr { dst: true, ip })
}
pub fn set_inner_sport(frame: &mut [u8], meta: &mut Meta, port: u16) {
    edit_inner(frame, meta, InnerEdit::Port { dst: false, port })
}
pub fn set_inner_dport(frame: &mut [u8], meta: &mut Meta, port: u16) {
    edit_inner(frame, meta, InnerEdit::Port { dst: true, port })
}

/// Replace bytes `start..end` of the TCP payload (offsets relative to the
/// payload) with `new`. The frame may grow or shrink; IP lengths, the IPv4
/// header checksum and the TCP checksum are fixed and `meta` is updated.
/// Returns the change in length.
///
/// Any Ethernet padding after the IP packet is dropped, so the frame ends
/// where the packet does. Nothing is changed (and 0 returned) when the packet
/// is not a whole TCP segment (fragments cannot be resized here), the range
/// is outside the payload, or the result would not fit the IP length field.
pub fn replace_tcp_payload(frame: &mut Vec<u8>, meta: &mut Meta, start: usize, end: usize, new: &[u8]) -> isize {
    let Some(tcp) = meta.tcp else { return 0 };
    if meta.frag.is_some() || start > end || end > tcp.payload_len {
        return 0;
    }
    let ip_end = meta.l3 + meta.ip_len;
    if ip_end > frame.len() || tcp.payload + tcp.payload_len != ip_end {
        return 0;
    }
    let delta = new.len() as isize - (end - start) as isize;
    let new_ip_len = (meta.ip_len as isize + delta) as usize;
    let limit = if meta.v6 { 40 + 0xffff } else { 0xffff };
    if new_ip_len > limit {
        return 0;
    }
    frame.truncate(ip_end);
    frame.splice(tcp.payload + start..tcp.payload + end, new.iter().copied());
    let l3 = meta.l3;
    if meta.v6 {
        wr16(frame, l3 + 4, (new_ip_len - 40) as u16);
    } else {
        wr16(frame, l3 + 2, new_ip_len as u16);
        let ihl = ((frame[l3] & 0x0f) as usize) * 4;
        let c = checksum::ipv4_header(&frame[l3..l3 + ihl]);
        wr16(frame, l3 + 10, c);
    }
    meta.ip_len = new_ip_len;
    meta.l4_len = (meta.l4_len as isize + delta) as usize;
    let c = checksum::transport(meta.src, meta.dst, PROTO_TCP, &frame[meta.l4..l3 + new_ip_len], 16);
    wr16(frame, meta.l4 + 16, c);
    if let Some(t) = meta.tcp.as_mut() {
        t.payload_len = (t.payload_len as isize + delta) as usize;
    }
    delta
}
