//! An independent checksum check (etherparse), as in tests/common: the
//! engine's incremental updates are judged by a full recomputation.

use std::net::IpAddr;

use etherparse::{NetSlice, SlicedPacket};

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

/// One's-complement sum of `parts` (each but the last of even length).
fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut acc: u64 = 0;
    for p in parts {
        for w in p.chunks(2) {
            acc += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Checksums are recomputed over the raw bytes: etherparse's header structs
/// drop reserved bits (TCP's reserved nibble, IPv4's reserved flag), so
/// their `calc_*` disagree with the wire when those bits are set. etherparse
/// only finds the headers here.
pub fn check(frame: &[u8]) -> Checked {
    let p = match SlicedPacket::from_ethernet(frame) {
        Ok(p) => p,
        Err(e) => return Checked::Unparsable(format!("{e:?}")),
    };
    let (src, dst, payload) = match p.net.as_ref() {
        Some(NetSlice::Ipv4(v4)) => {
            if ones_sum(&[v4.header().slice()]) != 0xffff {
                return Checked::Bad("IPv4 header checksum".into());
            }
            if v4.is_payload_fragmented() {
                return Checked::NotChecked;
            }
            (IpAddr::V4(v4.header().source_addr()), IpAddr::V4(v4.header().destination_addr()), v4.payload().clone())
        }
        Some(NetSlice::Ipv6(v6)) => {
            if v6.is_payload_fragmented() {
                return Checked::NotChecked;
            }
            (IpAddr::V6(v6.header().source_addr()), IpAddr::V6(v6.header().destination_addr()), v6.payload().clone())
        }
        _ => return Checked::NotChecked,
    };
    if p.transport.is_none() {
        return Checked::Valid;
    }
    let data = payload.payload;
    let proto = payload.ip_number.0;
    let (s, d): (Vec<u8>, Vec<u8>) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (s.octets().to_vec(), d.octets().to_vec()),
        _ => return Checked::Bad("mixed families".into()),
    };
    let len = (data.len() as u32).to_be_bytes();
    let pseudo = [0, proto];
    let name = match proto {
        6 => "TCP",
        17 => "UDP",
        58 => "ICMPv6",
        1 => "ICMPv4",
        _ => return Checked::Valid,
    };
    let ok = match proto {
        17 if data.len() >= 8 && data[6..8] == [0, 0] => true,
        1 => ones_sum(&[data]) == 0xffff,
        _ => ones_sum(&[&s, &d, &len, &pseudo, data]) == 0xffff,
    };
    if ok {
        Checked::Valid
    } else {
        Checked::Bad(format!("{name} checksum"))
    }
}

/// Panic (the fuzzer's crash) unless `frame` verifies; `what` says which frame.
pub fn assert_valid(frame: &[u8], what: &str) {
    match check(frame) {
        Checked::Valid | Checked::NotChecked => {}
        other => panic!("{what}: {other:?}\nframe: {frame:02x?}"),
    }
}
