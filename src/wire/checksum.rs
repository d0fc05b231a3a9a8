//! Internet checksum arithmetic (RFC 1071) and incremental update (RFC 1624).
//!
//! Every incremental update here uses RFC 1624 eqn. 3, `HC' = ~(~HC + ~m + m')`,
//! never eqn. 2 (`HC - ~m - m'`), which can turn a correct 0x0000 into 0xFFFF
//! and back. With eqn. 3 the result is bit-for-bit what a full recomputation
//! gives, so checksums stay comparable with other implementations.

use std::net::IpAddr;

/// One's-complement sum of `data` as big-endian 16-bit words (plus `initial`),
/// returned folded to 16 bits but not complemented, so callers can keep adding.
/// An odd trailing byte is padded with zero (RFC 1071).
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // 32-bit big-endian chunks into a 64-bit accumulator: 2^16 ≡ 1 (mod 0xFFFF),
    // so this is the same one's-complement sum, with half the additions.
    let mut acc: u64 = initial as u64;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        acc += u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u64;
    }
    let rest = chunks.remainder();
    let mut i = 0;
    while i + 1 < rest.len() {
        acc += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        acc += (rest[i] as u64) << 8;
    }
    // Fold all the way to 16 bits (plus carry): callers add small terms to
    // the result, which must not overflow a u32.
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// Fold a 32-bit sum to 16 bits (not complemented).
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// A pending incremental change to one checksum: the sum of `~old + new`
/// over every changed 16-bit word. Lets one edit be applied to several
/// checksums (e.g. an inner header and the outer ICMP message quoting it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delta(u32);

impl Delta {
    pub const fn new() -> Self {
        Delta(0)
    }

    pub fn word(&mut self, old: u16, new: u16) {
        // Fold eagerly so a long run of edits cannot overflow the accumulator.
        self.0 = fold(self.0 + (!old as u32) + new as u32) as u32;
    }

    pub fn word32(&mut self, old: u32, new: u32) {
        self.word((old >> 16) as u16, (new >> 16) as u16);
        self.word(old as u16, new as u16);
    }

    /// Same-length byte strings starting at an even offset of the checksummed data.
    pub fn bytes(&mut self, old: &[u8], new: &[u8]) {
        debug_assert_eq!(old.len(), new.len());
        for (o, n) in old.chunks(2).zip(new.chunks(2)) {
            let o = u16::from_be_bytes([o[0], *o.get(1).unwrap_or(&0)]);
            let n = u16::from_be_bytes([n[0], *n.get(1).unwrap_or(&0)]);
            self.word(o, n);
        }
    }

    pub fn addr(&mut self, old: IpAddr, new: IpAddr) {
        match (old, new) {
            (IpAddr::V4(o), IpAddr::V4(n)) => self.bytes(&o.octets(), &n.octets()),
            (IpAddr::V6(o), IpAddr::V6(n)) => self.bytes(&o.octets(), &n.octets()),
            // Mixed families have no incremental meaning; callers never do this.
            _ => debug_assert!(false, "address family mismatch"),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    /// Eqn. 3 applied to `csum`.
    pub fn apply(&self, csum: u16) -> u16 {
        !fold((!csum as u32) + self.0)
    }

    /// As `apply` for a UDP checksum: 0 means "no checksum" and stays 0, and
    /// a result of 0 is sent as 0xFFFF (RFC 768).
    pub fn apply_udp(&self, csum: u16) -> u16 {
        if csum == 0 {
            return 0;
        }
        match self.apply(csum) {
            0 => 0xffff,
            c => c,
        }
    }
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changed from `old` to `new`.
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let mut d = Delta::new();
    d.word(old, new);
    d.apply(csum)
}

/// As `update16` for a 32-bit field (two words).
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let mut d = Delta::new();
    d.word32(old, new);
    d.apply(csum)
}

/// As `update16` for an address (4 or 16 bytes; both the same family).
pub fn update_addr(csum: u16, old: IpAddr, new: IpAddr) -> u16 {
    let mut d = Delta::new();
    d.addr(old, new);
    d.apply(csum)
}

/// Full IPv4 header checksum of `hdr` (with its checksum field treated as zero).
pub fn ipv4_header(hdr: &[u8]) -> u16 {
    if hdr.len() < 12 {
        return !fold(sum(hdr, 0));
    }
    !fold(sum(&hdr[12..], sum(&hdr[..10], 0)))
}

/// One's-complement addition of two unfolded 32-bit sums.
fn add_carry(a: u32, b: u32) -> u32 {
    let s = a as u64 + b as u64;
    ((s & 0xffff_ffff) + (s >> 32)) as u32
}

/// Unfolded sum of the TCP/UDP/ICMPv6 pseudo-header (RFC 793, 768, 8200 §8.1).
pub fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let acc = sum(&s.octets(), 0);
            let acc = sum(&d.octets(), acc);
            // `sum` may return up to u32::MAX: add with the end-around carry.
            add_carry(acc, proto as u32 + (len as u32 & 0xffff))
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let acc = sum(&s.octets(), 0);
            let acc = sum(&d.octets(), acc);
            let l = len as u32;
            add_carry(acc, (l >> 16) + (l & 0xffff) + proto as u32)
        }
        _ => {
            debug_assert!(false, "address family mismatch");
            0
        }
    }
}

/// Full TCP/UDP/ICMPv6 checksum over the pseudo-header and `segment`
/// (whose checksum field is treated as zero). `proto` 6, 17 or 58.
/// For UDP a computed 0 is returned as 0xFFFF, since 0 means "no checksum".
pub fn transport(src: IpAddr, dst: IpAddr, proto: u8, segment: &[u8], csum_offset: usize) -> u16 {
    let mut acc = pseudo_header(src, dst, proto, segment.len());
    if csum_offset + 2 <= segment.len() && csum_offset.is_multiple_of(2) {
        acc = sum(&segment[..csum_offset], acc);
        acc = sum(&segment[csum_offset + 2..], acc);
    } else {
        acc = sum(segment, acc);
    }
    let c = !fold(acc);
    if proto == super::PROTO_UDP && c == 0 {
        0xffff
    } else {
        c
    }
}

/// Plain checksum of `data` with the field at `csum_offset` treated as zero
/// (ICMPv4 messages, which have no pseudo-header).
pub fn plain(data: &[u8], csum_offset: usize) -> u16 {
    if csum_offset + 2 <= data.len() && csum_offset.is_multiple_of(2) {
        !fold(sum(&data[csum_offset + 2..], sum(&data[..csum_offset], 0)))
    } else {
        !fold(sum(data, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn rfc1071_example() {
        // The worked example in RFC 1071 §3: sum ddf2, checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(!fold(sum(&data, 0)), 0x220d);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(fold(sum(&[0x12, 0x34, 0x56], 0)), 0x1234 + 0x5600);
        assert_eq!(fold(sum(&[0xab], 0)), 0xab00);
    }

    #[test]
    fn sum_handles_large_inputs_without_overflow() {
        let data = vec![0xffu8; 200_000];
        assert_eq!(fold(sum(&data, 0)), 0xffff);
        let data = vec![0x01u8; 131_073];
        // Compare against a plain word-by-word reference.
        let mut r: u64 = 0;
        for c in data.chunks(2) {
            r += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
        }
        while r >> 16 != 0 {
            r = (r & 0xffff) + (r >> 16);
        }
        assert_eq!(fold(sum(&data, 0)), r as u16);
    }

    #[test]
    fn rfc1624_zero_pitfall() {
        // RFC 1624 §3's example: the header sums to 0xCD7A apart from one word
        // changing from 0x5555 to 0x3285; eqn. 3 must give what a full recompute gives
        // (0x0000), where eqn. 2 would give 0xFFFF.
        let before = [0xcd7a_u16.to_be_bytes(), 0x5555_u16.to_be_bytes()].concat();
        let after = [0xcd7a_u16.to_be_bytes(), 0x3285_u16.to_be_bytes()].concat();
        let hc = !fold(sum(&before, 0));
        let full = !fold(sum(&after, 0));
        assert_eq!(full, 0x0000);
        assert_eq!(update16(hc, 0x5555, 0x3285), full);
    }

    #[test]
    fn incremental_matches_full_for_many_words() {
        let mut data: Vec<u8> = (0..64u32).map(|i| (i * 37 + 11) as u8).collect();
        let mut c = plain(&data, 0);
        for i in 1..32 {
            let old = u16::from_be_bytes([data[2 * i], data[2 * i + 1]]);
            let new = old.wrapping_mul(31).wrapping_add(i as u16 * 977);
            data[2 * i..2 * i + 2].copy_from_slice(&new.to_be_bytes());
            c = update16(c, old, new);
            assert_eq!(c, plain(&data, 0), "word {i}");
        }
        let old = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        data[4..8].copy_from_slice(&0xdead_beef_u32.to_be_bytes());
        assert_eq!(update32(c, old, 0xdead_beef), plain(&data, 0));
    }

    #[test]
    fn address_update_and_pseudo_header() {
        let s4 = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        let d4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
        let n4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 99));
        let seg = [0x04, 0x00, 0x00, 0x15, 0, 8, 0, 0, 1, 2, 3];
        let c = transport(s4, d4, 6, &seg, 16);
        assert_eq!(update_addr(c, s4, n4), transport(n4, d4, 6, &seg, 16));
        let s6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
        let n6 = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0xabcd, 2));
        let c = transport(s6, s6, 58, &seg, 2);
        assert_eq!(update_addr(c, s6, n6), transport(n6, s6, 58, &seg, 2));
    }

    #[test]
    fn extreme_addresses_do_not_overflow() {
        let ones = IpAddr::V4(Ipv4Addr::BROADCAST);
        let seg = [0xffu8; 21];
        let c = transport(ones, ones, 17, &seg, 6);
        // Reference: plain word sum of pseudo-header + segment (checksum field zero).
        let mut r: u64 = 4 * 0xffff + 17 + 21;
        for (i, c) in seg.chunks(2).enumerate() {
            if i != 3 {
                r += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
            }
        }
        while r >> 16 != 0 {
            r = (r & 0xffff) + (r >> 16);
        }
        assert_eq!(c, !(r as u16));
        // Four 0xFFFF words plus an initial u32::MAX (≡ 0xFFFF + 0xFFFF) is 6 × 0xFFFF ≡ 0xFFFF.
        assert_eq!(fold(sum(&[0xff; 8], u32::MAX)), 0xffff);
        let six = IpAddr::V6(Ipv6Addr::from([0xff; 16]));
        let _ = transport(six, six, 58, &[0xff; 64], 2);
    }

    #[test]
    fn udp_zero_is_sent_as_ffff_and_none_stays_none() {
        let mut d = Delta::new();
        d.word(0x1234, 0x1234);
        assert_eq!(d.apply_udp(0), 0);
        // A change that makes the checksum come out as 0x0000.
        let mut d = Delta::new();
        d.word(0x0000, 0x0001);
        assert_eq!(d.apply(0x0001), 0x0000);
        assert_eq!(d.apply_udp(0x0001), 0xffff);
    }

    #[test]
    fn ipv4_header_checksum_known_value() {
        // A textbook header (Wikipedia's IPv4 checksum example): checksum b861.
        let mut h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(ipv4_header(&h), 0xb861);
        // The field's current content must not matter.
        h[10] = 0x12;
        h[11] = 0x34;
        assert_eq!(ipv4_header(&h), 0xb861);
    }
}
