//! The event log: what the engine decided and why. One `Event` per JSON line,
//! in processing order, with the fields the contract names.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

use crate::time::Nanos;

/// Why a frame was dropped. Serialised in snake_case as the contract's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    Policy,
    Bounce,
    PrivilegedPort,
    Malformed,
    Injection,
    CommandDenied,
    NoConnection,
    Invalid,
    Limit,
    ModeDenied,
    /// Extension: TTL / hop limit ran out (an ICMP time exceeded was sent).
    TtlExceeded,
    /// Extension: no interface or route leads to the destination.
    NoRoute,
    /// Extension: not IPv4/IPv6 (or ARP for an address that is not ours).
    Unsupported,
}

impl DropReason {
    pub const ALL: [DropReason; 13] = [
        DropReason::Policy,
        DropReason::Bounce,
        DropReason::PrivilegedPort,
        DropReason::Malformed,
        DropReason::Injection,
        DropReason::CommandDenied,
        DropReason::NoConnection,
        DropReason::Invalid,
        DropReason::Limit,
        DropReason::ModeDenied,
        DropReason::TtlExceeded,
        DropReason::NoRoute,
        DropReason::Unsupported,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Policy => "policy",
            DropReason::Bounce => "bounce",
            DropReason::PrivilegedPort => "privileged_port",
            DropReason::Malformed => "malformed",
            DropReason::Injection => "injection",
            DropReason::CommandDenied => "command_denied",
            DropReason::NoConnection => "no_connection",
            DropReason::Invalid => "invalid",
            DropReason::Limit => "limit",
            DropReason::ModeDenied => "mode_denied",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::NoRoute => "no_route",
            DropReason::Unsupported => "unsupported",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Fin,
    Rst,
    Timeout,
    Evicted,
}

/// An endpoint rendered the contract's way: `ip:port`, IPv6 as `[ip]:port`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint(pub SocketAddr);

impl Serialize for Endpoint {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl From<(IpAddr, u16)> for Endpoint {
    fn from((ip, port): (IpAddr, u16)) -> Self {
        Endpoint(SocketAddr::new(ip, port))
    }
}

/// The control connection an FTP event belongs to: `client→server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Session {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

impl Serialize for Session {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}→{}", self.client, self.server))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Pair {
    pub src: Endpoint,
    pub dst: Endpoint,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    // Interface names are shared with the engine: a connection's two
    // events would otherwise copy two names each.
    ConnectionNew {
        protocol: &'static str,
        src: Endpoint,
        dst: Endpoint,
        from: std::sync::Arc<str>,
        to: std::sync::Arc<str>,
    },
    ConnectionEnd {
        protocol: &'static str,
        src: Endpoint,
        dst: Endpoint,
        from: std::sync::Arc<str>,
        to: std::sync::Arc<str>,
        reason: EndReason,
    },
    Nat {
        original: Pair,
        translated: Pair,
    },
    FtpCommand {
        session: Session,
        line: String,
    },
    FtpReply {
        session: Session,
        line: String,
    },
    FtpEncrypted {
        session: Session,
        line: String,
    },
    AlgRewrite {
        session: Session,
        before: String,
        after: String,
        delta: i64,
    },
    PinholeOpen {
        session: Session,
        peer: IpAddr,
        address: IpAddr,
        port: u16,
        expires: f64,
    },
    PinholeUse {
        session: Session,
        address: IpAddr,
        port: u16,
    },
    PinholeExpire {
        session: Session,
        address: IpAddr,
        port: u16,
    },
    Drop {
        reason: DropReason,
        #[serde(skip_serializing_if = "Option::is_none")]
        rule: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<Session>,
        #[serde(skip_serializing_if = "Option::is_none")]
        src: Option<Endpoint>,
        #[serde(skip_serializing_if = "Option::is_none")]
        dst: Option<Endpoint>,
        detail: String,
    },
    Reset {
        session: Session,
        reason: DropReason,
    },
    /// Extension, replay only: the capture is missing bytes of a control
    /// connection (the receiver acknowledged bytes the capture never showed);
    /// parsing of that direction resumes at the next line boundary.
    CaptureGap {
        session: Session,
        /// `client` or `server`: whose bytes are missing.
        from: &'static str,
        bytes: u32,
    },
}

impl EventKind {
    /// Event names as the log spells them, in one fixed order for counting.
    pub const NAMES: [&'static str; 13] = [
        "connection_new",
        "connection_end",
        "nat",
        "ftp_command",
        "ftp_reply",
        "ftp_encrypted",
        "alg_rewrite",
        "pinhole_open",
        "pinhole_use",
        "pinhole_expire",
        "drop",
        "reset",
        "capture_gap",
    ];

    /// Position of this kind in `NAMES`.
    pub fn index(&self) -> usize {
        match self {
            EventKind::ConnectionNew { .. } => 0,
            EventKind::ConnectionEnd { .. } => 1,
            EventKind::Nat { .. } => 2,
            EventKind::FtpCommand { .. } => 3,
            EventKind::FtpReply { .. } => 4,
            EventKind::FtpEncrypted { .. } => 5,
            EventKind::AlgRewrite { .. } => 6,
            EventKind::PinholeOpen { .. } => 7,
            EventKind::PinholeUse { .. } => 8,
            EventKind::PinholeExpire { .. } => 9,
            EventKind::Drop { .. } => 10,
            EventKind::Reset { .. } => 11,
            EventKind::CaptureGap { .. } => 12,
        }
    }

    pub fn name(&self) -> &'static str {
        Self::NAMES[self.index()]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Event {
    pub ts: f64,
    /// 1-based index of the input frame that caused it (replay), or the live frame counter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet: Option<u64>,
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    pub fn new(now: Nanos, packet: Option<u64>, kind: EventKind) -> Event {
        Event { ts: now.as_secs_f64(), packet, kind }
    }

    /// The event as one JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            let mut s = String::new();
            let _ = write!(s, "{{\"event\":\"internal_error\",\"detail\":\"{e}\"}}");
            s
        })
    }
}

/// Render an FTP line for the log: lossy UTF-8, control characters escaped by
/// serde, and the argument of PASS replaced by `****`.
pub fn loggable_line(line: &[u8]) -> String {
    let verb_end = line.iter().position(|&b| b == b' ').unwrap_or(line.len());
    if line[..verb_end].eq_ignore_ascii_case(b"PASS") {
        return "PASS ****".to_string();
    }
    // Nearly every line is valid UTF-8: checking that and copying is cheaper
    // than the lossy decoder's walk, which only invalid lines need.
    match std::str::from_utf8(line) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(line).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_event_has_contract_fields() {
        let ev = Event::new(
            Nanos(1_500_000_000),
            Some(7),
            EventKind::Drop {
                reason: DropReason::NoConnection,
                rule: None,
                session: None,
                src: Some(Endpoint("[2001:db8::1]:80".parse().unwrap())),
                dst: Some(Endpoint("192.0.2.1:1234".parse().unwrap())),
                detail: "no connection".into(),
            },
        );
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["event"], "drop");
        assert_eq!(v["reason"], "no_connection");
        assert_eq!(v["packet"], 7);
        assert_eq!(v["ts"], 1.5);
        assert_eq!(v["src"], "[2001:db8::1]:80");
        assert!(v.get("rule").is_none());
    }

    #[test]
    fn pass_is_masked() {
        assert_eq!(loggable_line(b"PASS hunter2"), "PASS ****");
        assert_eq!(loggable_line(b"pass x"), "PASS ****");
        assert_eq!(loggable_line(b"USER bob"), "USER bob");
    }

    #[test]
    fn lines_are_logged_as_lossy_utf8() {
        assert_eq!(loggable_line("CWD /caf\u{e9}".as_bytes()), "CWD /caf\u{e9}");
        assert_eq!(loggable_line(b"CWD /caf\xe9\xff"), "CWD /caf\u{fffd}\u{fffd}");
        assert_eq!(loggable_line(b""), "");
        assert_eq!(loggable_line(b"PASS \xff"), "PASS ****");
    }
}
