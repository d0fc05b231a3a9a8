//! Frame parsing: Ethernet (+802.1Q) → ARP | IPv4 | IPv6 (+extension headers)
//! → TCP | UDP | ICMP | ICMPv6 (errors carry an inner header).
//! The result is a `Meta`: addresses, ports and byte offsets into the frame, so
//! the setters can rewrite fields in place.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{
    Mac, ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_VLAN, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,
};

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
    /// An all-zero `Meta` for `parse_into` to fill.
    pub const EMPTY: Meta = Meta {
        eth_dst: [0; 6],
        eth_src: [0; 6],
        vlan: None,
        l3: 0,
        v6: false,
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
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
    };

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
    Other {
        ethertype: u16,
    },
    /// Could not be parsed; the string says why, for the `invalid` drop's detail.
    Malformed(&'static str),
}

/// What `parse_into` found; for `Ip` the details are in the caller's `Meta`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    Ip,
    Arp(Arp),
    /// A well-formed Ethernet frame of another EtherType.
    Other {
        ethertype: u16,
    },
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
    let mut m = Meta::EMPTY;
    match parse_into(frame, &mut m) {
        Parsed::Ip => FrameKind::Ip(m),
        Parsed::Arp(a) => FrameKind::Arp(a),
        Parsed::Other { ethertype } => FrameKind::Other { ethertype },
        Parsed::Malformed(why) => FrameKind::Malformed(why),
    }
}

/// `parse_frame` into a caller-owned `Meta`: on the per-frame path, moving a
/// 200-byte struct through `Result`s and enums by value is a real cost.
/// `m` is meaningful only when the answer is `Parsed::Ip`.
pub fn parse_into(frame: &[u8], m: &mut Meta) -> Parsed {
    let f = frame;
    if f.len() < 14 {
        return Parsed::Malformed("short ethernet header");
    }
    let mut et = be16(f, 12);
    let mut off = 14;
    let mut vlan = None;
    if et == ETHERTYPE_QINQ {
        if f.len() < off + 4 {
            return Parsed::Malformed("short vlan tag");
        }
        vlan = Some(be16(f, off) & 0x0fff);
        et = be16(f, off + 2);
        off += 4;
    }
    if et == ETHERTYPE_VLAN {
        if f.len() < off + 4 {
            return Parsed::Malformed("short vlan tag");
        }
        // With 802.1ad + 802.1Q the customer tag (inner) is the one we report.
        vlan = Some(be16(f, off) & 0x0fff);
        et = be16(f, off + 2);
        off += 4;
    }
    let r = match et {
        ETHERTYPE_IPV4 => ipv4(f, off, vlan, m),
        ETHERTYPE_IPV6 => ipv6(f, off, vlan, m),
        ETHERTYPE_ARP => {
            return match arp(f, off) {
                Ok(a) => Parsed::Arp(a),
                Err(why) => Parsed::Malformed(why),
            }
        }
        ETHERTYPE_VLAN | ETHERTYPE_QINQ => return Parsed::Malformed("too many vlan tags"),
        _ => return Parsed::Other { ethertype: et },
    };
    match r {
        Ok(()) => Parsed::Ip,
        Err(why) => Parsed::Malformed(why),
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
    Ok(Arp { op: be16(f, off + 6), sha: mac(f, off + 8), spa: ip(off + 14), tha: mac(f, off + 18), tpa: ip(off + 24) })
}

#[inline(always)]
fn ipv4(f: &[u8], l3: usize, vlan: Option<u16>, m: &mut Meta) -> Res<()> {
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
    let fo = be16(f, l3 + 6);
    let more = fo & 0x2000 != 0;
    let offset = (fo & 0x1fff) << 3;
    let frag = if more || offset != 0 { Some(Frag { id: be16(f, l3 + 4) as u32, offset, more }) } else { None };
    *m = Meta {
        eth_dst: mac(f, 0),
        eth_src: mac(f, 6),
        vlan,
        l3,
        v6: false,
        src: v4addr(f, l3 + 12),
        dst: v4addr(f, l3 + 16),
        ttl: f[l3 + 8],
        proto: f[l3 + 9],
        ip_len: total,
        l4: l3 + ihl,
        l4_len: total - ihl,
        frag,
        sport: 0,
        dport: 0,
        tcp: None,
        icmp: None,
    };
    if offset != 0 {
        return Ok(());
    }
    l4(f, m)
}

fn ipv6(f: &[u8], l3: usize, vlan: Option<u16>, m: &mut Meta) -> Res<()> {
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
    let w = walk_v6(f, l3 + 40, end, f[l3 + 6])?;
    *m = Meta {
        eth_dst: mac(f, 0),
        eth_src: mac(f, 6),
        vlan,
        l3,
        v6: true,
        src: v6addr(f, l3 + 8),
        dst: v6addr(f, l3 + 24),
        ttl: f[l3 + 7],
        proto: w.proto,
        ip_len: 40 + plen,
        l4: w.l4,
        l4_len: end - w.l4,
        frag: w.frag,
        sport: 0,
        dport: 0,
        tcp: None,
        icmp: None,
    };
    if w.later || !w.upper {
        return Ok(());
    }
    l4(f, m)
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
#[inline(always)]
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
        PROTO_ICMP | PROTO_ICMPV6 if (m.proto == PROTO_ICMPV6) == m.v6 => icmp(f, m)?,
        _ => {}
    }
    Ok(())
}

// Kept out of line so the TCP/UDP path stays small.
#[inline(never)]
fn icmp(f: &[u8], m: &mut Meta) -> Res<()> {
    let (at, avail) = (m.l4, m.l4_len);
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const A4: [u8; 4] = [192, 0, 2, 10];
    pub(crate) const B4: [u8; 4] = [198, 51, 100, 20];
    pub(crate) const A6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a];
    pub(crate) const B6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14];

    pub(crate) fn eth(et: u16) -> Vec<u8> {
        let mut v = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02];
        v.extend_from_slice(&et.to_be_bytes());
        v
    }

    /// IPv4 header + `body`; `frag` is the flags/fragment-offset word.
    pub(crate) fn ip4(proto: u8, opts: &[u8], frag: u16, body: &[u8]) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let ihl = 20 + opts.len();
        let mut v = vec![0x40 | (ihl / 4) as u8, 0];
        v.extend_from_slice(&((ihl + body.len()) as u16).to_be_bytes());
        v.extend_from_slice(&[0x12, 0x34]);
        v.extend_from_slice(&frag.to_be_bytes());
        v.extend_from_slice(&[64, proto, 0, 0]);
        v.extend_from_slice(&A4);
        v.extend_from_slice(&B4);
        v.extend_from_slice(opts);
        let c = crate::wire::checksum::ipv4_header(&v);
        v[10..12].copy_from_slice(&c.to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// IPv6 header + `body` (which holds any extension headers).
    pub(crate) fn ip6(next: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&(body.len() as u16).to_be_bytes());
        v.extend_from_slice(&[next, 64]);
        v.extend_from_slice(&A6);
        v.extend_from_slice(&B6);
        v.extend_from_slice(body);
        v
    }

    pub(crate) fn tcp(sport: u16, dport: u16, opts: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let mut v = Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&1000u32.to_be_bytes());
        v.extend_from_slice(&2000u32.to_be_bytes());
        v.push((((20 + opts.len()) / 4) as u8) << 4);
        v.push(0x18);
        v.extend_from_slice(&[0x20, 0x00, 0, 0, 0, 0]);
        v.extend_from_slice(opts);
        v.extend_from_slice(payload);
        v
    }

    pub(crate) fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&sport.to_be_bytes());
        v.extend_from_slice(&dport.to_be_bytes());
        v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        // Not 0 ("no checksum"), so test helpers fill it in.
        v.extend_from_slice(&[0xff, 0xff]);
        v.extend_from_slice(payload);
        v
    }

    pub(crate) fn icmp(ty: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, code, 0, 0];
        v.extend_from_slice(&rest);
        v.extend_from_slice(body);
        v
    }

    fn cat(a: Vec<u8>, b: Vec<u8>) -> Vec<u8> {
        [a, b].concat()
    }

    fn meta(f: &[u8]) -> Meta {
        match parse_frame(f) {
            FrameKind::Ip(m) => m,
            k => panic!("expected Ip, got {k:?}"),
        }
    }

    fn malformed(f: &[u8]) -> &'static str {
        match parse_frame(f) {
            FrameKind::Malformed(why) => why,
            k => panic!("expected Malformed, got {k:?}"),
        }
    }

    #[test]
    fn tcp_ipv4_with_ethernet_padding() {
        let mut f = cat(eth(0x0800), ip4(6, &[], 0x4000, &tcp(1025, 21, &[], b"USER x\r\n")));
        let ip_end = f.len();
        f.resize(ip_end + 6, 0xee); // padding must not count as payload
        let m = meta(&f);
        assert_eq!(m.eth_dst, [2, 0, 0, 0, 0, 1]);
        assert_eq!(m.eth_src, [2, 0, 0, 0, 0, 2]);
        assert_eq!((m.vlan, m.l3, m.v6, m.ttl, m.proto), (None, 14, false, 64, 6));
        assert_eq!(m.src, IpAddr::from(A4));
        assert_eq!(m.dst, IpAddr::from(B4));
        assert_eq!((m.ip_len, m.l4, m.l4_len), (48, 34, 28));
        assert_eq!((m.sport, m.dport, m.frag), (1025, 21, None));
        let t = m.tcp.unwrap();
        assert_eq!((t.seq, t.ack, t.flags, t.window, t.header_len), (1000, 2000, 0x18, 0x2000, 20));
        assert_eq!((t.payload, t.payload_len), (54, 8));
        assert_eq!(&f[t.payload..t.payload + t.payload_len], b"USER x\r\n");
        assert!(m.icmp.is_none());
    }

    #[test]
    fn vlan_tags() {
        let pkt = ip4(17, &[], 0, &udp(53, 5353, b"hi"));
        let mut f = eth(0x8100);
        f.extend_from_slice(&[0x20, 0x2a, 0x08, 0x00]); // PCP 1, VID 42
        f.extend_from_slice(&pkt);
        let m = meta(&f);
        assert_eq!((m.vlan, m.l3, m.sport, m.dport), (Some(42), 18, 53, 5353));

        // 802.1ad outer + 802.1Q inner: the inner (customer) VID is reported.
        let mut f = eth(0x88a8);
        f.extend_from_slice(&[0x00, 0x64, 0x81, 0x00, 0x00, 0x07, 0x08, 0x00]);
        f.extend_from_slice(&pkt);
        let m = meta(&f);
        assert_eq!((m.vlan, m.l3, m.proto), (Some(7), 22, 17));

        // A lone 802.1ad tag is tolerated too.
        let mut f = eth(0x88a8);
        f.extend_from_slice(&[0x00, 0x64, 0x08, 0x00]);
        f.extend_from_slice(&pkt);
        assert_eq!(meta(&f).vlan, Some(100));

        let mut f = eth(0x8100);
        f.extend_from_slice(&[0, 1, 0x81, 0x00, 0, 2, 0x08, 0x00]);
        f.extend_from_slice(&pkt);
        assert_eq!(malformed(&f), "too many vlan tags");
        assert_eq!(malformed(&[eth(0x8100), vec![0, 1]].concat()), "short vlan tag");
    }

    #[test]
    fn other_ethertype_and_arp() {
        let mut f = eth(0x88cc);
        f.extend_from_slice(&[0; 46]);
        assert_eq!(parse_frame(&f), FrameKind::Other { ethertype: 0x88cc });

        let mut f = eth(0x0806);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 2]);
        f.extend_from_slice(&A4);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&B4);
        f.resize(60, 0);
        let want = Arp { op: 1, sha: [2, 0, 0, 0, 0, 2], spa: A4.into(), tha: [0; 6], tpa: B4.into() };
        assert_eq!(parse_frame(&f), FrameKind::Arp(want));
        assert_eq!(malformed(&f[..14 + 27]), "short arp packet");
        f[14 + 5] = 16; // protocol address length of IPv6
        assert_eq!(malformed(&f), "arp not ethernet/ipv4");
    }

    #[test]
    fn ipv4_options_move_l4() {
        let opts = [0x94, 0x04, 0, 0, 1, 1, 1, 0]; // router alert, NOP, NOP, NOP, EOL
        let f = cat(eth(0x0800), ip4(6, &opts, 0, &tcp(20, 3000, &[], b"data")));
        let m = meta(&f);
        assert_eq!((m.l4, m.l4_len, m.ip_len), (42, 24, 52));
        assert_eq!((m.sport, m.dport), (20, 3000));
        assert_eq!(m.tcp.unwrap().payload, 62);
        assert_eq!(m.tcp.unwrap().payload_len, 4);
    }

    #[test]
    fn ipv4_fragments() {
        let first = cat(eth(0x0800), ip4(17, &[], 0x2000, &udp(5000, 53, &[7; 24])[..16]));
        let m = meta(&first);
        assert_eq!(m.frag, Some(Frag { id: 0x1234, offset: 0, more: true }));
        assert_eq!((m.sport, m.dport, m.l4_len), (5000, 53, 16));
        assert!(!m.is_later_fragment());

        // Offset 2 (16 bytes), last fragment: the data looks like nothing.
        let later = cat(eth(0x0800), ip4(6, &[], 0x0002, &[0xab; 16]));
        let m = meta(&later);
        assert_eq!(m.frag, Some(Frag { id: 0x1234, offset: 16, more: false }));
        assert!(m.is_later_fragment());
        assert_eq!((m.l4, m.l4_len, m.sport, m.dport, m.proto), (34, 16, 0, 0, 6));
        assert!(m.tcp.is_none() && m.icmp.is_none());

        // A first fragment too short for the TCP header is refused (RFC 1858).
        let tiny = cat(eth(0x0800), ip4(6, &[], 0x2000, &tcp(1, 2, &[], &[])[..8]));
        assert_eq!(malformed(&tiny), "short tcp header");
    }

    fn ext(next: u8, len8: u8) -> Vec<u8> {
        let mut v = vec![next, len8];
        v.resize((len8 as usize + 1) * 8, 0);
        v
    }

    #[test]
    fn ipv6_tcp_and_extension_headers() {
        let seg = tcp(40000, 21, &[], b"PWD\r\n");
        let f = cat(eth(0x86dd), ip6(6, &seg));
        let m = meta(&f);
        assert!(m.v6);
        assert_eq!(m.src, IpAddr::from(A6));
        assert_eq!((m.l3, m.l4, m.ip_len, m.l4_len, m.ttl), (14, 54, 65, 25, 64));
        assert_eq!(m.tcp.unwrap().payload_len, 5);

        // hop-by-hop (8) → routing (24) → destination options (16) → TCP
        let mut body = ext(43, 0);
        let mut rt = ext(60, 2);
        rt[2] = 4; // routing type 4 (SRH): we only skip it
        body.extend(rt);
        body.extend(ext(6, 1));
        body.extend(&seg);
        let m = meta(&cat(eth(0x86dd), ip6(0, &body)));
        assert_eq!((m.proto, m.l4, m.sport, m.dport), (6, 54 + 48, 40000, 21));
        assert_eq!(m.l4_len, seg.len());

        // AH (payload len 4 → (4+2)*4 = 24 bytes) → UDP
        let mut ah = vec![17, 4];
        ah.resize(24, 0);
        ah.extend(udp(500, 4500, b"x"));
        let m = meta(&cat(eth(0x86dd), ip6(51, &ah)));
        assert_eq!((m.proto, m.l4, m.sport, m.dport), (17, 54 + 24, 500, 4500));

        // ESP and no-next-header stop the walk with no L4.
        let m = meta(&cat(eth(0x86dd), ip6(60, &[ext(50, 0), vec![0; 16]].concat())));
        assert_eq!((m.proto, m.l4, m.sport, m.tcp), (50, 62, 0, None));
        let m = meta(&cat(eth(0x86dd), ip6(59, &[])));
        assert_eq!((m.proto, m.l4, m.l4_len), (59, 54, 0));

        // Hop-by-hop anywhere but first is refused; so is an endless chain.
        let bad = cat(eth(0x86dd), ip6(60, &[ext(0, 0), ext(6, 0), seg.clone()].concat()));
        assert_eq!(malformed(&bad), "misplaced ipv6 hop-by-hop header");
        let mut chain = Vec::new();
        for _ in 0..9 {
            chain.extend(ext(60, 0));
        }
        assert_eq!(malformed(&cat(eth(0x86dd), ip6(60, &chain))), "too many ipv6 extension headers");
        // An extension header running past the payload length.
        let short = cat(eth(0x86dd), ip6(60, &ext(6, 3)[..16]));
        assert_eq!(malformed(&short), "short ipv6 extension header");
    }

    fn frag6(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
        let mut v = vec![next, 0];
        v.extend_from_slice(&(offset | more as u16).to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
        v
    }

    #[test]
    fn ipv6_fragment_header() {
        let seg = tcp(1, 2, &[], &[0; 40]);
        let first = cat(eth(0x86dd), ip6(44, &[frag6(6, 0, true, 0xdeadbeef), seg[..32].to_vec()].concat()));
        let m = meta(&first);
        assert_eq!(m.frag, Some(Frag { id: 0xdeadbeef, offset: 0, more: true }));
        assert_eq!((m.proto, m.l4, m.sport, m.dport), (6, 62, 1, 2));
        assert_eq!(m.tcp.unwrap().payload_len, 12);

        let later = cat(eth(0x86dd), ip6(0, &[ext(44, 0), frag6(6, 32, false, 7), vec![9; 24]].concat()));
        let m = meta(&later);
        assert_eq!(m.frag, Some(Frag { id: 7, offset: 32, more: false }));
        assert!(m.is_later_fragment());
        assert_eq!((m.proto, m.l4, m.l4_len, m.sport, m.tcp), (6, 70, 24, 0, None));

        // Atomic fragment: a whole packet in a fragment header (RFC 6946).
        let atomic = cat(eth(0x86dd), ip6(44, &[frag6(17, 0, false, 9), udp(7, 8, b"")].concat()));
        let m = meta(&atomic);
        assert_eq!((m.frag, m.sport, m.dport), (None, 7, 8));
    }

    #[test]
    fn icmp_echo() {
        let f = cat(eth(0x0800), ip4(1, &[], 0, &icmp(8, 0, [0x12, 0x34, 0, 1], b"ping")));
        let m = meta(&f);
        let i = m.icmp.unwrap();
        assert_eq!((i.ty, i.code, i.echo_id, i.inner), (8, 0, Some(0x1234), None));
        assert_eq!((m.sport, m.dport), (0x1234, 0x1234));

        let f = cat(eth(0x86dd), ip6(58, &icmp(129, 0, [0xab, 0xcd, 0, 9], b"")));
        let m = meta(&f);
        assert_eq!(m.icmp.unwrap().echo_id, Some(0xabcd));
        assert_eq!(m.sport, 0xabcd);
        // ICMPv4 numbers mean nothing inside IPv6, and vice versa.
        let f = cat(eth(0x86dd), ip6(1, &icmp(8, 0, [0, 1, 0, 1], b"")));
        assert_eq!(meta(&f).icmp, None);
        assert_eq!(malformed(&cat(eth(0x0800), ip4(1, &[], 0, &[8, 0, 0, 0]))), "short icmp header");
    }

    #[test]
    fn icmpv4_errors_quote_inner_headers() {
        // Port unreachable about a UDP datagram from B4 to A4 (the reverse direction).
        let mut quoted = ip4(17, &[], 0, &udp(33434, 53, &[0; 12]));
        quoted[12..16].copy_from_slice(&B4);
        quoted[16..20].copy_from_slice(&A4);
        let f = cat(eth(0x0800), ip4(1, &[], 0, &icmp(3, 3, [0; 4], &quoted[..28])));
        let m = meta(&f);
        let i = m.icmp.unwrap();
        assert_eq!((i.ty, i.code, i.echo_id), (3, 3, None));
        let inner = i.inner.unwrap();
        let want = InnerMeta { l3: 42, src: B4.into(), dst: A4.into(), proto: 17, l4: 62, sport: 33434, dport: 53 };
        assert_eq!(inner, want);
        assert_eq!((m.sport, m.dport), (0, 0));

        // Time exceeded about TCP with IP options inside.
        let q = ip4(6, &[1, 1, 1, 0], 0, &tcp(2121, 20, &[], b""));
        let m = meta(&cat(eth(0x0800), ip4(1, &[], 0, &icmp(11, 0, [0; 4], &q[..32]))));
        let inner = m.icmp.unwrap().inner.unwrap();
        assert_eq!((inner.proto, inner.l4, inner.sport, inner.dport), (6, 42 + 24, 2121, 20));

        // Inner echo request: the id stands in for both ports.
        let q = ip4(1, &[], 0, &icmp(8, 0, [0x0b, 0xad, 0, 1], b""));
        let inner = meta(&cat(eth(0x0800), ip4(1, &[], 0, &icmp(11, 0, [0; 4], &q)))).icmp.unwrap().inner.unwrap();
        assert_eq!((inner.proto, inner.sport, inner.dport), (1, 0x0bad, 0x0bad));

        // Fewer than 4 bytes of inner L4: addresses but no ports.
        let q = ip4(6, &[], 0, &tcp(1, 2, &[], b""));
        let inner = meta(&cat(eth(0x0800), ip4(1, &[], 0, &icmp(3, 1, [0; 4], &q[..22])))).icmp.unwrap().inner.unwrap();
        assert_eq!((inner.proto, inner.sport, inner.dport, inner.src), (6, 0, 0, A4.into()));

        // A quoted non-first fragment has no ports either.
        let q = ip4(6, &[], 0x0004, &[1, 2, 3, 4, 5, 6, 7, 8]);
        let inner = meta(&cat(eth(0x0800), ip4(1, &[], 0, &icmp(3, 1, [0; 4], &q)))).icmp.unwrap().inner.unwrap();
        assert_eq!((inner.sport, inner.dport), (0, 0));

        // A quote that is not an IPv4 header leaves the error without inner info.
        let m = meta(&cat(eth(0x0800), ip4(1, &[], 0, &icmp(3, 1, [0; 4], &[0x60; 28]))));
        assert_eq!(m.icmp.unwrap().inner, None);
        let m = meta(&cat(eth(0x0800), ip4(1, &[], 0, &icmp(12, 0, [0; 4], &q[..19]))));
        assert_eq!(m.icmp.unwrap().inner, None);
    }

    #[test]
    fn icmpv6_errors_quote_inner_headers() {
        let q = ip6(6, &tcp(40000, 21, &[], b""));
        let m = meta(&cat(eth(0x86dd), ip6(58, &icmp(1, 4, [0; 4], &q))));
        let inner = m.icmp.unwrap().inner.unwrap();
        let want = InnerMeta { l3: 62, src: A6.into(), dst: B6.into(), proto: 6, l4: 102, sport: 40000, dport: 21 };
        assert_eq!(inner, want);

        // Packet too big about UDP behind a destination options header.
        let q = ip6(60, &[ext(17, 0), udp(5, 6, b"")].concat());
        let m = meta(&cat(eth(0x86dd), ip6(58, &icmp(2, 0, [0, 0, 5, 0], &q))));
        let inner = m.icmp.unwrap().inner.unwrap();
        assert_eq!((inner.proto, inner.l4, inner.sport, inner.dport), (17, 110, 5, 6));

        // Time exceeded about an echo request.
        let q = ip6(58, &icmp(128, 0, [0x44, 0x55, 0, 1], b"x"));
        let inner = meta(&cat(eth(0x86dd), ip6(58, &icmp(3, 0, [0; 4], &q)))).icmp.unwrap().inner.unwrap();
        assert_eq!((inner.proto, inner.sport, inner.dport), (58, 0x4455, 0x4455));

        // Parameter problem quoting a truncated IPv6 header: no inner.
        let m = meta(&cat(eth(0x86dd), ip6(58, &icmp(4, 0, [0; 4], &q[..30]))));
        assert_eq!(m.icmp.unwrap().inner, None);
        // An informational type other than echo carries neither.
        let m = meta(&cat(eth(0x86dd), ip6(58, &icmp(135, 0, [0; 4], &[0; 16]))));
        assert_eq!((m.icmp.unwrap().echo_id, m.icmp.unwrap().inner), (None, None));
    }

    #[test]
    fn malformed_inputs() {
        let good4 = cat(eth(0x0800), ip4(6, &[], 0, &tcp(1, 2, &[], b"abc")));
        let good6 = cat(eth(0x86dd), ip6(17, &udp(1, 2, b"abc")));
        assert_eq!(malformed(&good4[..13]), "short ethernet header");
        assert_eq!(malformed(&good4[..30]), "short ipv4 header");
        let mut f = good4.clone();
        f[14] = 0x65;
        assert_eq!(malformed(&f), "bad ip version");
        f[14] = 0x44;
        assert_eq!(malformed(&f), "bad ipv4 header length");
        f[14] = 0x4f;
        assert_eq!(malformed(&f), "short ipv4 header");
        let mut f = good4.clone();
        f[16..18].copy_from_slice(&500u16.to_be_bytes());
        assert_eq!(malformed(&f), "ipv4 length exceeds frame");
        f[16..18].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(malformed(&f), "bad ipv4 total length");
        let mut f = good4.clone();
        f[34 + 12] = 0x40; // data offset 16 bytes
        assert_eq!(malformed(&f), "bad tcp data offset");
        f[34 + 12] = 0xf0; // 60 bytes, more than there is
        assert_eq!(malformed(&f), "short tcp header");
        assert_eq!(malformed(&good6[..50]), "short ipv6 header");
        let mut f = good6.clone();
        f[14] = 0x40;
        assert_eq!(malformed(&f), "bad ip version");
        let mut f = good6.clone();
        f[18..20].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(malformed(&f), "ipv6 length exceeds frame");
        let mut f = good6.clone();
        f[54 + 4..54 + 6].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(malformed(&f), "bad udp length");
        let f = cat(eth(0x86dd), ip6(17, &[0; 6]));
        assert_eq!(malformed(&f), "short udp header");
    }

    #[test]
    fn every_truncation_and_byte_flip_is_handled() {
        let q = ip4(6, &[], 0, &tcp(1, 2, &[], b"abcdefgh"));
        let frames = [
            cat(eth(0x0800), ip4(6, &[1, 1, 1, 0], 0, &tcp(1, 2, &[1, 1, 5, 10, 0, 0, 0, 1, 0, 0, 0, 2], b"x"))),
            cat(eth(0x0800), ip4(1, &[], 0, &icmp(3, 3, [0; 4], &q))),
            cat(
                eth(0x86dd),
                ip6(
                    0,
                    &[ext(44, 0), frag6(58, 0, true, 1), icmp(1, 0, [0; 4], &ip6(6, &tcp(1, 2, &[], b"")))].concat(),
                ),
            ),
        ];
        for f in &frames {
            assert!(matches!(parse_frame(f), FrameKind::Ip(_)));
            for n in 0..f.len() {
                let _ = parse_frame(&f[..n]);
            }
            for i in 0..f.len() {
                for b in [0x00, 0xff, 0x45, 0x06, 0x2c, 0x3b] {
                    let mut g = f.clone();
                    g[i] = b;
                    let _ = parse_frame(&g);
                }
            }
        }
    }
}
