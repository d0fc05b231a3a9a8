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
            // In transit through a routing header the pseudo-header holds the
            // final destination (RFC 8200 §8.1), which only the routing type
            // knows; the header's own destination says nothing then.
            let at = v6.header().slice().as_ptr() as usize - frame.as_ptr() as usize;
            if routing_in_transit(&frame[at..]) {
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

/// Whether the IPv6 packet at the start of `ip` carries a routing header
/// with segments left before its upper-layer header. The same walk as
/// `wire::setters`' private `in_transit_routing`, written again on purpose:
/// this is the oracle the setters are checked against, so it must not
/// share their code (a bug there would then pass here too).
fn routing_in_transit(ip: &[u8]) -> bool {
    let (mut nh, mut pos) = (ip.get(6).copied().unwrap_or(59), 40);
    while pos + 4 <= ip.len() {
        let len = match nh {
            43 if ip[pos + 3] != 0 => return true,
            0 | 43 | 60 => (usize::from(ip[pos + 1]) + 1) * 8,
            51 => (usize::from(ip[pos + 1]) + 2) * 4,
            44 => 8,
            _ => return false,
        };
        nh = ip[pos];
        pos += len;
    }
    false
}

/// Panic (the fuzzer's crash) unless `frame` verifies; `what` says which frame.
pub fn assert_valid(frame: &[u8], what: &str) {
    match check(frame) {
        Checked::Valid | Checked::NotChecked => {}
        other => panic!("{what}: {other:?}\nframe: {frame:02x?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire target's first crash (2026-11-22): an IPv6 frame whose
    /// routing header still has segments left. Its destination was
    /// rewritten, the setter rightly left the ICMPv6 checksum alone (the
    /// pseudo-header holds the final destination), and this check, reading
    /// the header's destination, called that a bad checksum.
    #[test]
    fn a_routing_header_in_transit_is_not_checked_against_the_header_destination() {
        let mut f = vec![0u8; 14 + 40 + 8 + 8];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        let ip = &mut f[14..];
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&16u16.to_be_bytes());
        ip[6] = 43; // routing header
        ip[7] = 64;
        ip[8..10].copy_from_slice(&[0x20, 0x01]);
        ip[24..26].copy_from_slice(&[0x20, 0x01]);
        ip[39] = 1;
        ip[40] = 58; // then ICMPv6
        ip[42] = 4; // type 4 (SRH)
        ip[43] = 1; // one segment left
        ip[48] = 128; // echo request
        assert_eq!(check(&f), Checked::NotChecked);
        // With no segments left the header's destination is the final one:
        // checked, and here the checksum (zero) is wrong.
        f[14 + 43] = 0;
        assert_eq!(check(&f), Checked::Bad("ICMPv6 checksum".into()));
    }
}
