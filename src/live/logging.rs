//! Logging off the packet path: the worker hands events to a bounded queue
//! (try_send; what does not fit is counted, never waited for) and this
//! thread writes the JSONL event log and the `tracing` log.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use tracing::Level;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::event::{Event, EventKind};

pub enum LogMsg {
    Event(Event),
    Info(String),
    Warn(String),
}

/// Queue length between the worker and the logger.
pub const QUEUE: usize = 16 * 1024;

/// Install the global subscriber: text on stderr (coloured on a terminal) or
/// JSON lines. `RUST_LOG` overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(format!("ftpgate={level},warn")));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(io::stderr).with_target(false);
    let _ = match format {
        LogFormat::Text => builder.with_ansi(io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
    };
}

/// Events an operator wants to see at the default level; the per-packet
/// chatter is debug.
fn level_of(k: &EventKind) -> Level {
    match k {
        EventKind::Drop { .. }
        | EventKind::Reset { .. }
        | EventKind::AlgRewrite { .. }
        | EventKind::FtpEncrypted { .. } => Level::INFO,
        EventKind::PinholeOpen { .. } => Level::INFO,
        _ => Level::DEBUG,
    }
}

/// `key=value` pairs of an event's fields (without ts/event/packet), for
/// the human-readable log.
pub fn fields_text(ev: &Event) -> String {
    let v = serde_json::to_value(ev).unwrap_or_default();
    let mut out = String::new();
    if let Some(map) = v.as_object() {
        // serde_json sorts keys; put the telling ones first and prose last.
        const FIRST: [&str; 6] = ["reason", "rule", "session", "protocol", "src", "dst"];
        let rank = |k: &str| match FIRST.iter().position(|f| *f == k) {
            Some(i) => i,
            None if k == "detail" => usize::MAX,
            None => FIRST.len(),
        };
        let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
        entries.sort_by_key(|(k, _)| rank(k));
        for (k, val) in entries {
            if matches!(k.as_str(), "ts" | "event" | "packet") {
                continue;
            }
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            match val {
                serde_json::Value::String(s) if !s.contains(' ') && !s.contains('"') && !s.is_empty() => {
                    out.push_str(s)
                }
                other => out.push_str(&other.to_string()),
            }
        }
    }
    out
}

fn trace_event(ev: &Event) {
    let name = ev.kind.name();
    macro_rules! emit {
        ($lvl:expr) => {
            tracing::event!(target: "ftpgate::event", $lvl, event = name, "{} {}", name, fields_text(ev))
        };
    }
    match level_of(&ev.kind) {
        Level::INFO => emit!(Level::INFO),
        _ => emit!(Level::DEBUG),
    }
}

/// Drain the queue until every sender is gone. Events go to the JSONL file
/// (flushed when the queue runs dry, at least every second) and to tracing.
pub fn run(rx: Receiver<LogMsg>, mut events: Option<(PathBuf, BufWriter<File>)>) {
    let mut last_flush = Instant::now();
    let mut failed = false;
    loop {
        let msg = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let idle = msg.is_none();
        match msg {
            Some(LogMsg::Event(ev)) => {
                if tracing::enabled!(target: "ftpgate::event", Level::DEBUG) || level_of(&ev.kind) <= Level::INFO {
                    trace_event(&ev);
                }
                if let (Some((path, w)), false) = (&mut events, failed) {
                    let line = ev.to_json();
                    if let Err(e) = w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\n")) {
                        tracing::error!("cannot write the event log {}: {e}; event logging stopped", path.display());
                        failed = true;
                    }
                }
            }
            Some(LogMsg::Info(s)) => tracing::info!("{s}"),
            Some(LogMsg::Warn(s)) => tracing::warn!("{s}"),
            None => {}
        }
        if let Some((_, w)) = &mut events {
            if idle || last_flush.elapsed() >= Duration::from_secs(1) {
                let _ = w.flush();
                last_flush = Instant::now();
            }
        }
    }
    if let Some((_, mut w)) = events {
        let _ = w.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DropReason, Endpoint};
    use crate::time::Nanos;

    #[test]
    fn fields_text_renders_key_values_without_envelope() {
        let ev = Event::new(
            Nanos(1_000_000_000),
            Some(3),
            EventKind::Drop {
                reason: DropReason::Bounce,
                rule: None,
                session: None,
                src: Some(Endpoint("192.0.2.10:40000".parse().unwrap())),
                dst: None,
                detail: "PORT names 203.0.113.5".into(),
            },
        );
        let t = fields_text(&ev);
        assert!(t.starts_with("reason=bounce src=192.0.2.10:40000 detail="), "{t}");
        assert!(t.contains("\"PORT names 203.0.113.5\""), "{t}");
        assert!(!t.contains("ts=") && !t.contains("packet="));
    }

    #[test]
    fn logger_writes_jsonl_and_stops_when_senders_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ev.jsonl");
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let w = BufWriter::new(File::create(&path).unwrap());
        let p2 = path.clone();
        let h = std::thread::spawn(move || run(rx, Some((p2, w))));
        let kind = EventKind::PinholeUse {
            session: crate::event::Session {
                client: "192.0.2.10:1".parse().unwrap(),
                server: "198.51.100.20:21".parse().unwrap(),
            },
            address: "198.51.100.1".parse().unwrap(),
            port: 5000,
        };
        tx.send(LogMsg::Event(Event::new(Nanos(2_500_000_000), Some(1), kind))).unwrap();
        tx.send(LogMsg::Info("hello".into())).unwrap();
        drop(tx);
        h.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(v["event"], "pinhole_use");
        assert_eq!(v["ts"], 2.5);
        assert_eq!(text.lines().count(), 1);
    }
}
