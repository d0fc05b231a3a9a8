//! Small parsers for the scalar values of the configuration: durations,
//! ports and port ranges, CIDRs, addresses, MACs, device names and FTP verbs.
//!
//! Each takes the text as written and returns either the value or a message
//! that tells the user what to write instead. They know nothing about YAML
//! locations; the caller attaches those.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;

/// `30s`, `5d`, `1500ms`, `2m`, `1h`; a bare number means seconds.
/// Zero is refused: every duration in the file is a timeout, and a zero
/// timeout would close things the moment they open.
pub fn duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let unit = unit.trim_start();
    if unit.starts_with('.') {
        return Err(format!("'{text}' is not a whole number: use a smaller unit, e.g. 1500ms rather than 1.5s"));
    }
    if num.is_empty() {
        return Err(format!("'{text}' is not a duration: write a whole number and a unit (ms, s, m, h, d), e.g. 30s"));
    }
    let n: u64 = num.parse().map_err(|_| format!("'{text}' is too large for a duration"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{text}' has an unknown unit '{unit}': use ms, s, m, h or d (e.g. 30s, 5d, 1500ms)")),
    };
    let ms = n.checked_mul(millis_per_unit).ok_or_else(|| format!("'{text}' is too large for a duration"))?;
    if ms == 0 {
        return Err(format!("'{text}' is zero: a timeout must be longer than zero"));
    }
    Ok(Duration::from_millis(ms))
}

/// Bare integer durations are seconds.
pub fn duration_secs(n: i128) -> Result<Duration, String> {
    if n <= 0 {
        return Err(format!("{n} is not a positive number of seconds: write e.g. 30s"));
    }
    let secs = u64::try_from(n).map_err(|_| format!("{n} seconds is too large for a duration"))?;
    secs.checked_mul(1_000).map(Duration::from_millis).ok_or_else(|| format!("{n} seconds is too large for a duration"))
}

/// A port number 1..=65535. Port 0 is not a port anyone can connect to.
pub fn port_number(n: i128) -> Result<u16, String> {
    match u16::try_from(n) {
        Ok(0) => Err("port 0 is not a usable port: use 1-65535".into()),
        Ok(p) => Ok(p),
        Err(_) => Err(format!("port {n} is out of range: use 1-65535")),
    }
}

fn port_text(text: &str) -> Result<u16, String> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a port number: use 1-65535"));
    }
    match t.parse::<u32>() {
        Ok(n) => port_number(n.into()),
        Err(_) => Err(format!("port {t} is out of range: use 1-65535")),
    }
}

/// `"21"` or `"8000-8100"` (inclusive). A range must not be reversed.
pub fn port_range(text: &str) -> Result<(u16, u16), String> {
    match text.split_once('-') {
        None => port_text(text).map(|p| (p, p)),
        Some((a, b)) => {
            let (lo, hi) = (port_text(a)?, port_text(b)?);
            if lo > hi {
                return Err(format!("port range '{text}' is reversed: write the lower port first, {hi}-{lo}"));
            }
            Ok((lo, hi))
        }
    }
}

pub fn ip(text: &str) -> Result<IpAddr, String> {
    let t = text.trim();
    t.parse::<IpAddr>().map_err(|_| {
        if t.contains('/') {
            format!("'{text}' is a network, not an address: drop the /prefix")
        } else {
            format!("'{text}' is not an IPv4 or IPv6 address")
        }
    })
}

fn bare_or_cidr(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    if !t.contains('/') {
        return ip(t).map(IpNet::from);
    }
    t.parse::<IpNet>().map_err(|_| {
        let (addr, len) = t.split_once('/').unwrap_or((t, ""));
        match addr.parse::<IpAddr>() {
            Err(_) => format!("'{text}' is not a CIDR: '{addr}' is not an IPv4 or IPv6 address"),
            Ok(a) => {
                let max = if a.is_ipv4() { 32 } else { 128 };
                format!("'{text}' is not a CIDR: prefix length '{len}' must be 0-{max}")
            }
        }
    })
}

/// A network (route destination, rule source or destination): a bare
/// address means /32 or /128. Host bits must be clear, because
/// `192.0.2.1/24` is usually a typo for either `192.0.2.1` or `192.0.2.0/24`
/// and a firewall should not guess which.
pub fn network(text: &str) -> Result<IpNet, String> {
    let n = bare_or_cidr(text)?;
    if n.trunc() != n {
        return Err(format!(
            "'{text}' has host bits set: write the network {} (or the single address {})",
            n.trunc(),
            n.addr()
        ));
    }
    Ok(n)
}

/// One of the gateway's own addresses with the prefix of its connected
/// network, e.g. `192.0.2.1/24`. A bare address means /32 or /128.
pub fn interface_address(text: &str) -> Result<IpNet, String> {
    let n = bare_or_cidr(text)?;
    let host_room = n.max_prefix_len() - n.prefix_len();
    // /31, /32, /127 and /128 have no network or broadcast address to avoid.
    if host_room >= 2 && n.addr() == n.network() {
        return Err(format!(
            "'{text}' is the network address, not one of the gateway's own: write e.g. {}/{}",
            first_host(&n),
            n.prefix_len()
        ));
    }
    if n.addr().is_ipv4() && host_room >= 2 && n.addr() == n.broadcast() {
        return Err(format!(
            "'{text}' is the broadcast address, not one of the gateway's own: write e.g. {}/{}",
            first_host(&n),
            n.prefix_len()
        ));
    }
    if n.addr().is_unspecified() || n.addr().is_multicast() {
        return Err(format!("'{text}' cannot be an interface address: use a unicast address"));
    }
    Ok(n)
}

fn first_host(n: &IpNet) -> IpAddr {
    n.hosts().next().unwrap_or(n.addr())
}

/// `192.0.2.20:21` or `[2001:db8:1::20]:21`.
pub fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    let t = text.trim();
    let s: SocketAddr = t.parse().map_err(|_| {
        if t.parse::<IpAddr>().is_ok() {
            format!("'{text}' has no port: write ADDRESS:PORT, e.g. 192.0.2.20:21 or [2001:db8:1::20]:21")
        } else {
            format!("'{text}' is not ADDRESS:PORT: write e.g. 192.0.2.20:21 or [2001:db8:1::20]:21")
        }
    })?;
    if s.port() == 0 {
        return Err(format!("'{text}' names port 0: use a port 1-65535"));
    }
    if s.ip().is_unspecified() || s.ip().is_multicast() {
        return Err(format!("'{text}' is not a unicast address a server can have"));
    }
    Ok(s)
}

/// `aa:bb:cc:dd:ee:ff`: the gateway's own, so unicast and not all zero.
pub fn mac(text: &str) -> Result<[u8; 6], String> {
    let t = text.trim();
    let bad = || format!("'{text}' is not a MAC address: write six hex pairs, e.g. 02:00:00:00:00:01");
    let mut out = [0u8; 6];
    let mut parts = t.split(':');
    for byte in out.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        // from_str_radix alone would take a sign ("+2").
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    if out[0] & 1 == 1 {
        return Err(format!("'{text}' is a multicast MAC: an interface needs a unicast one (first byte even)"));
    }
    if out == [0; 6] {
        return Err(format!(
            "'{text}' is all zeros: use the device's real MAC or a locally administered one like 02:00:00:00:00:01"
        ));
    }
    Ok(out)
}

/// Linux accepts fewer than 16 bytes, no '/', ':' or whitespace, and not
/// `.` or `..` (see dev_valid_name in the kernel). Refusing here gives the
/// user the reason before `run` gets an opaque ENODEV.
pub fn device_name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the device name is empty: write the Linux interface, e.g. eth0".into());
    }
    if text.len() > 15 {
        return Err(format!("device name '{text}' is longer than Linux allows (15 bytes)"));
    }
    if text == "." || text == ".." || text.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
        return Err(format!("'{text}' is not a Linux interface name (no '/', ':' or spaces)"));
    }
    Ok(())
}

/// Interface and rule names end up in events and in the rules that refer
/// to them, so keep them to a plain, unambiguous alphabet.
pub fn name(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the name is empty".into());
    }
    if text.len() > 64 {
        return Err(format!("'{text}' is longer than 64 characters"));
    }
    if !text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(format!("'{text}' may contain only letters, digits, '-', '_' and '.'"));
    }
    Ok(())
}

/// An FTP command verb as RFC 959 defines them: three or four letters.
/// Returned upper-cased, the form the engine compares against.
pub fn ftp_verb(text: &str) -> Result<String, String> {
    let t = text.trim();
    if !(3..=4).contains(&t.len()) || !t.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(format!("'{text}' is not an FTP command: write the 3 or 4 letter verb alone, e.g. SITE or DELE"));
    }
    Ok(t.to_ascii_uppercase())
}

/// The closest allowed word, for "did you mean": one edit away for short
/// words, two for longer ones (closer than that suggests nonsense).
pub fn suggest<'a>(word: &str, allowed: &[&'a str]) -> Option<&'a str> {
    let limit = if word.chars().count() <= 4 { 1 } else { 2 };
    allowed
        .iter()
        .map(|a| (edit_distance(word, a), *a))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(duration("5d"), Ok(Duration::from_secs(5 * 86_400)));
        assert_eq!(duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(duration("45"), Ok(Duration::from_secs(45)));
        assert_eq!(duration(" 10 s "), Ok(Duration::from_secs(10)));
        assert!(duration("0s").unwrap_err().contains("zero"));
        assert!(duration("10x").unwrap_err().contains("unknown unit 'x'"));
        assert!(duration("1.5s").unwrap_err().contains("smaller unit"));
        assert!(duration("s").unwrap_err().contains("not a duration"));
        assert!(duration("").is_err());
        assert!(duration("-5s").is_err());
        assert!(duration("99999999999999999999d").unwrap_err().contains("too large"));
        assert!(duration("999999999999999d").unwrap_err().contains("too large"));
        assert_eq!(duration_secs(30), Ok(Duration::from_secs(30)));
        assert!(duration_secs(0).is_err());
        assert!(duration_secs(-1).is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(port_number(21), Ok(21));
        assert_eq!(port_number(65535), Ok(65535));
        assert!(port_number(0).unwrap_err().contains("port 0"));
        assert!(port_number(65536).unwrap_err().contains("out of range"));
        assert!(port_number(-1).is_err());
        assert_eq!(port_range("21"), Ok((21, 21)));
        assert_eq!(port_range("8000-8100"), Ok((8000, 8100)));
        assert_eq!(port_range(" 8000 - 8100 "), Ok((8000, 8100)));
        assert_eq!(port_range("5-5"), Ok((5, 5)));
        assert!(port_range("8100-8000").unwrap_err().contains("reversed: write the lower port first, 8000-8100"));
        assert!(port_range("0-10").unwrap_err().contains("port 0"));
        assert!(port_range("1-65536").unwrap_err().contains("out of range"));
        assert!(port_range("1-99999999999").unwrap_err().contains("out of range"));
        assert!(port_range("ftp").is_err());
        assert!(port_range("1-2-3").is_err());
        assert!(port_range("-5").is_err());
        assert!(port_range("+5").is_err());
    }

    #[test]
    fn networks_and_addresses() {
        assert_eq!(network("10.0.0.0/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(network("192.0.2.7"), Ok("192.0.2.7/32".parse().unwrap()));
        assert_eq!(network("2001:db8::1"), Ok("2001:db8::1/128".parse().unwrap()));
        assert_eq!(network("::/0"), Ok("::/0".parse().unwrap()));
        assert!(network("192.0.2.1/24").unwrap_err().contains("write the network 192.0.2.0/24"));
        assert!(network("192.0.2.0/33").unwrap_err().contains("prefix length '33' must be 0-32"));
        assert!(network("2001:db8::/129").unwrap_err().contains("0-128"));
        assert!(network("192.0.2.256/24").unwrap_err().contains("'192.0.2.256' is not"));
        assert!(network("inside").is_err());
        assert_eq!(interface_address("192.0.2.1/24"), Ok("192.0.2.1/24".parse().unwrap()));
        assert_eq!(interface_address("198.51.100.1"), Ok("198.51.100.1/32".parse().unwrap()));
        assert_eq!(interface_address("192.0.2.0/31"), Ok("192.0.2.0/31".parse().unwrap()));
        assert!(interface_address("192.0.2.0/24").unwrap_err().contains("write e.g. 192.0.2.1/24"));
        assert!(interface_address("192.0.2.255/24").unwrap_err().contains("broadcast"));
        assert!(interface_address("2001:db8:1::/64").unwrap_err().contains("network address"));
        assert!(interface_address("0.0.0.0/0").is_err());
        assert!(interface_address("224.0.0.1/4").is_err());
        assert_eq!(ip("2001:db8::1"), Ok("2001:db8::1".parse().unwrap()));
        assert!(ip("198.51.100.0/24").unwrap_err().contains("drop the /prefix"));
        assert!(ip("gateway").is_err());
    }

    #[test]
    fn socket_addrs() {
        assert_eq!(socket_addr("192.0.2.20:21"), Ok("192.0.2.20:21".parse().unwrap()));
        assert_eq!(socket_addr("[2001:db8:1::20]:21"), Ok("[2001:db8:1::20]:21".parse().unwrap()));
        assert!(socket_addr("192.0.2.20").unwrap_err().contains("has no port"));
        assert!(socket_addr("2001:db8:1::20").unwrap_err().contains("has no port"));
        assert!(socket_addr("192.0.2.20:0").unwrap_err().contains("port 0"));
        assert!(socket_addr("192.0.2.20:70000").is_err());
        assert!(socket_addr("server:21").is_err());
        assert!(socket_addr("0.0.0.0:21").is_err());
    }

    #[test]
    fn macs() {
        assert_eq!(mac("02:00:5e:10:00:01"), Ok([2, 0, 0x5e, 0x10, 0, 1]));
        assert_eq!(mac("AA:BB:CC:DD:EE:FE"), Ok([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xfe]));
        assert!(mac("01:00:5e:00:00:01").unwrap_err().contains("multicast"));
        assert!(mac("00:00:00:00:00:00").unwrap_err().contains("zeros"));
        assert!(mac("02:00:00:00:00").is_err());
        assert!(mac("02:00:00:00:00:01:02").is_err());
        assert!(mac("02-00-00-00-00-01").is_err());
        assert!(mac("2:0:0:0:0:1").is_err());
        assert!(mac("0g:00:00:00:00:01").is_err());
        assert!(mac("+2:00:00:00:00:01").is_err());
    }

    #[test]
    fn names_and_verbs() {
        assert!(device_name("veth-gw-in").is_ok());
        assert!(device_name("enp0s31f6").is_ok());
        assert!(device_name("a-very-long-name").is_err());
        assert!(device_name("eth0:1").is_err());
        assert!(device_name("..").is_err());
        assert!(device_name("").is_err());
        assert!(name("lan-to-ftp").is_ok());
        assert!(name("lan to ftp").is_err());
        assert!(name("").is_err());
        assert_eq!(ftp_verb("site"), Ok("SITE".into()));
        assert_eq!(ftp_verb("DELE"), Ok("DELE".into()));
        assert!(ftp_verb("SITE CHMOD").is_err());
        assert!(ftp_verb("X").is_err());
        assert!(ftp_verb("DE1E").is_err());
    }

    #[test]
    fn suggestions() {
        let keys = ["control_ports", "strict", "max_pinholes"];
        assert_eq!(suggest("stricct", &keys), Some("strict"));
        assert_eq!(suggest("max_pinhole", &keys), Some("max_pinholes"));
        assert_eq!(suggest("banana", &keys), None);
        assert_eq!(suggest("permit", &["allow", "deny"]), None);
        assert_eq!(suggest("alow", &["allow", "deny"]), Some("allow"));
        assert_eq!(suggest("any", &["peer", "deny"]), None);
    }
}
