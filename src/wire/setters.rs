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
    if let Some(c) = rd16(frame, l3 + 10) {
        wr16(frame, l3 + 10, apply_sum(c, delta16(old, new)));
    }
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
    // In transit through a routing header the pseudo-header holds the final
    // destination (RFC 8200 §8.1), not the address being rewritten.
    let routed = dst && meta.v6 && in_transit_routing(frame, meta);
    if let Some((at, true, udp)) = l4_csum(meta) {
        if !routed {
            fix(frame, at, &d, udp);
        }
    }
    if dst {
        meta.dst = ip;
    } else {
        meta.src = ip;
    }
}

/// An IPv6 routing header with segments left, before the L4 header.
fn in_transit_routing(frame: &[u8], meta: &Meta) -> bool {
    if meta.l4 <= meta.l3 + 40 {
        return false;
    }
    let (mut nh, mut pos) = (frame.get(meta.l3 + 6).copied().unwrap_or(59), meta.l3 + 40);
    while pos + 4 <= meta.l4 && pos + 4 <= frame.len() {
        let len = match nh {
            43 if frame[pos + 3] != 0 => return true,
            0 | 43 | 60 => (frame[pos + 1] as usize + 1) * 8,
            51 => (frame[pos + 1] as usize + 2) * 4,
            44 => 8,
            _ => return false,
        };
        nh = frame[pos];
        pos += len;
    }
    false
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
                if kind == 5 && (len - 2).is_multiple_of(8) {
                    let mut e = pos + 2;
                    while e + 4 <= pos + len {
                        let old = u32::from_be_bytes([frame[e], frame[e + 1], frame[e + 2], frame[e + 3]]);
                        let new = f(old);
                        frame[e..e + 4].copy_from_slice(&new.to_be_bytes());
                        // Options start at an even offset but an edge may not
                        // (after a lone NOP): account for it byte-aligned.
                        if (e - meta.l4).is_multiple_of(2) {
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
                // Ports only when both are quoted, the parser's rule: else `meta` and the bytes disagree.
                PROTO_TCP | PROTO_UDP if inner.l4 + 4 <= end => inner.l4 + if dst { 2 } else { 0 },
                // As the parser: an echo id only for the ICMP of the packet's own family.
                PROTO_ICMP | PROTO_ICMPV6 if inner.l4 + 6 <= end && (inner.proto == PROTO_ICMPV6) == meta.v6 => {
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

/// `~old + new` for one changed 16-bit word (RFC 1624 eqn. 3's terms), unfolded.
#[inline(always)]
fn delta16(old: u16, new: u16) -> u32 {
    (!old) as u32 + new as u32
}

#[inline(always)]
fn delta32(old: u32, new: u32) -> u32 {
    delta16((old >> 16) as u16, (new >> 16) as u16) + delta16(old as u16, new as u16)
}

/// RFC 1624 eqn. 3 with the change summed but not yet folded: `d` < 2^20
/// (at most eight `delta16` terms), so two folding steps are always enough.
/// Folding once at the end gives bit-for-bit what `checksum::Delta` (which
/// folds after every word) gives: a nonzero ones'-complement sum folds to the
/// same value in 1..=0xFFFF however it is grouped, and the sum is zero only
/// if every term is.
#[inline(always)]
fn apply_sum(csum: u16, d: u32) -> u16 {
    let mut x = (!csum) as u32 + d;
    x = (x & 0xffff) + (x >> 16);
    x = (x & 0xffff) + (x >> 16);
    !(x as u16)
}

/// The NAT fast path: set source and destination address and port at once,
/// with one incremental update per checksum. IPv4 TCP/UDP outside fragments
/// is done here directly; anything else goes through the single setters.
#[inline]
pub fn translate(frame: &mut [u8], meta: &mut Meta, src: (IpAddr, u16), dst: (IpAddr, u16)) {
    let l3 = meta.l3;
    let simple =
        !meta.v6 && meta.frag.is_none() && matches!(meta.proto, PROTO_TCP | PROTO_UDP) && frame.len() >= meta.l4 + 8;
    let (IpAddr::V4(ns), IpAddr::V4(nd), true) = (src.0, dst.0, simple) else {
        if meta.src != src.0 {
            set_src_ip(frame, meta, src.0);
        }
        if meta.dst != dst.0 {
            set_dst_ip(frame, meta, dst.0);
        }
        if meta.sport != src.1 {
            set_src_port(frame, meta, src.1);
        }
        if meta.dport != dst.1 {
            set_dst_port(frame, meta, dst.1);
        }
        return;
    };
    let (Some(os), Some(od)) = (rd32(frame, l3 + 12), rd32(frame, l3 + 16)) else { return };
    let (ns, nd) = (u32::from(ns), u32::from(nd));
    // The changes summed once and folded once per checksum (see `apply_sum`).
    let ip = delta32(os, ns) + delta32(od, nd);
    frame[l3 + 12..l3 + 16].copy_from_slice(&ns.to_be_bytes());
    frame[l3 + 16..l3 + 20].copy_from_slice(&nd.to_be_bytes());
    if let Some(c) = rd16(frame, l3 + 10) {
        wr16(frame, l3 + 10, apply_sum(c, ip));
    }

    let l4 = meta.l4;
    let tp = ip + delta16(meta.sport, src.1) + delta16(meta.dport, dst.1);
    wr16(frame, l4, src.1);
    wr16(frame, l4 + 2, dst.1);
    let udp = meta.proto == PROTO_UDP;
    let at = if udp { l4 + 6 } else { l4 + 16 };
    if udp || meta.tcp.is_some() {
        if let Some(c) = rd16(frame, at) {
            let new = match (udp, c) {
                // UDP: no checksum stays none; a computed 0 is sent as 0xFFFF (RFC 768).
                (true, 0) => 0,
                (true, _) => match apply_sum(c, tp) {
                    0 => 0xffff,
                    n => n,
                },
                (false, _) => apply_sum(c, tp),
            };
            wr16(frame, at, new);
        }
    }
    meta.src = src.0;
    meta.dst = dst.0;
    meta.sport = src.1;
    meta.dport = dst.1;
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::checksum::{ipv4_header, plain, transport};
    use crate::wire::parse::tests::{eth, icmp, ip4, ip6, tcp, udp, A4, B4};
    use crate::wire::{parse_frame, FrameKind};
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rd(f: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    /// Fill in every checksum of a test frame from scratch.
    pub(crate) fn finish(mut f: Vec<u8>) -> Vec<u8> {
        let FrameKind::Ip(m) = parse_frame(&f) else { panic!("not ip") };
        if let Some(i) = m.icmp.and_then(|i| i.inner) {
            let end = m.l3 + m.ip_len;
            if !m.v6 {
                let ihl = ((f[i.l3] & 15) as usize) * 4;
                let c = ipv4_header(&f[i.l3..i.l3 + ihl]);
                f[i.l3 + 10..i.l3 + 12].copy_from_slice(&c.to_be_bytes());
            }
            let ilen = if m.v6 { 40 + rd(&f, i.l3 + 4) as usize } else { rd(&f, i.l3 + 2) as usize };
            if i.l3 + ilen <= end {
                let seg = i.l4..i.l3 + ilen;
                let (at, c) = match i.proto {
                    6 => (16, transport(i.src, i.dst, 6, &f[seg.clone()], 16)),
                    17 => (6, transport(i.src, i.dst, 17, &f[seg.clone()], 6)),
                    58 => (2, transport(i.src, i.dst, 58, &f[seg.clone()], 2)),
                    _ => (2, plain(&f[seg.clone()], 2)),
                };
                f[i.l4 + at..i.l4 + at + 2].copy_from_slice(&c.to_be_bytes());
            }
        }
        if !m.v6 {
            let ihl = ((f[m.l3] & 15) as usize) * 4;
            let c = ipv4_header(&f[m.l3..m.l3 + ihl]);
            f[m.l3 + 10..m.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        // A fragment's L4 checksum covers the whole datagram: not checkable here.
        if m.frag.is_none() {
            let seg = m.l4..m.l3 + m.ip_len;
            let (at, c) = match m.proto {
                6 => (16, transport(m.src, m.dst, 6, &f[seg.clone()], 16)),
                // UDP "no checksum" is left alone.
                17 if rd(&f, m.l4 + 6) == 0 => return f,
                17 => (6, transport(m.src, m.dst, 17, &f[seg.clone()], 6)),
                58 => (2, transport(m.src, m.dst, 58, &f[seg.clone()], 2)),
                1 => (2, plain(&f[seg.clone()], 2)),
                _ => return f,
            };
            f[m.l4 + at..m.l4 + at + 2].copy_from_slice(&c.to_be_bytes());
        }
        f
    }

    /// Every checksum recomputed from scratch equals the one in the frame;
    /// and the parse of the frame equals `meta`.
    pub(crate) fn verify(f: &[u8], meta: &Meta) {
        let FrameKind::Ip(m) = parse_frame(f) else { panic!("not ip: {:?}", parse_frame(f)) };
        assert_eq!(&m, meta, "meta out of step with the frame");
        let fresh = finish(f.to_vec());
        assert_eq!(f, &fresh[..], "a checksum is off");
    }

    fn v4(n: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(203, 0, 113, n))
    }
    fn v6(n: u16) -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbeef, 0, 0, 0, n, 1))
    }
    fn parse(f: &[u8]) -> Meta {
        match parse_frame(f) {
            FrameKind::Ip(m) => m,
            k => panic!("{k:?}"),
        }
    }

    #[test]
    fn tcp_ipv4_every_setter() {
        let mut f = finish([eth(0x0800), ip4(6, &[], 0x4000, &tcp(1025, 21, &[], b"RETR a\r\n"))].concat());
        let mut m = parse(&f);
        verify(&f, &m);
        set_macs(&mut f, &mut m, [2, 9, 9, 9, 9, 9], [2, 8, 8, 8, 8, 8]);
        dec_ttl(&mut f, &mut m);
        assert_eq!(m.ttl, 63);
        set_src_ip(&mut f, &mut m, v4(1));
        set_dst_ip(&mut f, &mut m, v4(2));
        set_src_port(&mut f, &mut m, 61000);
        set_dst_port(&mut f, &mut m, 2121);
        set_tcp_seq(&mut f, &mut m, 0xffff_fff0);
        set_tcp_ack(&mut f, &mut m, 7);
        verify(&f, &m);
        assert_eq!((m.src, m.dst, m.sport, m.dport), (v4(1), v4(2), 61000, 2121));
        assert_eq!((m.tcp.unwrap().seq, m.tcp.unwrap().ack), (0xffff_fff0, 7));
    }

    #[test]
    fn tcp_ipv6_with_extension_headers() {
        let mut body = vec![60, 0, 1, 4, 0, 0, 0, 0]; // hop-by-hop with padding
        body.extend([6, 0, 1, 4, 0, 0, 0, 0]); // destination options
        body.extend(tcp(40000, 21, &[], b"LIST\r\n"));
        let mut f = finish([eth(0x86dd), ip6(0, &body)].concat());
        let mut m = parse(&f);
        set_src_ip(&mut f, &mut m, v6(1));
        set_dst_ip(&mut f, &mut m, v6(2));
        set_dst_port(&mut f, &mut m, 10021);
        dec_ttl(&mut f, &mut m);
        set_tcp_ack(&mut f, &mut m, 1);
        verify(&f, &m);
        assert_eq!((m.ttl, m.dport), (63, 10021));
    }

    #[test]
    fn routing_header_in_transit_keeps_l4_checksum_on_dst_change() {
        // Segment routing header, segments left 1, final destination inside it.
        let mut rh = vec![6, 2, 4, 1, 0, 0, 0, 0];
        rh.extend(crate::wire::parse::tests::B6);
        let seg = tcp(1, 2, &[], b"x");
        let mut f = [eth(0x86dd), ip6(43, &[rh.clone(), seg].concat())].concat();
        let m0 = parse(&f);
        let final_dst = IpAddr::from(crate::wire::parse::tests::B6);
        let c = transport(m0.src, final_dst, 6, &f[m0.l4..], 16);
        f[m0.l4 + 16..m0.l4 + 18].copy_from_slice(&c.to_be_bytes());
        let mut m = parse(&f);
        set_dst_ip(&mut f, &mut m, v6(1));
        assert_eq!(rd(&f, m.l4 + 16), c);
        assert_eq!(parse(&f), m);
        // A source change still counts.
        set_src_ip(&mut f, &mut m, v6(2));
        assert_eq!(rd(&f, m.l4 + 16), transport(v6(2), final_dst, 6, &f[m.l4..], 16));
        // With no segments left the header's destination is the final one.
        f[14 + 40 + 3] = 0;
        let mut m = parse(&f);
        let c = transport(m.src, m.dst, 6, &f[m.l4..], 16);
        f[m.l4 + 16..m.l4 + 18].copy_from_slice(&c.to_be_bytes());
        set_dst_ip(&mut f, &mut m, v6(9));
        assert_eq!(rd(&f, m.l4 + 16), transport(m.src, v6(9), 6, &f[m.l4..], 16));
    }

    #[test]
    fn udp_zero_checksum_stays_zero_and_computed_zero_is_ffff() {
        let f0 = finish([eth(0x0800), ip4(17, &[], 0, &udp(53, 5353, b"abc"))].concat());
        let mut f = f0.clone();
        f[34 + 6] = 0;
        f[34 + 7] = 0;
        let mut m = parse(&f);
        set_src_ip(&mut f, &mut m, v4(77));
        set_src_port(&mut f, &mut m, 1);
        assert_eq!(rd(&f, 40), 0);
        verify(&f, &m);

        // Find a source port for which the full checksum comes out as 0 (sent as 0xFFFF).
        let p = (0..=u16::MAX)
            .find(|&p| {
                let mut g = f0.clone();
                g[34..36].copy_from_slice(&p.to_be_bytes());
                transport(A4.into(), B4.into(), 17, &g[34..], 6) == 0xffff
            })
            .unwrap();
        let mut f = f0.clone();
        let mut m = parse(&f);
        set_src_port(&mut f, &mut m, p);
        assert_eq!(rd(&f, 40), 0xffff);
        verify(&f, &m);
        // And going on from 0xFFFF still agrees with a full recomputation.
        set_dst_port(&mut f, &mut m, 4242);
        verify(&f, &m);
    }

    #[test]
    fn fragments_first_gets_l4_update_later_only_ip() {
        // A UDP datagram in two fragments; rewrite both and reassemble.
        let dgram = finish([eth(0x0800), ip4(17, &[], 0, &udp(5000, 53, &[0x5a; 40]))].concat())[34..].to_vec();
        // (ip4 fills in the header checksum; the L4 one is the datagram's.)
        let mut f1 = [eth(0x0800), ip4(17, &[], 0x2000, &dgram[..24])].concat();
        let mut f2 = [eth(0x0800), ip4(17, &[], 0x0003, &dgram[24..])].concat();
        let (mut m1, mut m2) = (parse(&f1), parse(&f2));
        for (f, m) in [(&mut f1, &mut m1), (&mut f2, &mut m2)] {
            set_src_ip(f, m, v4(5));
            set_dst_ip(f, m, v4(6));
            set_src_port(f, m, 7000);
            dec_ttl(f, m);
        }
        assert_eq!(m2.sport, 0);
        assert_eq!(&f2[34..], &dgram[24..], "later fragment data untouched");
        assert_eq!(rd(&f2, 24), ipv4_header(&f2[14..34]));
        assert_eq!(rd(&f1, 24), ipv4_header(&f1[14..34]));
        let whole = [&f1[34..], &f2[34..]].concat();
        assert_eq!(rd(&whole, 0), 7000);
        assert_eq!(rd(&whole, 6), transport(v4(5), v4(6), 17, &whole, 6));
        assert_eq!(parse(&f1), m1);
        assert_eq!(parse(&f2), m2);
    }

    #[test]
    fn icmp_echo_identifier() {
        let mut f = finish([eth(0x0800), ip4(1, &[], 0, &icmp(8, 0, [0, 1, 0, 2], b"abcdefg"))].concat());
        let mut m = parse(&f);
        set_src_ip(&mut f, &mut m, v4(9));
        set_src_port(&mut f, &mut m, 0x4000);
        verify(&f, &m);
        assert_eq!(m.icmp.unwrap().echo_id, Some(0x4000));
        assert_eq!((m.sport, m.dport), (0x4000, 0x4000));

        let mut f = finish([eth(0x86dd), ip6(58, &icmp(128, 0, [0, 1, 0, 2], b"abc"))].concat());
        let mut m = parse(&f);
        set_dst_ip(&mut f, &mut m, v6(3));
        set_dst_port(&mut f, &mut m, 99);
        verify(&f, &m);
        assert_eq!(m.icmp.unwrap().echo_id, Some(99));
    }

    #[test]
    fn sack_edges_even_and_odd_alignment() {
        let sack = |pre: &[u8]| {
            let mut o = pre.to_vec();
            o.extend([5, 18]);
            for e in [100u32, 200, 0xffff_fff0, 5] {
                o.extend(e.to_be_bytes());
            }
            while !o.len().is_multiple_of(4) {
                o.push(0);
            }
            o
        };
        for pre in [&[1u8, 1][..], &[1][..], &[2, 4, 5, 0xb4, 1][..]] {
            let opts = sack(pre);
            let mut f = finish([eth(0x0800), ip4(6, &[], 0, &tcp(1, 2, &opts, b"zz"))].concat());
            let m = parse(&f);
            map_sack(&mut f, &m, |x| x.wrapping_add(0x1000_0001));
            verify(&f, &m);
            let at = 54 + pre.len() + 2;
            let edge = u32::from_be_bytes(f[at + 8..at + 12].try_into().unwrap());
            assert_eq!(edge, 0xffff_fff0u32.wrapping_add(0x1000_0001));
        }
    }

    #[test]
    fn inner_setters_icmpv4() {
        // Whole offending packets quoted, so their checksums can be checked in full.
        let quoted = [
            finish([eth(0x0800), ip4(6, &[], 0, &tcp(2121, 20, &[], b"x"))].concat())[14..].to_vec(),
            finish([eth(0x0800), ip4(17, &[], 0, &udp(2121, 20, b"yy"))].concat())[14..].to_vec(),
            finish([eth(0x0800), ip4(1, &[], 0, &icmp(8, 0, [1, 2, 3, 4], b"z"))].concat())[14..].to_vec(),
        ];
        for q in quoted {
            let mut f = finish([eth(0x0800), ip4(1, &[], 0, &icmp(3, 3, [0; 4], &q))].concat());
            let mut m = parse(&f);
            set_inner_src_ip(&mut f, &mut m, v4(10));
            set_inner_dst_ip(&mut f, &mut m, v4(11));
            set_inner_sport(&mut f, &mut m, 40000);
            set_inner_dport(&mut f, &mut m, 21);
            set_dst_ip(&mut f, &mut m, v4(12));
            verify(&f, &m);
            let i = m.icmp.unwrap().inner.unwrap();
            assert_eq!((i.src, i.dst), (v4(10), v4(11)));
            if i.proto == 1 {
                assert_eq!((i.sport, i.dport), (21, 21));
            } else {
                assert_eq!((i.sport, i.dport), (40000, 21));
            }
        }
        // RFC 792 minimum quote (header + 8): the inner TCP checksum is not
        // there, the outer must still verify.
        let q = finish([eth(0x0800), ip4(6, &[], 0, &tcp(1, 2, &[], b""))].concat())[14..42].to_vec();
        let mut f = finish([eth(0x0800), ip4(1, &[], 0, &icmp(11, 0, [0; 4], &q))].concat());
        let mut m = parse(&f);
        set_inner_src_ip(&mut f, &mut m, v4(3));
        set_inner_sport(&mut f, &mut m, 3);
        let FrameKind::Ip(p) = parse_frame(&f) else { panic!() };
        assert_eq!(p, m);
        assert_eq!(rd(&f, 36), plain(&f[34..], 2));
        assert_eq!(rd(&f, 42 + 10), ipv4_header(&f[42..62]));
    }

    #[test]
    fn inner_setters_icmpv6() {
        let mut qt = ip6(6, &tcp(40000, 21, &[], b"a"));
        qt[8..24].copy_from_slice(&crate::wire::parse::tests::B6);
        let quoted = [
            finish([eth(0x86dd), qt].concat())[14..].to_vec(),
            finish([eth(0x86dd), ip6(17, &udp(1, 2, b"b"))].concat())[14..].to_vec(),
            finish([eth(0x86dd), ip6(58, &icmp(128, 0, [9, 9, 0, 1], b"c"))].concat())[14..].to_vec(),
        ];
        for q in quoted {
            let mut f = finish([eth(0x86dd), ip6(58, &icmp(1, 4, [0; 4], &q))].concat());
            let mut m = parse(&f);
            set_inner_dst_ip(&mut f, &mut m, v6(5));
            set_inner_src_ip(&mut f, &mut m, v6(6));
            set_inner_dport(&mut f, &mut m, 8021);
            set_src_ip(&mut f, &mut m, v6(7));
            verify(&f, &m);
            assert_eq!(m.icmp.unwrap().inner.unwrap().dport, 8021);
        }
    }

    #[test]
    fn replace_payload_grow_and_shrink() {
        for v6 in [false, true] {
            let seg = tcp(21, 40000, &[1, 1, 1, 0], b"227 Entering Passive Mode (192,0,2,10,4,1).\r\n");
            let mut f = if v6 {
                finish([eth(0x86dd), ip6(6, &seg)].concat())
            } else {
                let mut f = finish([eth(0x0800), ip4(6, &[], 0, &seg)].concat());
                f.extend([0u8; 4]); // padding goes away
                f
            };
            let mut m = parse(&f);
            let old = m.tcp.unwrap().payload_len;
            let d = replace_tcp_payload(&mut f, &mut m, 27, 41, b"203,0,113,200,195,80");
            assert_eq!(d, 6);
            assert_eq!(m.tcp.unwrap().payload_len, old + 6);
            verify(&f, &m);
            let t = m.tcp.unwrap();
            assert_eq!(&f[t.payload..], b"227 Entering Passive Mode (203,0,113,200,195,80).\r\n");
            let d = replace_tcp_payload(&mut f, &mut m, 4, 26, b"");
            assert_eq!(d, -22);
            verify(&f, &m);
            assert_eq!(&f[m.tcp.unwrap().payload..], b"227 (203,0,113,200,195,80).\r\n");
            // Out-of-range edits change nothing.
            let before = f.clone();
            assert_eq!(replace_tcp_payload(&mut f, &mut m, 5, 4, b"x"), 0);
            assert_eq!(replace_tcp_payload(&mut f, &mut m, 0, 1000, b"x"), 0);
            assert_eq!(f, before);
        }
    }

    #[test]
    fn stale_meta_does_not_panic() {
        let mut f = finish([eth(0x0800), ip4(6, &[], 0, &tcp(1, 2, &[], b"abc"))].concat());
        let mut m = parse(&f);
        f.truncate(30);
        let mut g = f.clone();
        set_src_ip(&mut g, &mut m, v4(1));
        set_src_port(&mut g, &mut m, 1);
        set_tcp_seq(&mut g, &mut m, 1);
        map_sack(&mut g, &m, |x| x);
        dec_ttl(&mut g, &mut m);
    }
}
