//! Typed views over frame bytes: parsing into offsets (`parse`), in-place field
//! setters that keep every checksum right by RFC 1624 incremental update
//! (`setters`), whole-frame builders for what the gateway originates (`build`),
//! and the checksum arithmetic itself (`checksum`). No allocation on the
//! parse and setter paths.

pub mod build;
pub mod checksum;
pub mod parse;
pub mod setters;

pub use parse::{parse_frame, Arp, Frag, FrameKind, IcmpInfo, InnerMeta, Meta, TcpInfo};

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
pub const ETHERTYPE_VLAN: u16 = 0x8100;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

pub type Mac = [u8; 6];

/// TCP flag bits as they sit in byte 13 of the header.
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
}
