//! An independent checksum check (etherparse), as in tests/common: the
//! engine's incremental updates are judged by a full recomputation.

use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// What etherparse makes of a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    /// Every checksum present verifies (IPv4 header, TCP, UDP unless 0, ICMP, ICMPv6).
    Valid,
    /// Not an IP frame etherparse can slice (ARP, other EtherTypes), or an IP
    /// fragment whose transport checksum covers bytes not in this frame.
    NotChecked,
    /// Parses, but a checksum is wrong; the message says which.
    Bad(String),
    /// etherparse cannot slice it.
    Unparsable(String),
}

pub fn check(frame: &[u8]) -> Checked {
    let p = match SlicedPacket::from_ethernet(frame) {
        Ok(p) => p,
        Err(e) => return Checked::Unparsable(format!("{e:?}")),
    };
    let (src, dst, fragmented) = match p.net.as_ref() {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header().to_header();
            if h.header_checksum != h.calc_header_checksum() {
                return Checked::Bad("IPv4 header checksum".into());
            }
            (IpAddr::V4(v4.header().source_addr()), IpAddr::V4(v4.header().destination_addr()), v4.is_payload_fragmented())
        }
        Some(NetSlice::Ipv6(v6)) => {
            (IpAddr::V6(v6.header().source_addr()), IpAddr::V6(v6.header().destination_addr()), v6.is_payload_fragmented())
        }
        _ => return Checked::NotChecked,
    };
    if fragmented {
        return Checked::NotChecked;
    }
    let Some(t) = p.transport.as_ref() else { return Checked::Valid };
    let ok = match (t, src, dst) {
        (TransportSlice::Tcp(t), IpAddr::V4(s), IpAddr::V4(d)) => {
            t.to_header().calc_checksum_ipv4_raw(s.octets(), d.octets(), t.payload()).ok() == Some(t.checksum())
        }
        (TransportSlice::Tcp(t), IpAddr::V6(s), IpAddr::V6(d)) => {
            t.to_header().calc_checksum_ipv6_raw(s.octets(), d.octets(), t.payload()).ok() == Some(t.checksum())
        }
        (TransportSlice::Udp(u), _, _) if u.checksum() == 0 => true,
        (TransportSlice::Udp(u), IpAddr::V4(s), IpAddr::V4(d)) => {
            u.to_header().calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload()).ok() == Some(u.checksum())
        }
        (TransportSlice::Udp(u), IpAddr::V6(s), IpAddr::V6(d)) => {
            u.to_header().calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload()).ok() == Some(u.checksum())
        }
        (TransportSlice::Icmpv4(i), _, _) => i.header().checksum == i.header().icmp_type.calc_checksum(i.payload()),
        (TransportSlice::Icmpv6(i), IpAddr::V6(s), IpAddr::V6(d)) => {
            i.header().icmp_type.calc_checksum(s.octets(), d.octets(), i.payload()).ok() == Some(i.header().checksum)
        }
        _ => true,
    };
    if ok {
        Checked::Valid
    } else {
        Checked::Bad(format!("{} checksum", transport_name(t)))
    }
}

fn transport_name(t: &TransportSlice<'_>) -> &'static str {
    match t {
        TransportSlice::Tcp(_) => "TCP",
        TransportSlice::Udp(_) => "UDP",
        TransportSlice::Icmpv4(_) => "ICMPv4",
        TransportSlice::Icmpv6(_) => "ICMPv6",
        _ => "transport",
    }
}

/// Panic (the fuzzer's crash) unless `frame` verifies; `what` says which frame.
pub fn assert_valid(frame: &[u8], what: &str) {
    match check(frame) {
        Checked::Valid | Checked::NotChecked => {}
        other => panic!("{what}: {other:?}\nframe: {frame:02x?}"),
    }
}
