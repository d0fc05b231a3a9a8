//! Link-layer normalisation: every supported capture link type becomes an
//! Ethernet II frame, so the engine only ever parses one framing.
//!
//! Frames that cannot be normalised are reported with a reason rather than
//! dropped here: replay must count every input frame.

/// Link types from the tcpdump.org LINKTYPE registry that we understand.
pub const LINKTYPE_NULL: u32 = 0;
pub const LINKTYPE_ETHERNET: u32 = 1;
pub const LINKTYPE_RAW: u32 = 101;
pub const LINKTYPE_LOOP: u32 = 108;
pub const LINKTYPE_LINUX_SLL: u32 = 113;
pub const LINKTYPE_IPV4: u32 = 228;
pub const LINKTYPE_IPV6: u32 = 229;
pub const LINKTYPE_LINUX_SLL2: u32 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

/// Length of the Ethernet II header we synthesise.
pub const ETHERNET_HEADER_LEN: usize = 14;

/// A frame that could not be turned into Ethernet, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported(pub String);

/// Write `data`, captured with `linktype`, into `out` as an Ethernet II frame.
/// `out` is cleared first; on error its contents are unspecified.
pub fn normalise(linktype: u32, data: &[u8], out: &mut Vec<u8>) -> Result<(), Unsupported> {
    out.clear();
    match linktype {
        // Passed through untouched, even when short or not IP: the engine
        // judges Ethernet frames itself (ARP for its own addresses, malformed...).
        LINKTYPE_ETHERNET => {
            out.extend_from_slice(data);
            Ok(())
        }
        LINKTYPE_LINUX_SLL => {
            // packet type(2) ARPHRD(2) addr len(2) addr(8) protocol(2)
            if data.len() < 16 {
                return Err(short("Linux cooked (SLL)", data.len(), 16));
            }
            let addr_len = be16(&data[4..6]) as usize;
            let src = (addr_len == 6).then(|| &data[6..12]);
            let proto = be16(&data[14..16]);
            cooked(out, "Linux cooked (SLL)", proto, src, &data[16..])
        }
        LINKTYPE_LINUX_SLL2 => {
            // protocol(2) reserved(2) ifindex(4) ARPHRD(2) packet type(1) addr len(1) addr(8)
            if data.len() < 20 {
                return Err(short("Linux cooked (SLL2)", data.len(), 20));
            }
            let proto = be16(&data[0..2]);
            let src = (data[11] == 6).then(|| &data[12..18]);
            cooked(out, "Linux cooked (SLL2)", proto, src, &data[20..])
        }
        LINKTYPE_RAW => raw_ip(out, "raw IP", data, None),
        LINKTYPE_IPV4 => raw_ip(out, "raw IPv4", data, Some(4)),
        LINKTYPE_IPV6 => raw_ip(out, "raw IPv6", data, Some(6)),
        LINKTYPE_NULL | LINKTYPE_LOOP => {
            let name = if linktype == LINKTYPE_NULL { "BSD loopback (NULL)" } else { "BSD loopback (LOOP)" };
            if data.len() < 4 {
                return Err(short(name, data.len(), 4));
            }
            let raw = [data[0], data[1], data[2], data[3]];
            let af = if linktype == LINKTYPE_LOOP {
                u32::from_be_bytes(raw)
            } else {
                // NULL stores the family in the writer's byte order, which the
                // file does not record; families are small, so the order that
                // gives a small number is the right one.
                let le = u32::from_le_bytes(raw);
                if le > 0xFFFF {
                    le.swap_bytes()
                } else {
                    le
                }
            };
            let ethertype = match af {
                2 => ETHERTYPE_IPV4,
                // AF_INET6 differs by OS: NetBSD/OpenBSD 24, FreeBSD 28, Darwin 30.
                24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return Err(Unsupported(format!("{name} address family {af} is not IPv4/IPv6"))),
            };
            synthesise(out, ethertype, None, &data[4..]);
            Ok(())
        }
        other => Err(Unsupported(format!("link type {other} is not supported"))),
    }
}

fn cooked(out: &mut Vec<u8>, name: &str, proto: u16, src: Option<&[u8]>, payload: &[u8]) -> Result<(), Unsupported> {
    match proto {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => {
            synthesise(out, proto, src, payload);
            Ok(())
        }
        _ => Err(Unsupported(format!("{name} protocol 0x{proto:04x} is not IPv4/IPv6"))),
    }
}

fn raw_ip(out: &mut Vec<u8>, name: &str, data: &[u8], want: Option<u8>) -> Result<(), Unsupported> {
    let Some(&first) = data.first() else {
        return Err(Unsupported(format!("{name} frame is empty")));
    };
    let version = first >> 4;
    if want.is_some_and(|w| w != version) || !(version == 4 || version == 6) {
        return Err(Unsupported(format!("{name} frame has IP version {version}")));
    }
    let ethertype = if version == 4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
    synthesise(out, ethertype, None, data);
    Ok(())
}

/// Destination MAC is left zero: the capture does not say which station
/// received it, and replay never depends on it.
fn synthesise(out: &mut Vec<u8>, ethertype: u16, src: Option<&[u8]>, payload: &[u8]) {
    out.reserve(ETHERNET_HEADER_LEN + payload.len());
    out.extend_from_slice(&[0; 6]);
    match src {
        Some(mac) => out.extend_from_slice(mac),
        None => out.extend_from_slice(&[0; 6]),
    }
    out.extend_from_slice(&ethertype.to_be_bytes());
    out.extend_from_slice(payload);
}

fn short(name: &str, got: usize, need: usize) -> Unsupported {
    Unsupported(format!("{name} frame of {got} bytes is shorter than its {need}-byte link header"))
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

#[cfg(test)]
mod tests {
    use super::*;

    const V4: [u8; 20] = [0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 1];
    const V6_FIRST: [u8; 4] = [0x60, 0, 0, 0];
    const MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

    fn norm(linktype: u32, data: &[u8]) -> Result<Vec<u8>, Unsupported> {
        let mut out = vec![0xEE; 3]; // must be cleared
        normalise(linktype, data, &mut out).map(|()| out)
    }

    fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&dst);
        v.extend_from_slice(&src);
        v.extend_from_slice(&ethertype.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn ethernet_is_untouched_even_when_short() {
        let f = eth([1; 6], MAC, 0x0806, &[9, 9]);
        assert_eq!(norm(LINKTYPE_ETHERNET, &f).unwrap(), f);
        assert_eq!(norm(LINKTYPE_ETHERNET, &[1, 2, 3]).unwrap(), vec![1, 2, 3]);
    }

    fn sll(proto: u16, addr_len: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 0, 1]; // to us, ARPHRD_ETHER
        v.extend_from_slice(&addr_len.to_be_bytes());
        v.extend_from_slice(&MAC);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&proto.to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn sll_takes_protocol_and_six_byte_source() {
        assert_eq!(norm(LINKTYPE_LINUX_SLL, &sll(0x0800, 6, &V4)).unwrap(), eth([0; 6], MAC, 0x0800, &V4));
        // A non-Ethernet address (e.g. 4-byte tunnel) is not a MAC.
        assert_eq!(
            norm(LINKTYPE_LINUX_SLL, &sll(0x86DD, 4, &V6_FIRST)).unwrap(),
            eth([0; 6], [0; 6], 0x86DD, &V6_FIRST)
        );
    }

    #[test]
    fn sll_non_ip_and_short_are_unsupported() {
        let e = norm(LINKTYPE_LINUX_SLL, &sll(0x0806, 6, &[0; 28])).unwrap_err();
        assert!(e.0.contains("0x0806"), "{}", e.0);
        let e = norm(LINKTYPE_LINUX_SLL, &[0; 15]).unwrap_err();
        assert!(e.0.contains("shorter"), "{}", e.0);
    }

    fn sll2(proto: u16, addr_len: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = proto.to_be_bytes().to_vec();
        v.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, addr_len]);
        v.extend_from_slice(&MAC);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn sll2_takes_protocol_and_source() {
        assert_eq!(norm(LINKTYPE_LINUX_SLL2, &sll2(0x0800, 6, &V4)).unwrap(), eth([0; 6], MAC, 0x0800, &V4));
        assert_eq!(
            norm(LINKTYPE_LINUX_SLL2, &sll2(0x86DD, 0, &V6_FIRST)).unwrap(),
            eth([0; 6], [0; 6], 0x86DD, &V6_FIRST)
        );
        assert!(norm(LINKTYPE_LINUX_SLL2, &sll2(0x8035, 6, &[])).is_err());
        assert!(norm(LINKTYPE_LINUX_SLL2, &[0x08, 0, 0]).is_err());
    }

    #[test]
    fn raw_ip_uses_version_nibble() {
        assert_eq!(norm(LINKTYPE_RAW, &V4).unwrap(), eth([0; 6], [0; 6], 0x0800, &V4));
        assert_eq!(norm(LINKTYPE_RAW, &V6_FIRST).unwrap(), eth([0; 6], [0; 6], 0x86DD, &V6_FIRST));
        assert!(norm(LINKTYPE_RAW, &[0x50, 0]).unwrap_err().0.contains("version 5"));
        assert!(norm(LINKTYPE_RAW, &[]).is_err());
    }

    #[test]
    fn ipv4_and_ipv6_link_types_insist_on_their_version() {
        assert_eq!(norm(LINKTYPE_IPV4, &V4).unwrap(), eth([0; 6], [0; 6], 0x0800, &V4));
        assert!(norm(LINKTYPE_IPV4, &V6_FIRST).is_err());
        assert_eq!(norm(LINKTYPE_IPV6, &V6_FIRST).unwrap(), eth([0; 6], [0; 6], 0x86DD, &V6_FIRST));
        assert!(norm(LINKTYPE_IPV6, &V4).is_err());
    }

    #[test]
    fn null_accepts_either_byte_order() {
        let mut le = 2u32.to_le_bytes().to_vec();
        le.extend_from_slice(&V4);
        assert_eq!(norm(LINKTYPE_NULL, &le).unwrap(), eth([0; 6], [0; 6], 0x0800, &V4));
        let mut be = 30u32.to_be_bytes().to_vec();
        be.extend_from_slice(&V6_FIRST);
        assert_eq!(norm(LINKTYPE_NULL, &be).unwrap(), eth([0; 6], [0; 6], 0x86DD, &V6_FIRST));
        let mut other = 7u32.to_le_bytes().to_vec();
        other.extend_from_slice(&V4);
        assert!(norm(LINKTYPE_NULL, &other).unwrap_err().0.contains("family 7"));
        assert!(norm(LINKTYPE_NULL, &[2, 0]).is_err());
    }

    #[test]
    fn loop_is_network_order() {
        let mut be = 2u32.to_be_bytes().to_vec();
        be.extend_from_slice(&V4);
        assert_eq!(norm(LINKTYPE_LOOP, &be).unwrap(), eth([0; 6], [0; 6], 0x0800, &V4));
        let mut le = 24u32.to_le_bytes().to_vec();
        le.extend_from_slice(&V6_FIRST);
        assert!(norm(LINKTYPE_LOOP, &le).is_err(), "LOOP in host order is not LOOP");
        let mut be6 = 28u32.to_be_bytes().to_vec();
        be6.extend_from_slice(&V6_FIRST);
        assert_eq!(norm(LINKTYPE_LOOP, &be6).unwrap(), eth([0; 6], [0; 6], 0x86DD, &V6_FIRST));
    }

    #[test]
    fn unknown_link_type_is_named() {
        let e = norm(105, &V4).unwrap_err();
        assert_eq!(e.0, "link type 105 is not supported");
    }
}
