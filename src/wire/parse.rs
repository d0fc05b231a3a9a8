//! Frame parsing: Ethernet (+802.1Q) → ARP | IPv4 | IPv6 (+extension headers)
//! → TCP | UDP | ICMP | ICMPv6 (errors carry an inner header).
//! The result is a `Meta`: addresses, ports and byte offsets into the frame, so
//! the setters can rewrite fields in place.

use std::net::IpAddr;

use super::Mac;

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

/// Parse an Ethernet frame. Never panics, never allocates.
pub fn parse_frame(frame: &[u8]) -> FrameKind {
    let _ = frame;
    todo!("wire::parse_frame")
}
