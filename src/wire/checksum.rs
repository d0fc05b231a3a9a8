//! Internet checksum arithmetic (RFC 1071) and incremental update (RFC 1624).

/// One's-complement sum of `data` as big-endian 16-bit words, unfolded.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let _ = (data, initial);
    todo!()
}

/// Fold a 32-bit sum to 16 bits (not complemented).
pub fn fold(sum: u32) -> u16 {
    let _ = sum;
    todo!()
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit word changed from `old` to `new`.
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    let _ = (csum, old, new);
    todo!()
}

/// As `update16` for a 32-bit field (two words).
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    let _ = (csum, old, new);
    todo!()
}

/// As `update16` for an address (4 or 16 bytes; both the same family).
pub fn update_addr(csum: u16, old: std::net::IpAddr, new: std::net::IpAddr) -> u16 {
    let _ = (csum, old, new);
    todo!()
}

/// Full IPv4 header checksum of `hdr` (with its checksum field treated as zero).
pub fn ipv4_header(hdr: &[u8]) -> u16 {
    let _ = hdr;
    todo!()
}

/// Full TCP/UDP/ICMPv6 checksum over the pseudo-header and `segment`
/// (whose checksum field is treated as zero). `proto` 6, 17 or 58.
pub fn transport(src: std::net::IpAddr, dst: std::net::IpAddr, proto: u8, segment: &[u8], csum_offset: usize) -> u16 {
    let _ = (src, dst, proto, segment, csum_offset);
    todo!()
}
