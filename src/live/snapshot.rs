//! What the worker publishes for the admin endpoint: counters (every few
//! ticks) and, when someone asks, the session list. The admin thread reads
//! these copies and never touches the engine.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::conntrack::{Conn, State};
use crate::engine::{proto_name, Engine, Stats};
use crate::event::{DropReason, EventKind};
use crate::time::Nanos;

/// Per receive thread; the thread adds, the admin thread sums when read.
#[derive(Debug, Default)]
pub struct RxCounters {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    /// Larger than the link allows (GRO/GSO): dropped before the engine.
    pub oversized: AtomicU64,
    pub errors: AtomicU64,
    /// Dropped by the kernel before we read them (ring or socket queue
    /// full), from PACKET_STATISTICS, read about once a second.
    pub lost: AtomicU64,
}

/// Per interface, owned by the worker.
#[derive(Clone, Debug, Default)]
pub struct TxCounters {
    pub frames: u64,
    pub bytes: u64,
    /// EMSGSIZE: larger than the device MTU.
    pub oversized: u64,
    pub errors: u64,
    /// Received unicast frames addressed to another host's MAC (seen only
    /// because capture is promiscuous): not processed.
    pub ignored: u64,
}

impl TxCounters {
    /// Fold another worker's counters for the same interface into these.
    pub fn add(&mut self, o: &TxCounters) {
        self.frames += o.frames;
        self.bytes += o.bytes;
        self.oversized += o.oversized;
        self.errors += o.errors;
        self.ignored += o.ignored;
    }
}

/// The worker's counters as of its last publication.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub stats: Stats,
    pub connections: usize,
    pub max_connections: u32,
    pub pinholes: usize,
    pub ftp_sessions: usize,
    pub tx: Vec<TxCounters>,
    pub events: [u64; EventKind::NAMES.len()],
    /// Events the logger could not take (its queue was full).
    pub events_dropped: u64,
    /// Drop events by reason: blocked bounces and injections are counted here
    /// whether they cost a frame or a whole control connection.
    pub blocked: [u64; DropReason::ALL.len()],
    pub reloads: u64,
    /// Engine time of the last tick (seconds since the epoch).
    pub now: f64,
}

/// One device, for labels.
#[derive(Clone, Debug)]
pub struct IfaceLabel {
    pub name: String,
    pub device: String,
}

/// Counters kept outside the worker.
#[derive(Debug, Default)]
pub struct ProcessCounters {
    pub reload_failures: AtomicU64,
    pub started: f64,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Prometheus text exposition format 0.0.4.
pub fn render_metrics(m: &Metrics, ifaces: &[IfaceLabel], rx: &[&RxCounters], proc_: &ProcessCounters) -> String {
    let mut o = String::with_capacity(4096);
    let family = |o: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(o, "# HELP ftpgate_{name} {help}\n# TYPE ftpgate_{name} {kind}");
    };
    let label = |i: usize| {
        let l = &ifaces[i];
        format!("interface=\"{}\",device=\"{}\"", esc(&l.name), esc(&l.device))
    };

    family(&mut o, "up", "gauge", "1 while the gateway runs.");
    let _ = writeln!(o, "ftpgate_up 1");
    family(&mut o, "start_time_seconds", "gauge", "Start time, seconds since the epoch.");
    let _ = writeln!(o, "ftpgate_start_time_seconds {:.3}", proc_.started);

    family(&mut o, "frames_received_total", "counter", "Frames read from each device.");
    for (i, r) in rx.iter().enumerate() {
        let _ = writeln!(o, "ftpgate_frames_received_total{{{}}} {}", label(i), r.frames.load(Relaxed));
    }
    family(&mut o, "bytes_received_total", "counter", "Bytes read from each device.");
    for (i, r) in rx.iter().enumerate() {
        let _ = writeln!(o, "ftpgate_bytes_received_total{{{}}} {}", label(i), r.bytes.load(Relaxed));
    }
    family(
        &mut o,
        "frames_oversized_total",
        "counter",
        "Frames larger than the link MTU (GRO/GSO left on), dropped: direction rx before the engine, tx refused by the device.",
    );
    for (i, r) in rx.iter().enumerate() {
        let _ = writeln!(
            o,
            "ftpgate_frames_oversized_total{{{},direction=\"rx\"}} {}",
            label(i),
            r.oversized.load(Relaxed)
        );
        let tx = m.tx.get(i).map_or(0, |t| t.oversized);
        let _ = writeln!(o, "ftpgate_frames_oversized_total{{{},direction=\"tx\"}} {tx}", label(i));
    }
    family(
        &mut o,
        "frames_lost_total",
        "counter",
        "Frames the kernel dropped because ftpgate's receive ring or socket queue was full (the gateway fell behind).",
    );
    for (i, r) in rx.iter().enumerate() {
        let _ = writeln!(o, "ftpgate_frames_lost_total{{{}}} {}", label(i), r.lost.load(Relaxed));
    }
    family(&mut o, "frames_transmitted_total", "counter", "Frames sent on each device (forwarded and generated).");
    for (i, t) in m.tx.iter().enumerate().take(ifaces.len()) {
        let _ = writeln!(o, "ftpgate_frames_transmitted_total{{{}}} {}", label(i), t.frames);
    }
    family(&mut o, "bytes_transmitted_total", "counter", "Bytes sent on each device.");
    for (i, t) in m.tx.iter().enumerate().take(ifaces.len()) {
        let _ = writeln!(o, "ftpgate_bytes_transmitted_total{{{}}} {}", label(i), t.bytes);
    }
    family(
        &mut o,
        "frames_ignored_total",
        "counter",
        "Unicast frames addressed to other hosts' MACs (promiscuous capture): not processed.",
    );
    for (i, t) in m.tx.iter().enumerate().take(ifaces.len()) {
        let _ = writeln!(o, "ftpgate_frames_ignored_total{{{}}} {}", label(i), t.ignored);
    }
    family(&mut o, "device_errors_total", "counter", "Receive and transmit errors other than oversized frames.");
    for (i, r) in rx.iter().enumerate() {
        let _ = writeln!(o, "ftpgate_device_errors_total{{{},direction=\"rx\"}} {}", label(i), r.errors.load(Relaxed));
        let tx = m.tx.get(i).map_or(0, |t| t.errors);
        let _ = writeln!(o, "ftpgate_device_errors_total{{{},direction=\"tx\"}} {tx}", label(i));
    }

    let s = &m.stats;
    family(&mut o, "frames_in_total", "counter", "Frames the engine processed.");
    let _ = writeln!(o, "ftpgate_frames_in_total {}", s.frames_in);
    family(&mut o, "frames_forwarded_total", "counter", "Frames forwarded.");
    let _ = writeln!(o, "ftpgate_frames_forwarded_total {}", s.forwarded);
    family(&mut o, "frames_consumed_total", "counter", "Frames for the gateway itself (ARP, ND, ping).");
    let _ = writeln!(o, "ftpgate_frames_consumed_total {}", s.consumed);
    family(
        &mut o,
        "frames_generated_total",
        "counter",
        "Frames the gateway originated (ARP/ND, RSTs, ICMP errors, released held frames).",
    );
    let _ = writeln!(o, "ftpgate_frames_generated_total {}", s.generated);
    family(&mut o, "frames_dropped_total", "counter", "Frames dropped, by reason.");
    for r in DropReason::ALL {
        let _ = writeln!(o, "ftpgate_frames_dropped_total{{reason=\"{}\"}} {}", r.as_str(), s.dropped_for(r));
    }

    family(&mut o, "connections", "gauge", "Connections in the table.");
    let _ = writeln!(o, "ftpgate_connections {}", m.connections);
    family(&mut o, "connections_max", "gauge", "limits.max_connections.");
    let _ = writeln!(o, "ftpgate_connections_max {}", m.max_connections);
    family(&mut o, "table_fill_ratio", "gauge", "Connections / limits.max_connections.");
    let ratio = if m.max_connections == 0 { 0.0 } else { m.connections as f64 / f64::from(m.max_connections) };
    let _ = writeln!(o, "ftpgate_table_fill_ratio {ratio:.6}");
    family(&mut o, "connections_created_total", "counter", "Connections created.");
    let _ = writeln!(o, "ftpgate_connections_created_total {}", s.connections_new);
    family(&mut o, "nat_mappings_total", "counter", "NAT mappings created.");
    let _ = writeln!(o, "ftpgate_nat_mappings_total {}", s.nat_mappings);
    family(&mut o, "ftp_sessions", "gauge", "FTP control connections being inspected.");
    let _ = writeln!(o, "ftpgate_ftp_sessions {}", m.ftp_sessions);
    family(&mut o, "pinholes", "gauge", "Open FTP data-connection pinholes.");
    let _ = writeln!(o, "ftpgate_pinholes {}", m.pinholes);
    family(&mut o, "alg_rewrites_total", "counter", "PORT/EPRT/227/229 lines rewritten by the FTP ALG.");
    let _ = writeln!(o, "ftpgate_alg_rewrites_total {}", m.events[6]);
    family(&mut o, "ftp_blocked_total", "counter", "FTP attacks blocked (drop events), by kind.");
    for r in [
        DropReason::Bounce,
        DropReason::Injection,
        DropReason::PrivilegedPort,
        DropReason::CommandDenied,
        DropReason::ModeDenied,
        DropReason::Malformed,
    ] {
        let _ = writeln!(o, "ftpgate_ftp_blocked_total{{reason=\"{}\"}} {}", r.as_str(), m.blocked[r as usize]);
    }
    family(&mut o, "ftp_resets_total", "counter", "Control connections reset by the gateway after a violation.");
    let _ = writeln!(o, "ftpgate_ftp_resets_total {}", m.events[11]);
    family(&mut o, "events_total", "counter", "Events emitted, by kind.");
    for (k, n) in EventKind::NAMES.iter().zip(m.events) {
        let _ = writeln!(o, "ftpgate_events_total{{event=\"{k}\"}} {n}");
    }
    family(&mut o, "events_dropped_total", "counter", "Events the logger could not keep up with (not logged).");
    let _ = writeln!(o, "ftpgate_events_dropped_total {}", m.events_dropped);
    family(&mut o, "reloads_total", "counter", "Configuration reloads, by result.");
    let _ = writeln!(o, "ftpgate_reloads_total{{result=\"ok\"}} {}", m.reloads);
    let _ = writeln!(o, "ftpgate_reloads_total{{result=\"failed\"}} {}", proc_.reload_failures.load(Relaxed));
    o
}

// ---------------------------------------------------------------- sessions

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    /// Engine time of the snapshot (seconds since the epoch).
    pub ts: f64,
    pub connections: Vec<ConnView>,
    pub ftp_sessions: Vec<FtpView>,
    /// More connections exist than the list holds.
    pub truncated: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnView {
    pub id: u32,
    pub protocol: String,
    pub state: String,
    pub from: String,
    pub to: String,
    /// As the initiator sent it.
    pub src: String,
    pub dst: String,
    /// As it leaves the gateway, when NAT changes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat: Option<NatView>,
    pub expires_in: f64,
    /// An FTP control connection.
    #[serde(default)]
    pub ftp: bool,
    /// A data connection: the id of its control connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_of: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NatView {
    pub src: String,
    pub dst: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FtpView {
    pub session: String,
    pub control: u32,
    pub encrypted: bool,
    pub pinholes: Vec<PinholeView>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PinholeView {
    pub peer: String,
    pub address: String,
    pub port: u16,
    pub target: String,
    pub expires_in: f64,
}

pub fn state_name(s: State) -> &'static str {
    match s {
        State::New => "new",
        State::Replied => "replied",
        State::SynSent => "syn_sent",
        State::SynRecv => "syn_recv",
        State::Established => "established",
        State::FinWait => "fin_wait",
        State::TimeWait => "time_wait",
        State::Close => "close",
    }
}

fn ep(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

fn secs_until(t: Nanos, now: Nanos) -> f64 {
    (t.saturating_sub(now).as_millis() as f64) / 1000.0
}

pub fn conn_view(id: u32, c: &Conn, names: &[String], now: Nanos) -> ConnView {
    let name = |i: usize| names.get(i).cloned().unwrap_or_else(|| format!("#{i}"));
    let dep = c.reply.reversed();
    let icmp = c.orig.proto == crate::wire::PROTO_ICMP || c.orig.proto == crate::wire::PROTO_ICMPV6;
    let (src, dst, nsrc, ndst) = if icmp {
        // The echo identifier stands in for both ports: show addresses only.
        (c.orig.src.to_string(), c.orig.dst.to_string(), dep.src.to_string(), dep.dst.to_string())
    } else {
        (ep(c.orig.src, c.orig.sport), ep(c.orig.dst, c.orig.dport), ep(dep.src, dep.sport), ep(dep.dst, dep.dport))
    };
    ConnView {
        id,
        protocol: proto_name(c.orig.proto).to_string(),
        state: state_name(c.state).to_string(),
        from: name(c.iface(0)),
        to: name(c.iface(1)),
        nat: c.is_nat().then_some(NatView { src: nsrc, dst: ndst }),
        src,
        dst,
        expires_in: secs_until(c.expires, now),
        ftp: c.alg.is_some(),
        data_of: c.parent,
    }
}

/// Build the session list from the engine (on the worker, on request).
pub fn sessions(engine: &Engine, now: Nanos, limit: usize) -> Sessions {
    let names: Vec<String> = engine.config().interfaces.iter().map(|i| i.name.clone()).collect();
    let table = engine.table();
    let connections: Vec<ConnView> = table.iter().take(limit).map(|(id, c)| conn_view(id, c, &names, now)).collect();
    let pinholes = engine.pinholes();
    let ftp_sessions = engine
        .ftp_sessions()
        .map(|s| FtpView {
            session: format!("{}→{}", s.session.client, s.session.server),
            control: s.control,
            encrypted: s.encrypted,
            pinholes: s
                .pinholes
                .iter()
                .filter_map(|k| pinholes.get(k))
                .map(|p| PinholeView {
                    peer: p.peer.to_string(),
                    address: p.address.to_string(),
                    port: p.port,
                    target: ep(p.target.0, p.target.1),
                    expires_in: secs_until(p.expires, now),
                })
                .collect(),
        })
        .collect();
    Sessions { ts: now.as_secs_f64(), truncated: table.len() > connections.len(), connections, ftp_sessions }
}

/// `ftpgate sessions` without `--json`.
pub fn render_table(s: &Sessions) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "{:<6} {:<11} {:<17} {:<41} {:<41} {:<41} {:>9}",
        "PROTO", "STATE", "FROM>TO", "SOURCE", "DESTINATION", "NAT (leaves as src > dst)", "EXPIRES"
    );
    for c in &s.connections {
        let nat = c.nat.as_ref().map_or_else(|| "-".to_string(), |n| format!("{} > {}", n.src, n.dst));
        let mut state = c.state.clone();
        if c.ftp {
            state.push_str(" ftp");
        } else if c.data_of.is_some() {
            state.push_str(" data");
        }
        let _ = writeln!(
            o,
            "{:<6} {:<11} {:<17} {:<41} {:<41} {:<41} {:>8.0}s",
            c.protocol,
            state,
            format!("{}>{}", c.from, c.to),
            c.src,
            c.dst,
            nat,
            c.expires_in
        );
    }
    if s.truncated {
        let _ = writeln!(o, "(more connections than listed)");
    }
    let _ = writeln!(o, "{} connections, {} FTP sessions", s.connections.len(), s.ftp_sessions.len());
    for f in &s.ftp_sessions {
        let _ = writeln!(o, "FTP {}{}", f.session, if f.encrypted { " (encrypted: not inspected)" } else { "" });
        for p in &f.pinholes {
            let _ = writeln!(
                o,
                "    pinhole {} from {} -> {} (expires in {:.0}s)",
                ep(p.address.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), p.port),
                p.peer,
                p.target,
                p.expires_in
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<IfaceLabel> {
        vec![
            IfaceLabel { name: "inside".into(), device: "veth-gw-in".into() },
            IfaceLabel { name: "outside".into(), device: "veth-gw-out".into() },
        ]
    }

    /// Every sample line is `name{labels} value` or `name value` with a number.
    fn samples(text: &str) -> Vec<(String, f64)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').expect("name and value");
                (k.to_string(), v.parse::<f64>().unwrap_or_else(|_| panic!("not a number in {l:?}")))
            })
            .collect()
    }

    #[test]
    fn metrics_render_counters_with_labels() {
        let mut m =
            Metrics { connections: 250, max_connections: 1000, pinholes: 3, ftp_sessions: 2, ..Default::default() };
        m.stats.frames_in = 10;
        m.stats.dropped[DropReason::Bounce as usize] = 4;
        m.blocked[DropReason::Bounce as usize] = 5;
        m.events[6] = 7;
        m.tx = vec![TxCounters { frames: 9, oversized: 1, ..Default::default() }, TxCounters::default()];
        let rx = [RxCounters::default(), RxCounters::default()];
        rx[1].oversized.store(2, Relaxed);
        rx[0].lost.store(7, Relaxed);
        rx[0].frames.store(11, Relaxed);
        let pc = ProcessCounters::default();
        pc.reload_failures.store(1, Relaxed);
        let text = render_metrics(&m, &labels(), &[&rx[0], &rx[1]], &pc);
        let s = samples(&text);
        let get = |k: &str| s.iter().find(|(n, _)| n == k).unwrap_or_else(|| panic!("{k} missing in\n{text}")).1;
        assert_eq!(get("ftpgate_frames_in_total"), 10.0);
        assert_eq!(get("ftpgate_frames_dropped_total{reason=\"bounce\"}"), 4.0);
        assert_eq!(get("ftpgate_ftp_blocked_total{reason=\"bounce\"}"), 5.0);
        assert_eq!(get("ftpgate_alg_rewrites_total"), 7.0);
        assert_eq!(get("ftpgate_table_fill_ratio"), 0.25);
        assert_eq!(get("ftpgate_frames_received_total{interface=\"inside\",device=\"veth-gw-in\"}"), 11.0);
        assert_eq!(
            get("ftpgate_frames_oversized_total{interface=\"outside\",device=\"veth-gw-out\",direction=\"rx\"}"),
            2.0
        );
        assert_eq!(get("ftpgate_frames_lost_total{interface=\"inside\",device=\"veth-gw-in\"}"), 7.0);
        assert_eq!(
            get("ftpgate_frames_oversized_total{interface=\"inside\",device=\"veth-gw-in\",direction=\"tx\"}"),
            1.0
        );
        assert_eq!(get("ftpgate_reloads_total{result=\"failed\"}"), 1.0);
        assert_eq!(get("ftpgate_pinholes"), 3.0);
        // Every reason has a line, and every family is declared once.
        assert_eq!(
            s.iter().filter(|(n, _)| n.starts_with("ftpgate_frames_dropped_total")).count(),
            DropReason::ALL.len()
        );
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut dedup = types.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(types.len(), dedup.len());
    }

    #[test]
    fn label_values_are_escaped() {
        let l = vec![IfaceLabel { name: "a\"b".into(), device: "x\\y".into() }];
        let rx = RxCounters::default();
        let text = render_metrics(&Metrics::default(), &l, &[&rx], &ProcessCounters::default());
        assert!(text.contains("interface=\"a\\\"b\",device=\"x\\\\y\""), "{text}");
    }

    fn sample_sessions() -> Sessions {
        Sessions {
            ts: 1.5,
            truncated: false,
            connections: vec![ConnView {
                id: 3,
                protocol: "tcp".into(),
                state: "established".into(),
                from: "inside".into(),
                to: "outside".into(),
                src: "192.0.2.10:40000".into(),
                dst: "198.51.100.20:21".into(),
                nat: Some(NatView { src: "198.51.100.1:51000".into(), dst: "198.51.100.20:21".into() }),
                expires_in: 299.5,
                ftp: true,
                data_of: None,
            }],
            ftp_sessions: vec![FtpView {
                session: "192.0.2.10:40000→198.51.100.20:21".into(),
                control: 3,
                encrypted: false,
                pinholes: vec![PinholeView {
                    peer: "198.51.100.20".into(),
                    address: "198.51.100.1".into(),
                    port: 50000,
                    target: "192.0.2.10:40001".into(),
                    expires_in: 29.0,
                }],
            }],
        }
    }

    #[test]
    fn sessions_json_round_trips_and_has_the_documented_fields() {
        let s = sample_sessions();
        let text = serde_json::to_string(&s).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["connections"][0]["nat"]["src"], "198.51.100.1:51000");
        assert_eq!(v["connections"][0]["ftp"], true);
        assert!(v["connections"][0].get("data_of").is_none());
        assert_eq!(v["ftp_sessions"][0]["pinholes"][0]["port"], 50000);
        assert_eq!(serde_json::from_str::<Sessions>(&text).unwrap(), s);
    }

    #[test]
    fn table_shows_nat_and_pinholes() {
        let t = render_table(&sample_sessions());
        assert!(t.contains("198.51.100.1:51000 > 198.51.100.20:21"), "{t}");
        assert!(t.contains("established ftp"));
        assert!(t.contains("pinhole 198.51.100.1:50000 from 198.51.100.20 -> 192.0.2.10:40001"), "{t}");
        assert!(t.contains("1 connections, 1 FTP sessions"));
    }
}
