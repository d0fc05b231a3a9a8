//! Parsers and formatters for the FTP lines the ALG acts on (RFC 959, RFC 1123,
//! RFC 2428, RFC 1639). Lines are given without their CRLF / LF. Parsers never
//! panic and never allocate; formatters write into a caller's buffer.

use std::net::{IpAddr, SocketAddr, SocketAddrV4};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseError {
    /// The verb or code is right but the argument is not a valid address/port
    /// (octet > 255, port 0 or > 65535, missing fields, bad delimiter, junk).
    Malformed(&'static str),
}

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
    /// Anything else: the verb (as in the line) and the argument after one space.
    Other { verb: &'a [u8], arg: &'a [u8] },
}

/// Parse one command line. An unknown verb is `Other`, not an error; a known
/// address-carrying verb with a bad argument is `Err(Malformed)`.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, ParseError> {
    let _ = line;
    todo!()
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

pub fn parse_reply_line(line: &[u8]) -> Option<ReplyLine<'_>> {
    let _ = line;
    todo!()
}

/// The address in a 227 reply's text: the first `h1,h2,h3,h4,p1,p2` group,
/// with or without parentheses (RFC 1123 says clients must scan for it).
/// Returns the address and the byte range of the six numbers within `text`,
/// so a rewrite can keep the surrounding text.
pub fn parse_227(text: &[u8]) -> Result<(SocketAddrV4, std::ops::Range<usize>), ParseError> {
    let _ = text;
    todo!()
}

/// The port in a 229 reply's text: `(<d><d><d>port<d>)`, and the byte range of
/// the port digits within `text`.
pub fn parse_229(text: &[u8]) -> Result<(u16, std::ops::Range<usize>), ParseError> {
    let _ = text;
    todo!()
}

/// `h1,h2,h3,h4,p1,p2` for `addr` appended to `out`.
pub fn write_port_args(out: &mut Vec<u8>, addr: SocketAddrV4) {
    let _ = (out, addr);
    todo!()
}

/// `|1|a.b.c.d|port|` or `|2|<ipv6>|port|` appended to `out`, with `delim`.
/// IPv6 is written in RFC 5952 form.
pub fn write_eprt_args(out: &mut Vec<u8>, delim: u8, addr: SocketAddr) {
    let _ = (out, delim, addr);
    todo!()
}

/// The address family number EPRT uses: 1 IPv4, 2 IPv6.
pub fn eprt_af(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 1,
        IpAddr::V6(_) => 2,
    }
}
