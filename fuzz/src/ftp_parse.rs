//! The FTP line parsers on arbitrary bytes. Besides not panicking: whatever
//! a parser accepts, the gateway's own formatter writes back in a form the
//! parser reads as the same value, and the byte ranges it returns are inside
//! the text and can be replaced (as the ALG does) without changing the
//! meaning of the rest.

use std::net::{SocketAddr, SocketAddrV4};

use ftpgate::ftp::parse::{self, Command};

pub fn run(data: &[u8]) {
    if let Ok(cmd) = parse::parse_command(data) {
        match cmd {
            Command::Port(addr) => {
                let mut line = b"PORT ".to_vec();
                parse::write_port_args(&mut line, addr);
                assert_eq!(
                    parse::parse_command(&line),
                    Ok(Command::Port(addr)),
                    "PORT round trip: {}",
                    String::from_utf8_lossy(&line)
                );
            }
            Command::Eprt(addr) => {
                // The delimiter is the argument's first byte (after the verb and its spaces).
                let arg_at = 4 + data[4..].iter().take_while(|&&b| b == b' ').count();
                let delim = data[arg_at];
                let mut line = b"EPRT ".to_vec();
                parse::write_eprt_args(&mut line, delim, addr);
                match parse::parse_command(&line) {
                    Ok(Command::Eprt(back)) => assert_eq!(strip_scope(back), strip_scope(addr), "EPRT round trip"),
                    other => panic!("EPRT {:?} written as {:?} reads {other:?}", addr, String::from_utf8_lossy(&line)),
                }
            }
            _ => {}
        }
    }
    if let Some(rl) = parse::parse_reply_line(data) {
        assert!((100..=599).contains(&rl.code), "reply code {}", rl.code);
        // The text is the tail of the line.
        assert!(data.ends_with(rl.text));
    }
    if let Ok((addr, range)) = parse::parse_227(data) {
        assert!(range.start <= range.end && range.end <= data.len(), "227 range {range:?}");
        // Replace the numbers as the ALG does; the result reads as the new address.
        let new = SocketAddrV4::new([198, 51, 100, 1].into(), addr.port().max(1));
        let mut line = data[..range.start].to_vec();
        parse::write_port_args(&mut line, new);
        line.extend_from_slice(&data[range.end..]);
        assert_eq!(parse::parse_227(&line).map(|x| x.0), Ok(new), "227 rewrite of {:?}", String::from_utf8_lossy(data));
        // And the original numbers re-read alone give the same address.
        let mut alone = Vec::new();
        parse::write_port_args(&mut alone, addr);
        assert_eq!(parse::parse_227(&alone).map(|x| x.0), Ok(addr));
    }
    if let Ok((port, range)) = parse::parse_229(data) {
        assert!(port != 0 && range.end <= data.len());
        let mut line = data[..range.start].to_vec();
        line.extend_from_slice(b"40000");
        line.extend_from_slice(&data[range.end..]);
        assert_eq!(
            parse::parse_229(&line).map(|x| x.0),
            Ok(40000),
            "229 rewrite of {:?}",
            String::from_utf8_lossy(data)
        );
    }
}

fn strip_scope(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(mut v6) => {
            v6.set_scope_id(0);
            v6.set_flowinfo(0);
            SocketAddr::V6(v6)
        }
        v4 => v4,
    }
}
