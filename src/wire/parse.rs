//! Frame parsing: Ethernet (+802.1Q) → ARP | IPv4 | IPv6 (+extension headers)
//! → TCP | UDP | ICMP | ICMPv6 (errors carry an inner header).
//! The result is a `Meta`: addresses, ports and byte offsets into the frame, so
//! the setters can rewrite fields in place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Mac, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// IP fragment information (IPv4 header fields or the IPv6 fragment header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frag {
    /// IPv4 identification (widened) or IPv6 fragment identification.
    pub id: u32,
    /// Fragment offset in bytes.
    pub offset: u16,
    pub more: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpInfo {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// TCP header length in bytes (data offset * 4).
    pub header_len: usize,
    /// Offset of the payload in the frame.
    pub payload: usize,
    /// Payload length (bounded by the IP length, not the frame length).
    pub payload_len: usize,
}

/// The header inside an ICMP/ICMPv6 error (dest unreachable, time exceeded,
/// parameter problem, packet too big): the packet that caused the error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerMeta {
    /// Offset of the inner IP header in the frame.
    pub l3: usize,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Offset of the inner L4 header in the frame (may be truncated).
    pub l4: usize,
    /// Inner L4 ports when at least 4 bytes of it are present; ICMP echo id in both.
    pub sport: u16,
    pub dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpInfo {
    pub ty: u8,
    pub code: u8,
    /// Echo request/reply identifier (ICMP types 0/8, ICMPv6 128/129).
    pub echo_id: Option<u16>,
    /// Present for error messages whose quoted header parsed.
    pub inner: Option<InnerMeta>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Ethernet destination and source.
    pub eth_dst: Mac,
    pub eth_src: Mac,
    pub vlan: Option<u16>,
    /// Offset of the IP header in the frame.
    pub l3: usize,
    pub v6: bool,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL or hop limit.
    pub ttl: u8,
    /// Final upper-layer protocol number (after IPv6 extension headers).
    pub proto: u8,
    /// Total length of the IP packet per its header (IPv4 total length, IPv6 40 + payload length).
    pub ip_len: usize,
    /// Offset of the L4 header in the frame (meaningless for non-first fragments).
    pub l4: usize,
    /// Length of L4 header + payload within this packet.
    pub l4_len: usize,
    pub frag: Option<Frag>,
    /// TCP/UDP ports; for ICMP echo, the identifier in both; else 0.
    pub sport: u16,
    pub dport: u16,
    pub tcp: Option<TcpInfo>,
    pub icmp: Option<IcmpInfo>,
}

impl Meta {
    /// True for a fragment that is not the first (it carries no L4 header).
    pub fn is_later_fragment(&self) -> bool {
        matches!(self.frag, Some(f) if f.offset != 0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    pub sha: Mac,
    pub spa: std::net::Ipv4Addr,
    pub tha: Mac,
    pub tpa: std::net::Ipv4Addr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    Ip(Meta),
    Arp(Arp),
    /// A well-formed Ethernet frame of another EtherType.
    Other { ethertype: u16 },
    /// Could not be parsed; the string says why, for the `invalid` drop's detail.
    Malformed(&'static str),
}

/// 802.1ad service tag, tolerated as the outer of two tags.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// More IPv6 extension headers than this is treated as an attack, not a packet.
const MAX_V6_EXT: usize = 8;

type Res<T> = Result<T, &'static str>;

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[inline(always)]
fn mac(b: &[u8], at: usize) -> Mac {
    [b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]]
}

#[inline(always)]
fn v4addr(b: &[u8], at: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
}

#[inline(always)]
fn v6addr(b: &[u8], at: usize) -> IpAddr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[at..at + 16]);
    IpAddr::V6(Ipv6Addr::from(o))
}

/// ICMP types whose body quotes the offending packet.
#[inline]
pub(crate) fn is_icmp_error(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 1..=4)
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

#[inline]
pub(crate) fn is_echo(v6: bool, ty: u8) -> bool {
    if v6 {
        matches!(ty, 128 | 129)
    } else {
        matches!(ty, 0 | 8)
    }
}

/// Parse an Ethernet frame. Never panics, never allocates.
pub fn parse_frame(frame: &[u8]) -> FrameKind {
    match parse(frame) {
        Ok(k) => k,
        Err(why) => FrameKind::Malformed(why),
    }
}

fn parse(f: &[u8]) -> Res<FrameKind> {
    if f.len() < 14 {
        return Err("short ethernet header");
    }
    let mut et = be16(f, 12);
    let mut off = 14;
    let mut vlan = None;
    if et == ETHERTYPE_QINQ {
        if f.len() < off + 4 {
            return Err("short vlan tag");
        }
        vlan = Some(be16(f, off) & 0x0fff);
        et = be16(f, off + 2);
        off += 4;
    }
    if et == ETHERTYPE_VLAN {
        if f.len() < off + 4 {
            return Err("short vlan tag");
        }
        // With 802.1ad + 802.1Q the customer tag (inner) is the one we report.
        vlan = Some(be16(f, off) & 0x0fff);
        et = be16(f, off + 2);
        off += 4;
    }
    if et == ETHERTYPE_VLAN || et == ETHERTYPE_QINQ {
        return Err("too many vlan tags");
    }
    match et {
        ETHERTYPE_IPV4 => ipv4(f, off, vlan).map(FrameKind::Ip),
        ETHERTYPE_IPV6 => ipv6(f, off, vlan).map(FrameKind::Ip),
        ETHERTYPE_ARP => arp(f, off).map(FrameKind::Arp),
        _ => Ok(FrameKind::Other { ethertype: et }),
    }
}

fn arp(f: &[u8], off: usize) -> Res<Arp> {
    if f.len() < off + 28 {
        return Err("short arp packet");
    }
    if be16(f, off) != 1 || be16(f, off + 2) != ETHERTYPE_IPV4 || f[off + 4] != 6 || f[off + 5] != 4 {
        return Err("arp not ethernet/ipv4");
    }
    let ip = |at: usize| Ipv4Addr::new(f[at], f[at + 1], f[at + 2], f[at + 3]);
    Ok(Arp {
        op: be16(f, off + 6),
        sha: mac(f, off + 8),
        spa: ip(off + 14),
        tha: mac(f, off + 18),
        tpa: ip(off + 24),
    })
}

fn blank_meta(f: &[u8], vlan: Option<u16>, l3: usize, v6: bool, src: IpAddr, dst: IpAddr) -> Meta {
    Meta {
        eth_dst: mac(f, 0),
        eth_src: mac(f, 6),
        vlan,
        l3,
        v6,
        src,
        dst,
        ttl: 0,
        proto: 0,
        ip_len: 0,
        l4: 0,
        l4_len: 0,
        frag: None,
        sport: 0,
        dport: 0,
        tcp: None,
        icmp: None,
    }
}

fn ipv4(f: &[u8], l3: usize, vlan: Option<u16>) -> Res<Meta> {
    if f.len() < l3 + 20 {
        return Err("short ipv4 header");
    }
    if f[l3] >> 4 != 4 {
        return Err("bad ip version");
    }
    let ihl = ((f[l3] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Err("bad ipv4 header length");
    }
    if f.len() < l3 + ihl {
        return Err("short ipv4 header");
    }
    let total = be16(f, l3 + 2) as usize;
    if total < ihl {
        return Err("bad ipv4 total length");
    }
    if f.len() < l3 + total {
        return Err("ipv4 length exceeds frame");
    }
    let mut m = blank_meta(f, vlan, l3, false, v4addr(f, l3 + 12), v4addr(f, l3 + 16));
    m.ttl = f[l3 + 8];
    m.proto = f[l3 + 9];
    m.ip_len = total;
    m.l4 = l3 + ihl;
    m.l4_len = total - ihl;
    let fo = be16(f, l3 + 6);
    let more = fo & 0x2000 != 0;
    let offset = (fo & 0x1fff) << 3;
    if more || offset != 0 {
        m.frag = Some(Frag { id: be16(f, l3 + 4) as u32, offset, more });
        if offset != 0 {
            return Ok(m);
        }
    }
    l4(f, &mut m)?;
    Ok(m)
}

fn ipv6(f: &[u8], l3: usize, vlan: Option<u16>) -> Res<Meta> {
    if f.len() < l3 + 40 {
        return Err("short ipv6 header");
    }
    if f[l3] >> 4 != 6 {
        return Err("bad ip version");
    }
    let plen = be16(f, l3 + 4) as usize;
    let end = l3 + 40 + plen;
    if f.len() < end {
        return Err("ipv6 length exceeds frame");
    }
    let mut m = blank_meta(f, vlan, l3, true, v6addr(f, l3 + 8), v6addr(f, l3 + 24));
    m.ttl = f[l3 + 7];
    m.ip_len = 40 + plen;
    let w = walk_v6(f, l3 + 40, end, f[l3 + 6])?;
    m.proto = w.proto;
    m.l4 = w.l4;
    m.l4_len = end - w.l4;
    m.frag = w.frag;
    if w.later || !w.upper {
        return Ok(m);
    }
    l4(f, &mut m)?;
    Ok(m)
}

struct V6Walk {
    proto: u8,
    l4: usize,
    frag: Option<Frag>,
    /// A non-first fragment: what follows is fragment data.
    later: bool,
    /// False when the chain stopped at ESP or no-next-header.
    upper: bool,
}

/// Follow the IPv6 extension header chain from `pos` (just after the fixed
/// header) within `end`.
fn walk_v6(f: &[u8], mut pos: usize, end: usize, mut nh: u8) -> Res<V6Walk> {
    let mut frag = None;
    for i in 0..MAX_V6_EXT {
        let len = match nh {
            0 | 43 | 60 => {
                if nh == 0 && i != 0 {
                    return Err("misplaced ipv6 hop-by-hop header");
                }
                if end < pos + 2 {
                    return Err("short ipv6 extension header");
                }
                (f[pos + 1] as usize + 1) * 8
            }
            51 => {
                if end < pos + 2 {
                    return Err("short ipv6 extension header");
                }
                (f[pos + 1] as usize + 2) * 4
            }
            44 => {
                if end < pos + 8 {
                    return Err("short ipv6 fragment header");
                }
                let fo = be16(f, pos + 2);
                let offset = fo & 0xfff8;
                let more = fo & 1 != 0;
                // An atomic fragment (offset 0, no more) is a whole packet (RFC 6946).
                if offset != 0 || more {
                    frag = Some(Frag { id: be32(f, pos + 4), offset, more });
                }
                if offset != 0 {
                    return Ok(V6Walk { proto: f[pos], l4: pos + 8, frag, later: true, upper: false });
                }
                8
            }
            50 | 59 => return Ok(V6Walk { proto: nh, l4: pos, frag, later: false, upper: false }),
            _ => return Ok(V6Walk { proto: nh, l4: pos, frag, later: false, upper: true }),
        };
        if end < pos + len {
            return Err("short ipv6 extension header");
        }
        nh = f[pos];
        pos += len;
    }
    Err("too many ipv6 extension headers")
}

/// Fill in ports, TCP and ICMP details from the L4 header at `m.l4`.
#[inline]
fn l4(f: &[u8], m: &mut Meta) -> Res<()> {
    let at = m.l4;
    let avail = m.l4_len;
    match m.proto {
        PROTO_TCP => {
            if avail < 20 {
                return Err("short tcp header");
            }
            let hl = ((f[at + 12] >> 4) as usize) * 4;
            if hl < 20 {
                return Err("bad tcp data offset");
            }
            if avail < hl {
                return Err("short tcp header");
            }
            m.sport = be16(f, at);
            m.dport = be16(f, at + 2);
            m.tcp = Some(TcpInfo {
                seq: be32(f, at + 4),
                ack: be32(f, at + 8),
                flags: f[at + 13],
                window: be16(f, at + 14),
                header_len: hl,
                payload: at + hl,
                payload_len: avail - hl,
            });
        }
        PROTO_UDP => {
            if avail < 8 {
                return Err("short udp header");
            }
            let ulen = be16(f, at + 4) as usize;
            // A fragmented datagram's length covers all fragments; only check whole ones.
            if m.frag.is_none() && (ulen < 8 || ulen > avail) {
                return Err("bad udp length");
            }
            m.sport = be16(f, at);
            m.dport = be16(f, at + 2);
        }
        PROTO_ICMP | PROTO_ICMPV6 if (m.proto == PROTO_ICMPV6) == m.v6 => {
            if avail < 8 {
                return Err("short icmp header");
            }
            let ty = f[at];
            let mut info = IcmpInfo { ty, code: f[at + 1], echo_id: None, inner: None };
            if is_echo(m.v6, ty) {
                let id = be16(f, at + 4);
                info.echo_id = Some(id);
                m.sport = id;
                m.dport = id;
            } else if is_icmp_error(m.v6, ty) {
                info.inner = inner(f, at + 8, at + avail, m.v6).map(|(i, _)| i);
            }
            m.icmp = Some(info);
        }
        _ => {}
    }
    Ok(())
}

/// Parse the packet quoted in an ICMP error, between `start` and `end`.
/// Returns the inner meta and whether its L4 header is really there (false for
/// a quoted non-first fragment).
pub(crate) fn inner(f: &[u8], start: usize, end: usize, v6: bool) -> Option<(InnerMeta, bool)> {
    let end = end.min(f.len());
    let (src, dst, proto, l4, later) = if !v6 {
        if end < start + 20 || f[start] >> 4 != 4 {
            return None;
        }
        let ihl = ((f[start] & 0x0f) as usize) * 4;
        if ihl < 20 || end < start + ihl {
            return None;
        }
        let later = be16(f, start + 6) & 0x1fff != 0;
        (v4addr(f, start + 12), v4addr(f, start + 16), f[start + 9], start + ihl, later)
    } else {
        if end < start + 40 || f[start] >> 4 != 6 {
            return None;
        }
        let w = walk_v6(f, start + 40, end, f[start + 6]).ok()?;
        (v6addr(f, start + 8), v6addr(f, start + 24), w.proto, w.l4, w.later || !w.upper)
    };
    let mut im = InnerMeta { l3: start, src, dst, proto, l4, sport: 0, dport: 0 };
    if !later {
        match proto {
            PROTO_TCP | PROTO_UDP if end >= l4 + 4 => {
                im.sport = be16(f, l4);
                im.dport = be16(f, l4 + 2);
            }
            PROTO_ICMP | PROTO_ICMPV6 if (proto == PROTO_ICMPV6) == v6 && end >= l4 + 6 && is_echo(v6, f[l4]) => {
                im.sport = be16(f, l4 + 4);
                im.dport = im.sport;
            }
            _ => {}
        }
    }
    Some((im, !later))
}
