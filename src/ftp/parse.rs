//! Parsers and formatters for the FTP lines the ALG acts on (RFC 959, RFC 1123,
//! RFC 2428, RFC 1639). Lines are given without their CRLF / LF. Parsers never
//! panic and never allocate; formatters write into a caller's buffer.
//!
//! These parsers decide what opens pinholes, so they are exact rather than
//! forgiving. Where real servers or clients would read a line differently
//! from us, the choices below make the gateway see *less* than the peer
//! (no pinhole: the transfer fails, nothing is opened), never more:
//!
//! - The verb is everything up to the first space, compared without regard to
//!   ASCII case. One or more spaces separate it from the argument (RFC 959
//!   says one; several are harmless because the argument's own syntax is
//!   still checked exactly). A line starting with a space has an empty verb
//!   and is `Other`. No Telnet (IAC) processing is done: a verb with IAC bytes
//!   in it is simply not a known verb.
//! - PORT: exactly six fields separated by bare commas (no spaces: RFC 959
//!   has none, and a server that tolerated them might split differently),
//!   each 1..=3 decimal digits (leading zeros allowed, `010` is ten, as every
//!   server reads PORT numbers in decimal) with value 0..=255, nothing before
//!   or after. Values are never reduced modulo 256 (FreeBSD libalias once did,
//!   which let `PORT 10,0,0,1,256,21` mean port 21). Port 0 is malformed.
//! - EPRT: the delimiter is the first byte (33..=126) and must occur exactly
//!   four times, so the split is the only one possible. The IPv4 address is a
//!   strict dotted quad *without* leading zeros: servers that hand it to
//!   `inet_aton` would read `010.0.0.1` as octal 8.0.0.1, a host other than
//!   the one we checked. The IPv6 address is any RFC 4291 text form (zero
//!   compression, embedded IPv4, either case), no zone id. The port is 1..=5
//!   digits, 1..=65535. The address must match the family number.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::ops::Range;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The verb or code is right but the argument is not a valid address/port
    /// (octet > 255, port 0 or > 65535, missing fields, bad delimiter, junk).
    Malformed(&'static str),
}

use ParseError::Malformed;

/// A client command, classified by verb (case-insensitive).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// PORT h1,h2,h3,h4,p1,p2
    Port(SocketAddrV4),
    /// EPRT |af|addr|port| (any delimiter 33..=126)
    Eprt(SocketAddr),
    Pasv,
    /// EPSV, EPSV 1, EPSV 2 (the protocol number if given)
    Epsv(Option<u8>),
    /// EPSV ALL
    EpsvAll,
    /// LPRT / LPSV (RFC 1639): recognised so they can be refused.
    Lprt,
    Lpsv,
    /// AUTH <mechanism>, e.g. TLS, SSL, TLS-C
    Auth(&'a [u8]),
    /// Anything else: the verb (as in the line) and the argument after the
    /// separating space(s).
    Other {
        verb: &'a [u8],
        arg: &'a [u8],
    },
}

/// The verb and the argument. Several separating spaces are tolerated (see the
/// module notes); the argument is otherwise untouched.
fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => {
            let mut arg = &line[i + 1..];
            while let [b' ', rest @ ..] = arg {
                arg = rest;
            }
            (&line[..i], arg)
        }
        None => (line, &[]),
    }
}

/// A decimal number of 1..=`max_digits` ASCII digits. The digit bound keeps
/// the value small (no overflow) and refuses 64-digit "numbers".
fn decimal(field: &[u8], max_digits: usize) -> Option<u32> {
    if field.is_empty() || field.len() > max_digits {
        return None;
    }
    let mut v: u32 = 0;
    for &b in field {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Some(v)
}

/// Why a `h1,h2,h3,h4,p1,p2` group was refused.
#[derive(Clone, Copy)]
enum SixError {
    Few,
    Empty,
    NotNumber,
    Above255,
    More,
    Port0,
}

impl SixError {
    fn port(self) -> ParseError {
        Malformed(match self {
            SixError::Few => "PORT: fewer than six numbers",
            SixError::Empty => "PORT: empty number",
            SixError::NotNumber => "PORT: not a decimal number of at most 3 digits",
            SixError::Above255 => "PORT: number above 255",
            SixError::More => "PORT: more than six numbers or trailing text",
            SixError::Port0 => "PORT: port 0",
        })
    }

    fn pasv(self) -> ParseError {
        Malformed(match self {
            // parse_227 only hands over runs with five or more commas.
            SixError::Few => "227: fewer than six numbers",
            SixError::Empty => "227: empty number",
            SixError::NotNumber => "227: number of more than 3 digits",
            SixError::Above255 => "227: number above 255",
            SixError::More => "227: more than six numbers",
            SixError::Port0 => "227: port 0",
        })
    }
}

/// `h1,h2,h3,h4,p1,p2` and nothing else, shared by PORT and 227.
fn six_numbers(s: &[u8]) -> Result<SocketAddrV4, SixError> {
    let mut n = [0u8; 6];
    let mut fields = s.split(|&b| b == b',');
    for slot in n.iter_mut() {
        let field = fields.next().ok_or(SixError::Few)?;
        if field.is_empty() {
            return Err(SixError::Empty);
        }
        let v = decimal(field, 3).ok_or(SixError::NotNumber)?;
        *slot = u8::try_from(v).map_err(|_| SixError::Above255)?;
    }
    if fields.next().is_some() {
        return Err(SixError::More);
    }
    let port = u16::from_be_bytes([n[4], n[5]]);
    if port == 0 {
        return Err(SixError::Port0);
    }
    Ok(SocketAddrV4::new(Ipv4Addr::new(n[0], n[1], n[2], n[3]), port))
}

/// `<d><af><d><addr><d><port><d>` (RFC 2428 §2).
fn parse_eprt(arg: &[u8]) -> Result<SocketAddr, ParseError> {
    let &d = arg.first().ok_or(Malformed("EPRT: no argument"))?;
    if !(33..=126).contains(&d) {
        return Err(Malformed("EPRT: delimiter outside 33..=126"));
    }
    // Exactly four delimiters: leading, two inner, trailing. Any other count
    // means the delimiter occurs inside a field (or junk follows), and then
    // different splits are possible.
    let mut parts = arg.split(|&b| b == d);
    let (Some(lead), Some(af), Some(addr), Some(port), Some(tail), None) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed("EPRT: not <d>af<d>address<d>port<d>"));
    };
    if !lead.is_empty() || !tail.is_empty() {
        return Err(Malformed("EPRT: not <d>af<d>address<d>port<d>"));
    }
    let port = decimal(port, 5)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(Malformed("EPRT: port not a number in 1..=65535"))?;
    if port == 0 {
        return Err(Malformed("EPRT: port 0"));
    }
    let addr = std::str::from_utf8(addr).map_err(|_| Malformed("EPRT: address not ASCII"))?;
    match af {
        b"1" => addr
            .parse::<Ipv4Addr>()
            .map(|ip| SocketAddr::V4(SocketAddrV4::new(ip, port)))
            .map_err(|_| Malformed("EPRT: af 1 without a dotted-quad IPv4 address")),
        b"2" => addr
            .parse::<Ipv6Addr>()
            .map(|ip| SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)))
            .map_err(|_| Malformed("EPRT: af 2 without an IPv6 address")),
        _ => Err(Malformed("EPRT: address family not 1 or 2")),
    }
}

/// Parse one command line. An unknown verb is `Other`, not an error; a known
/// address-carrying verb with a bad argument is `Err(Malformed)`.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let (verb, arg) = split_verb(line);
    let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
    if is(b"PORT") {
        six_numbers(arg).map(Command::Port).map_err(SixError::port)
    } else if is(b"EPRT") {
        parse_eprt(arg).map(Command::Eprt)
    } else if is(b"PASV") {
        // An argument is not in RFC 959; refusing it keeps the parse exact.
        if arg.is_empty() {
            Ok(Command::Pasv)
        } else {
            Err(Malformed("PASV: takes no argument"))
        }
    } else if is(b"EPSV") {
        match arg {
            b"" => Ok(Command::Epsv(None)),
            b"1" => Ok(Command::Epsv(Some(1))),
            b"2" => Ok(Command::Epsv(Some(2))),
            a if a.eq_ignore_ascii_case(b"ALL") => Ok(Command::EpsvAll),
            _ => Err(Malformed("EPSV: argument not 1, 2 or ALL")),
        }
    } else if is(b"LPRT") {
        Ok(Command::Lprt)
    } else if is(b"LPSV") {
        Ok(Command::Lpsv)
    } else if is(b"AUTH") {
        Ok(Command::Auth(arg))
    } else {
        Ok(Command::Other { verb, arg })
    }
}

/// One reply line: `NNN text` (final) or `NNN-text` (first line of a multi-line
/// reply). Lines inside a multi-line reply that do not start with the code and
/// a space are not reply lines (None).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: u16,
    /// true for `NNN ` (ends a reply), false for `NNN-`.
    pub last: bool,
    pub text: &'a [u8],
}

/// Three digits, the first 1..=5, then a space, a hyphen, or the end of the
/// line (a bare `NNN` is a final line with empty text). Anything else, e.g.
/// `99 x`, `2300 x`, `230_x`, is not a reply line.
pub fn parse_reply_line(line: &[u8]) -> Option<ReplyLine<'_>> {
    let [a, b, c, rest @ ..] = line else {
        return None;
    };
    if !(b'1'..=b'5').contains(a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return None;
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    let (last, text) = match rest {
        [] => (true, rest),
        [b' ', text @ ..] => (true, text),
        [b'-', text @ ..] => (false, text),
        _ => return None,
    };
    Some(ReplyLine { code, last, text })
}

/// The address in a 227 reply's text: the first `h1,h2,h3,h4,p1,p2` group,
/// with or without parentheses (RFC 1123 says clients must scan for it).
/// Returns the address and the byte range of the six numbers within `text`,
/// so a rewrite can keep the surrounding text.
///
/// The text is cut into maximal runs of digits and commas. Runs with fewer
/// than five commas (`v2`, `7,8`, a year) are text and skipped. The first run
/// with five or more commas is *the* group: it must be exactly six numbers of
/// 1..=3 digits, each <= 255, port not 0, else the reply is malformed (we do
/// not go on looking for a later, nicer group: `(1,2,3,4,5,6,7)` or
/// `(1,2,3,4,5,256) (10,0,0,1,4,1)` are refused, not guessed at). Spaces after
/// the commas are not accepted.
pub fn parse_227(text: &[u8]) -> Result<(SocketAddrV4, Range<usize>), ParseError> {
    let in_group = |b: &u8| b.is_ascii_digit() || *b == b',';
    let mut i = 0;
    while i < text.len() {
        if !in_group(&text[i]) {
            i += 1;
            continue;
        }
        let len = text[i..].iter().take_while(|b| in_group(b)).count();
        let run = &text[i..i + len];
        if run.iter().filter(|&&b| b == b',').count() >= 5 {
            return six_numbers(run).map(|addr| (addr, i..i + len)).map_err(SixError::pasv);
        }
        i += len;
    }
    Err(Malformed("227: no h1,h2,h3,h4,p1,p2 in the text"))
}

/// The port in a 229 reply's text: `(<d><d><d>port<d>)`, and the byte range of
/// the port digits within `text`.
///
/// The first `(` followed by three identical bytes in 33..=126 starts the
/// group; from there the form is exact: 1..=5 digits, 1..=65535, the same
/// delimiter, `)`. A digit delimiter cannot be told apart from the port and
/// fails that check.
pub fn parse_229(text: &[u8]) -> Result<(u16, Range<usize>), ParseError> {
    let start = text
        .windows(4)
        .position(|w| w[0] == b'(' && (33..=126).contains(&w[1]) && w[1] == w[2] && w[2] == w[3])
        .ok_or(Malformed("229: no (<d><d><d>port<d>) in the text"))?;
    let d = text[start + 1];
    let digits_at = start + 4;
    let n = text[digits_at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let digits = digits_at..digits_at + n;
    let port = decimal(&text[digits.clone()], 5)
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(Malformed("229: port not a number in 1..=65535"))?;
    if port == 0 {
        return Err(Malformed("229: port 0"));
    }
    match text.get(digits.end..digits.end + 2) {
        Some([e, b')']) if *e == d => Ok((port, digits)),
        _ => Err(Malformed("229: port not followed by the delimiter and )")),
    }
}

/// `h1,h2,h3,h4,p1,p2` for `addr` appended to `out`.
pub fn write_port_args(out: &mut Vec<u8>, addr: SocketAddrV4) {
    let [a, b, c, d] = addr.ip().octets();
    let [p1, p2] = addr.port().to_be_bytes();
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{a},{b},{c},{d},{p1},{p2}");
}

/// `|1|a.b.c.d|port|` or `|2|<ipv6>|port|` appended to `out`, with `delim`.
/// IPv6 is written in RFC 5952 form (lowercase, longest zero run compressed,
/// `::ffff:a.b.c.d` for mapped addresses). Linux's nf_nat_ftp writes it fully
/// expanded instead; servers accept both. The scope id is not written. The
/// caller picks `delim` (normally the one the client used); it is written as
/// given.
pub fn write_eprt_args(out: &mut Vec<u8>, delim: u8, addr: SocketAddr) {
    out.push(delim);
    out.push(b'0' + eprt_af(addr.ip()));
    out.push(delim);
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{}", addr.ip());
    out.push(delim);
    let _ = write!(out, "{}", addr.port());
    out.push(delim);
}

/// The address family number EPRT uses: 1 IPv4, 2 IPv6.
pub fn eprt_af(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 1,
        IpAddr::V6(_) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], port: u16) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(a), port)
    }

    fn port_of(line: &str) -> Result<SocketAddrV4, ParseError> {
        match parse_command(line.as_bytes())? {
            Command::Port(a) => Ok(a),
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn eprt_of(line: &str) -> Result<SocketAddr, ParseError> {
        match parse_command(line.as_bytes())? {
            Command::Eprt(a) => Ok(a),
            other => panic!("{line:?} parsed as {other:?}"),
        }
    }

    fn is_malformed<T: std::fmt::Debug>(r: Result<T, ParseError>) -> bool {
        matches!(r, Err(ParseError::Malformed(_)))
    }

    /// PORT lines seen in the public captures (shared/pcaps/public/INDEX.md).
    #[test]
    fn port_real_lines() {
        let cases: &[(&str, [u8; 4], u16)] = &[
            ("PORT 10,0,0,200,78,33", [10, 0, 0, 200], 78 * 256 + 33),
            ("PORT 10,0,0,200,80,20", [10, 0, 0, 200], 80 * 256 + 20),
            ("PORT 141,142,220,235,131,46", [141, 142, 220, 235], 131 * 256 + 46),
            ("PORT 141,142,220,235,147,203", [141, 142, 220, 235], 147 * 256 + 203),
            ("PORT 192,168,0,13,234,10", [192, 168, 0, 13], 59914),
            ("PORT 192,168,0,13,234,22", [192, 168, 0, 13], 59926),
            ("PORT 192,168,100,16,225,229", [192, 168, 100, 16], 225 * 256 + 229),
            ("PORT 192,168,100,16,191,6", [192, 168, 100, 16], 191 * 256 + 6),
            ("PORT 127,0,0,1,156,67", [127, 0, 0, 1], 40003),
            ("PORT 192,168,169,173,230,15", [192, 168, 169, 173], 230 * 256 + 15),
            ("PORT 1,1,1,2,232,157", [1, 1, 1, 2], 232 * 256 + 157),
            ("PORT 2,2,2,3,0,80", [2, 2, 2, 3], 80),
            ("PORT 172,23,0,3,174,127", [172, 23, 0, 3], 174 * 256 + 127),
            ("PORT 172,23,0,3,128,235", [172, 23, 0, 3], 128 * 256 + 235),
            ("PORT 192,168,1,100,200,100", [192, 168, 1, 100], 200 * 256 + 100),
        ];
        for &(line, ip, port) in cases {
            assert_eq!(port_of(line), Ok(v4(ip, port)), "{line}");
        }
        // Malformed ones from the same captures.
        assert_eq!(port_of("PORT 114,115"), Err(Malformed("PORT: fewer than six numbers")));
        assert!(is_malformed(port_of("PORT 1234")));
        assert!(is_malformed(port_of("PORT 1234123412341234123412341234123412341234123412341234123412341234")));
    }

    #[test]
    fn port_edge_cases() {
        // Case-insensitive verb, leading zeros within 3 digits, several spaces.
        assert_eq!(port_of("port 10,0,0,1,4,1"), Ok(v4([10, 0, 0, 1], 1025)));
        assert_eq!(port_of("PoRt 10,0,0,1,4,1"), Ok(v4([10, 0, 0, 1], 1025)));
        assert_eq!(port_of("PORT 010,000,0,001,004,001"), Ok(v4([10, 0, 0, 1], 1025)));
        assert_eq!(port_of("PORT   10,0,0,1,4,1"), Ok(v4([10, 0, 0, 1], 1025)));
        assert_eq!(port_of("PORT 0,0,0,0,0,1"), Ok(v4([0, 0, 0, 0], 1)));
        assert_eq!(port_of("PORT 255,255,255,255,255,255"), Ok(v4([255; 4], 65535)));
        for bad in [
            "PORT 10,0,0,1,256,21", // no modulo 256
            "PORT 10,0,0,1,4,256",  // port low byte
            "PORT 256,0,0,1,4,1",   // octet
            "PORT 999,0,0,1,4,1",   // octet
            "PORT 10,0,0,1,0,0",    // port 0
            "PORT 10,0,,1,4,1",     // empty field
            "PORT ,10,0,0,1,4,1",   // empty first field
            "PORT 10,0,0,1,4,1,",   // trailing comma
            "PORT 10,0,0,1,4,1,7",  // 7 fields
            "PORT 10,0,0,1,4",      // 5 fields
            "PORT 10,0,0,-1,4,1",   // negative
            "PORT 10,0,0,+1,4,1",   // sign
            "PORT 0010,0,0,1,4,1",  // 4 digits even if the value is small
            "PORT 99999999999999999999,0,0,1,4,1",
            "PORT 10, 0, 0, 1, 4, 1", // spaces after commas
            "PORT 10 ,0,0,1,4,1",     // space before a comma
            "PORT 10,0,0,1,4,1 ",     // trailing space
            "PORT 10,0,0,1,4,1\r",    // stray CR
            "PORT 10,0,0,1,4,1 junk", // trailing text
            "PORT (10,0,0,1,4,1)",    // parentheses belong to 227, not PORT
            "PORT 0x0a,0,0,1,4,1",    // hex
            "PORT 10.0.0.1,4,1",      // dots
            "PORT",                   // no argument
            "PORT ",                  // no argument
        ] {
            assert!(is_malformed(port_of(bad)), "{bad:?} accepted");
        }
        // Not PORT at all: a leading space empties the verb, longer verbs differ.
        assert!(matches!(parse_command(b" PORT 10,0,0,1,4,1"), Ok(Command::Other { verb: b"", .. })));
        assert!(matches!(parse_command(b"PORTX 10,0,0,1,4,1"), Ok(Command::Other { .. })));
        assert!(matches!(parse_command(b"PORT\t10,0,0,1,4,1"), Ok(Command::Other { .. })));
    }

    #[test]
    fn eprt_real_and_edge() {
        let real = "EPRT |2|2601:191:8500:2e00:7c0f:78e0:dc5b:f7c1|34325|";
        assert_eq!(
            eprt_of(real),
            Ok(SocketAddr::new("2601:191:8500:2e00:7c0f:78e0:dc5b:f7c1".parse().unwrap(), 34325))
        );
        let ok: &[(&str, &str)] = &[
            ("EPRT |1|132.235.1.2|6275|", "132.235.1.2:6275"),
            ("eprt |1|132.235.1.2|6275|", "132.235.1.2:6275"),
            ("EPRT !1!132.235.1.2!6275!", "132.235.1.2:6275"),
            ("EPRT ~1~0.0.0.0~1~", "0.0.0.0:1"),
            ("EPRT |1|10.0.0.1|65535|", "10.0.0.1:65535"),
            ("EPRT |1|10.0.0.1|00021|", "10.0.0.1:21"),
            ("EPRT |2|1080::8:800:200C:417A|5282|", "[1080::8:800:200c:417a]:5282"),
            ("EPRT |2|::ffff:1.2.3.4|21|", "[::ffff:1.2.3.4]:21"),
            ("EPRT |2|::1.2.3.4|21|", "[::102:304]:21"),
            ("EPRT |2|::|21|", "[::]:21"),
            ("EPRT |2|2001:0db8:0002:0000:0000:0000:0000:0001|40000|", "[2001:db8:2::1]:40000"),
            // Any delimiter in 33..=126 as long as it occurs exactly four
            // times, even a digit: the split is still unique.
            ("EPRT 31310.0.0.1353", "10.0.0.1:5"),
            ("EPRT A1A10.0.0.1A21A", "10.0.0.1:21"),
        ];
        for &(line, want) in ok {
            assert_eq!(eprt_of(line), Ok(want.parse().unwrap()), "{line}");
        }
        for bad in [
            "EPRT |1|132.235.1.2|0|",           // port 0
            "EPRT |1|132.235.1.2|65536|",       // port too big
            "EPRT |1|132.235.1.2|999999|",      // too many digits
            "EPRT |1|132.235.1.2||",            // empty port
            "EPRT |1|132.235.1.2|-1|",          // negative
            "EPRT |1|132.235.1.2|21",           // missing final delimiter
            "EPRT |1|132.235.1.2|21|x",         // trailing junk
            "EPRT |1|132.235.1.2|21||",         // extra delimiter
            "EPRT |1|132.235.1.2|21| ",         // trailing space
            "EPRT |1|132.235.1.2:21|",          // 3 delimiters
            "EPRT |3|132.235.1.2|21|",          // unknown af
            "EPRT |01|132.235.1.2|21|",         // af with leading zero
            "EPRT ||132.235.1.2|21|",           // empty af
            "EPRT |1|::1|21|",                  // af/address mismatch
            "EPRT |2|132.235.1.2|21|",          // af/address mismatch
            "EPRT |1|132.235.1.256|21|",        // octet
            "EPRT |1|010.0.0.1|21|",            // octal ambiguity in inet_aton
            "EPRT |1|10.1|21|",                 // inet_aton short form
            "EPRT |1||21|",                     // empty address
            "EPRT |2|fe80::1%eth0|21|",         // zone id
            "EPRT |2|[::1]|21|",                // brackets
            "EPRT |2|1::2::3|21|",              // two ::
            "EPRT |2|::ffff:1.2.3|21|",         // short embedded IPv4
            "EPRT  1 10.0.0.1 21 ",             // spaces are skipped, then "1" is the delimiter
            "EPRT \x7f1\x7f10.0.0.1\x7f21\x7f", // DEL is not a delimiter
            "EPRT \u{e9}1\u{e9}10.0.0.1\u{e9}21\u{e9}",
            "EPRT 1111.2.3.41211",  // delimiter inside fields
            "EPRT .1.10.0.0.1.21.", // delimiter inside the address
            "EPRT",
            "EPRT |",
        ] {
            assert!(is_malformed(eprt_of(bad)), "{bad:?} accepted");
        }
    }

    #[test]
    fn other_verbs() {
        assert_eq!(parse_command(b"PASV"), Ok(Command::Pasv));
        assert_eq!(parse_command(b"pasv"), Ok(Command::Pasv));
        assert_eq!(parse_command(b"PASV "), Ok(Command::Pasv));
        assert!(is_malformed(parse_command(b"PASV 1")));
        assert_eq!(parse_command(b"EPSV"), Ok(Command::Epsv(None)));
        assert_eq!(parse_command(b"epsv 1"), Ok(Command::Epsv(Some(1))));
        assert_eq!(parse_command(b"EPSV 2"), Ok(Command::Epsv(Some(2))));
        assert_eq!(parse_command(b"EPSV ALL"), Ok(Command::EpsvAll));
        assert_eq!(parse_command(b"EPSV aLl"), Ok(Command::EpsvAll));
        for bad in [&b"EPSV 3"[..], b"EPSV 0", b"EPSV 12", b"EPSV ALLX", b"EPSV ALL ", b"EPSV |||1|"] {
            assert!(is_malformed(parse_command(bad)), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse_command(b"LPRT 4,4,1,2,3,4,2,0,20"), Ok(Command::Lprt));
        assert_eq!(parse_command(b"lpsv"), Ok(Command::Lpsv));
        assert_eq!(parse_command(b"AUTH TLS"), Ok(Command::Auth(b"TLS")));
        assert_eq!(parse_command(b"auth tls-c"), Ok(Command::Auth(b"tls-c")));
        assert_eq!(parse_command(b"AUTH GSSAPI"), Ok(Command::Auth(b"GSSAPI")));
        assert_eq!(parse_command(b"AUTH"), Ok(Command::Auth(b"")));
        assert_eq!(parse_command(b"RETR  some file.txt"), Ok(Command::Other { verb: b"RETR", arg: b"some file.txt" }));
        assert_eq!(parse_command(b"QUIT"), Ok(Command::Other { verb: b"QUIT", arg: b"" }));
        assert_eq!(parse_command(b""), Ok(Command::Other { verb: b"", arg: b"" }));
        let long = [b'T'; 132];
        assert_eq!(parse_command(&long), Ok(Command::Other { verb: &long[..], arg: b"" }));
        assert_eq!(
            parse_command(b"RETR Site%s\x00t.xml"),
            Ok(Command::Other { verb: b"RETR", arg: b"Site%s\x00t.xml" })
        );
    }

    #[test]
    fn reply_lines() {
        let r = parse_reply_line(b"227 Entering Passive Mode (1,2,3,4,5,6)").unwrap();
        assert_eq!((r.code, r.last, r.text), (227, true, &b"Entering Passive Mode (1,2,3,4,5,6)"[..]));
        let r = parse_reply_line(b"220-Welcome").unwrap();
        assert_eq!((r.code, r.last, r.text), (220, false, &b"Welcome"[..]));
        let r = parse_reply_line(b"226").unwrap();
        assert_eq!((r.code, r.last, r.text), (226, true, &b""[..]));
        let r = parse_reply_line(b"530 ").unwrap();
        assert_eq!((r.code, r.last, r.text), (530, true, &b""[..]));
        assert_eq!(parse_reply_line(b"100 x").unwrap().code, 100);
        assert_eq!(parse_reply_line(b"599 x").unwrap().code, 599);
        for bad in [
            &b"99 PASV invalid"[..], // 2-digit code (zeek ftp/ftp-invalid-reply-code)
            b"SYST not supported",   // no code
            b"230_no_space",         // wrong separator
            b"2300 x",
            b"600 x",
            b"000 x",
            b"22",
            b"",
            b" 220 x",
            b"22a x",
            b"227\tx",
        ] {
            assert_eq!(parse_reply_line(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    fn pasv(text: &str) -> Result<(SocketAddrV4, Range<usize>), ParseError> {
        parse_227(text.as_bytes())
    }

    /// 227 texts seen in the public captures, after the `227 `.
    #[test]
    fn pasv_real_lines() {
        let cases: &[(&str, [u8; 4], u16)] = &[
            ("Entering Passive Mode (164,107,123,6,183,187)", [164, 107, 123, 6], 183 * 256 + 187),
            ("Entering Passive Mode (199,233,217,249,221,90)", [199, 233, 217, 249], 221 * 256 + 90),
            ("Entering Passive Mode (192,168,1,32,160,191).", [192, 168, 1, 32], 160 * 256 + 191),
            ("Entering Passive Mode (127,0,0,1,185,13).", [127, 0, 0, 1], 185 * 256 + 13),
            ("Entering Passive Mode (2,2,2,2,185,13).", [2, 2, 2, 2], 47373),
            ("Entering passive mode (172,23,0,2,82,16).", [172, 23, 0, 2], 21008),
            ("Entering Passive Mode (147,234,1,253,230,119).", [147, 234, 1, 253], 230 * 256 + 119),
            ("Entering Passive Mode (90,130,70,73,95,203).", [90, 130, 70, 73], 95 * 256 + 203),
        ];
        for &(text, ip, port) in cases {
            let (addr, range) = pasv(text).unwrap();
            assert_eq!(addr, v4(ip, port), "{text}");
            let open = text.find('(').unwrap();
            let close = text.find(')').unwrap();
            assert_eq!(range, open + 1..close, "{text}");
        }
        for bad in ["Response to PASV command", "Fake response PASV", "", "AAAAAAAAAAAAAAAA"] {
            assert_eq!(pasv(bad), Err(Malformed("227: no h1,h2,h3,h4,p1,p2 in the text")), "{bad}");
        }
        let huge = vec![b'A'; 112_721];
        assert!(is_malformed(parse_227(&huge)));
    }

    #[test]
    fn pasv_scan_and_edges() {
        // No parentheses, other text and short number runs before the group.
        assert_eq!(pasv("=10,0,0,1,4,1"), Ok((v4([10, 0, 0, 1], 1025), 1..13)));
        assert_eq!(pasv("10,0,0,1,4,1"), Ok((v4([10, 0, 0, 1], 1025), 0..12)));
        assert_eq!(pasv("Entering Passive Mode. 10,0,0,1,4,1"), Ok((v4([10, 0, 0, 1], 1025), 23..35)));
        assert_eq!(pasv("Mode v2, 7,8 (10,0,0,1,4,1) 2024"), Ok((v4([10, 0, 0, 1], 1025), 14..26)));
        assert_eq!(pasv("(010,000,000,001,004,001)"), Ok((v4([10, 0, 0, 1], 1025), 1..24)));
        // The first group decides; a bad first group is not skipped.
        for bad in [
            "Entering Passive Mode (192,168,1,1,256,3)",
            "Entering Passive Mode (192,168,1,1,4,999)",
            "Entering Passive Mode (192,168,1,1,0,0)",
            "Entering Passive Mode (192,168,,1,4,1)",
            "Entering Passive Mode (192,168,1,1,4,1,7)",
            "Entering Passive Mode (192,168,1,1,4,1,)",
            "Entering Passive Mode (,192,168,1,1,4,1)",
            "Entering Passive Mode (1234,168,1,1,4,1)",
            "Entering Passive Mode (99999999999999999999,1,1,1,4,1)",
            "(1,2,3,4,5,256) (10,0,0,1,4,1)",
            ",,,,,",
        ] {
            assert!(is_malformed(pasv(bad)), "{bad:?} accepted");
        }
        // Not groups: negative numbers split the run, spaces after commas.
        assert!(is_malformed(pasv("Entering Passive Mode (192,168,1,1,4,-1)")));
        assert!(is_malformed(pasv("Entering Passive Mode (192, 168, 1, 1, 4, 1)")));
        assert!(is_malformed(pasv("Entering Passive Mode (192,168,1,1,4)")));
    }

    #[test]
    fn epsv_reply() {
        for (text, port) in [
            ("Extended Passive mode OK (|||63988|)", 63988),
            ("Entering Extended Passive Mode (|||60931|)", 60931),
            ("Entering Extended Passive Mode (|||38141|)", 38141),
            ("Entering Extended Passive Mode (|||35656|)", 35656),
        ] {
            let (p, range) = parse_229(text.as_bytes()).unwrap();
            assert_eq!(p, port);
            assert_eq!(&text[range], port.to_string());
        }
        assert_eq!(parse_229(b"(!!!1!)"), Ok((1, 4..5)));
        assert_eq!(parse_229(b"x (~~~65535~)"), Ok((65535, 6..11)));
        assert_eq!(parse_229(b"(a) (|||21|)"), Ok((21, 8..10)));
        assert_eq!(parse_229(b"((((21()"), Ok((21, 4..6)));
        assert_eq!(parse_229(b"(|||00021|)"), Ok((21, 4..9)));
        for bad in [
            &b"Entering Extended Passive Mode (|||0|)"[..],
            b"(|||65536|)",
            b"(|||123456|)",
            b"(||||)",
            b"(|||21|",
            b"(|||21!)",
            b"(|||21| )",
            b"(||!21|)",
            b"(|||-21|)",
            b"(|||2 1|)",
            b"(   21 )",  // space is not a delimiter
            b"(1112341)", // digit delimiter
            b"(\x7f\x7f\x7f21\x7f)",
            b"Entering Extended Passive Mode",
            b"|||21|",
            b"",
        ] {
            assert!(is_malformed(parse_229(bad)), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn writers_round_trip() {
        let mut out = Vec::new();
        write_port_args(&mut out, v4([198, 51, 100, 1], 0x8ab9));
        assert_eq!(out, b"198,51,100,1,138,185");
        out.clear();
        write_port_args(&mut out, v4([0, 0, 0, 0], 1));
        assert_eq!(out, b"0,0,0,0,0,1");

        let mut out = b"EPRT ".to_vec();
        write_eprt_args(&mut out, b'|', "198.51.100.1:40000".parse().unwrap());
        assert_eq!(out, b"EPRT |1|198.51.100.1|40000|");
        assert_eq!(eprt_of(std::str::from_utf8(&out).unwrap()), Ok("198.51.100.1:40000".parse().unwrap()));

        for (addr, text) in [
            ("[2001:db8:2:0:0:0:0:1]:21", "!2!2001:db8:2::1!21!"),
            ("[2001:db8:0:0:1:0:0:1]:21", "!2!2001:db8::1:0:0:1!21!"),
            ("[2001:db8:0:1:1:1:1:1]:21", "!2!2001:db8:0:1:1:1:1:1!21!"),
            ("[2001:DB8::A]:65535", "!2!2001:db8::a!65535!"),
            ("[::ffff:192.0.2.1]:1", "!2!::ffff:192.0.2.1!1!"),
            ("[::]:1", "!2!::!1!"),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut out = b"EPRT ".to_vec();
            write_eprt_args(&mut out, b'!', addr);
            assert_eq!(std::str::from_utf8(&out[5..]).unwrap(), text);
            assert_eq!(eprt_of(std::str::from_utf8(&out).unwrap()), Ok(addr));
        }
        assert_eq!(eprt_af("::1".parse().unwrap()), 2);
        assert_eq!(eprt_af("127.0.0.1".parse().unwrap()), 1);
    }
}
