//! `ftpgate run`: the live gateway, the same kind of thin shell around the
//! engine as `replay`, with Linux devices instead of a capture file.
//!
//! Threads (none of them blocks the packet path):
//! - N packet workers (`datapath.workers`, default 1): each owns an `Engine`
//!   (its own connection table; pinholes and neighbours shared) and its own
//!   receive and transmit socket on every device. With several workers the
//!   sockets of a device form a PACKET_FANOUT group whose classic BPF
//!   program (`dispatch`) gives every frame of a connection, both ways, to
//!   the same worker. A worker polls its sockets, processes what is ready in
//!   bursts, transmits in batches, ticks every 100 ms, publishes counters,
//!   and builds its part of the session list when the admin thread asks;
//! - the logger: event log (JSONL) and `tracing` output, fed by try_send;
//! - the admin endpoint (HTTP/1.0 on a Unix socket or loopback port);
//! - the signal thread: SIGHUP parses the file and hands a checked `Config`
//!   to the worker; SIGINT/SIGTERM stop it.

pub mod admin;
pub mod checks;
pub mod datapath;
pub mod logging;
pub mod snapshot;
pub mod worker;

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::config::{self, AdminListen, Config, ConfigError, LogFormat, Operations};
use crate::engine::Engine;

use logging::LogMsg;
use snapshot::{IfaceLabel, ProcessCounters, RxCounters};
use worker::{Clock, LiveSink, Msg, Published, Worker};

#[derive(Clone, Debug, Default)]
pub struct Options {
    pub config: PathBuf,
    /// Overrides of the configuration's `log:` / `admin:` sections.
    pub events: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub admin: Option<AdminListen>,
    /// None: drawn from the OS.
    pub seed: Option<u64>,
    /// Overrides of the configuration's `datapath:` section.
    pub workers: Option<u16>,
    pub backend: Option<crate::config::Backend>,
}

#[derive(Debug)]
pub enum LiveError {
    /// Invalid configuration (exit 1).
    Config(Vec<ConfigError>),
    /// The host is not fit to run on, or an OS call failed (exit 2).
    Os(String),
}

impl LiveError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LiveError::Config(_) => 1,
            LiveError::Os(_) => 2,
        }
    }
}

impl fmt::Display for LiveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveError::Config(errs) => {
                let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
                write!(f, "{}", lines.join("\n"))
            }
            LiveError::Os(s) => write!(f, "{s}"),
        }
    }
}

/// Read the configuration as `run` does: unreadable is exit 2, invalid exit 1.
pub fn load(path: &std::path::Path) -> Result<(Config, Operations), LiveError> {
    if let Err(e) = File::open(path) {
        return Err(LiveError::Os(format!(
            "cannot read config {}: {}",
            path.display(),
            crate::capture::strip_os_error(&e)
        )));
    }
    config::load_with_operations(path).map_err(LiveError::Config)
}

/// The signals the signal thread takes; blocked in every other thread.
fn signal_set() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, zero-initialised set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGHUP, libc::SIGINT, libc::SIGTERM] {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Run until SIGINT/SIGTERM. Returns after a clean shutdown.
pub fn run(opts: &Options) -> Result<(), LiveError> {
    let (config, mut ops) = load(&opts.config)?;
    if let Some(f) = opts.log_format {
        ops.log.format = f;
    }
    if let Some(l) = &opts.log_level {
        ops.log.level = l.clone();
    }
    if let Some(a) = &opts.admin {
        ops.admin = a.clone();
    }
    if let Some(e) = &opts.events {
        ops.log.events = Some(e.clone());
    }
    logging::init(ops.log.format, &ops.log.level);

    // The host, before anything is opened.
    checks::packet_permission().map_err(LiveError::Os)?;
    let infos: Vec<Option<checks::DeviceInfo>> =
        config.interfaces.iter().map(|i| i.device.as_deref().and_then(checks::device_info)).collect();
    let mut fatal = Vec::new();
    let gso_aware = opts.backend.unwrap_or(ops.datapath.backend) == config::Backend::Ring;
    for f in checks::findings(&config, &infos, gso_aware) {
        match f {
            checks::Finding::Error(s) => fatal.push(s),
            checks::Finding::Warning(s) => tracing::warn!("{s}"),
        }
    }
    if !fatal.is_empty() {
        return Err(LiveError::Os(fatal.join("\n")));
    }

    // Signals go to the signal thread only: block them before any thread starts.
    let sigset = signal_set();
    // SAFETY: pthread_sigmask with a valid set, for the calling thread (inherited by the rest).
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &sigset, std::ptr::null_mut()) };

    let workers = opts.workers.unwrap_or(ops.datapath.workers).max(1);
    let backend = opts.backend.unwrap_or(ops.datapath.backend);
    let dispatch = crate::dispatch::Dispatch::new(&config, workers);
    let busy_poll = Duration::from_micros(u64::from(ops.datapath.busy_poll_us));
    let mut dp = datapath::open_datapath(match backend {
        config::Backend::Ring => datapath::Backend::Ring,
        config::Backend::Pnet => datapath::Backend::Pnet,
    });
    // links[w][i]: worker w's own socket on interface i. Workers join each
    // device's fanout group in order, so member k is worker k.
    let group_base = (std::process::id() as u16).wrapping_mul(31);
    let mut links: Vec<Vec<datapath::Link>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, ifc) in config.interfaces.iter().enumerate() {
        let dev = ifc.device.as_deref().unwrap_or(&ifc.name);
        // MTU plus Ethernet header and one VLAN tag.
        let max = usize::from(ifc.mtu) + 18;
        let fanout = (workers > 1).then(|| datapath::Fanout {
            group: group_base.wrapping_add(i as u16),
            program: dispatch
                .program(i)
                .iter()
                .map(|x| libc::sock_filter { code: x.code, jt: x.jt, jf: x.jf, k: x.k })
                .collect(),
        });
        for w in links.iter_mut() {
            let link = dp.open(dev, max, fanout.as_ref()).map_err(|e| {
                LiveError::Os(format!("{dev}: cannot open for capture: {}", crate::capture::strip_os_error(&e)))
            })?;
            w.push(link);
        }
    }

    let events = match &ops.log.events {
        Some(p) => Some((
            p.clone(),
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .map(|f| BufWriter::with_capacity(256 * 1024, f))
                .map_err(|e| {
                    LiveError::Os(format!(
                        "cannot write event log {}: {}",
                        p.display(),
                        crate::capture::strip_os_error(&e)
                    ))
                })?,
        )),
        None => None,
    };
    let listener = admin::Listener::bind(&ops.admin).map_err(|e| {
        LiveError::Os(format!("admin endpoint {}: {}", describe_listen(&ops.admin), crate::capture::strip_os_error(&e)))
    })?;

    let clock = Clock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let proc_counters = Arc::new(ProcessCounters { started: clock.now().as_secs_f64(), ..Default::default() });

    let (log_tx, log_rx) = sync_channel::<LogMsg>(logging::QUEUE);
    let logger = thread::Builder::new()
        .name("ftpgate-log".into())
        .spawn(move || logging::run(log_rx, events))
        .map_err(|e| LiveError::Os(format!("cannot start the logger thread: {e}")))?;

    let labels: Vec<IfaceLabel> = config
        .interfaces
        .iter()
        .map(|i| IfaceLabel { name: i.name.clone(), device: i.device.clone().unwrap_or_default() })
        .collect();
    let devices: Vec<(String, u16)> =
        config.interfaces.iter().map(|i| (i.device.clone().unwrap_or_else(|| i.name.clone()), i.mtu)).collect();
    // Receive counters per device, shared by the workers that read it.
    let rx_counters: Vec<Arc<RxCounters>> = devices.iter().map(|_| Arc::new(RxCounters::default())).collect();
    let published: Vec<Arc<Published>> = (0..workers).map(|_| Arc::new(Published::default())).collect();

    let socket_path = listener.as_ref().and_then(|l| l.socket_path().map(|p| p.to_path_buf()));
    if let Some(l) = listener {
        tracing::info!("admin endpoint on {} (/metrics /healthz /sessions)", l.describe());
        let h: Arc<dyn admin::Handler> = Arc::new(AdminState {
            published: published.clone(),
            labels: labels.clone(),
            rx: rx_counters.clone(),
            proc_: proc_counters.clone(),
            clock,
        });
        thread::Builder::new()
            .name("ftpgate-admin".into())
            .spawn(move || l.serve(h))
            .map_err(|e| LiveError::Os(format!("cannot start the admin thread: {e}")))?;
    }

    let mut ctl_txs = Vec::new();
    let mut ctl_rxs = Vec::new();
    for _ in 0..workers {
        let (t, r) = sync_channel::<Msg>(8);
        ctl_txs.push(t);
        ctl_rxs.push(r);
    }
    {
        let txs = ctl_txs.clone();
        let path = opts.config.clone();
        let running_devices: Vec<Option<String>> = config.interfaces.iter().map(|i| i.device.clone()).collect();
        let pc = proc_counters.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("ftpgate-signal".into())
            .spawn(move || signal_loop(sigset, txs, path, running_devices, ops, pc, stop))
            .map_err(|e| LiveError::Os(format!("cannot start the signal thread: {e}")))?;
    }

    let seed = opts.seed.unwrap_or_else(rand::random);
    let names: Vec<String> = labels.iter().map(|l| format!("{} ({})", l.name, l.device)).collect();
    let mut handles = Vec::new();
    let engines = Engine::workers(&config, seed, workers);
    for (k, ((links, ctl), mut engine)) in links.into_iter().zip(ctl_rxs).zip(engines).enumerate() {
        engine.set_resolve_neighbors(true);
        let mut rxs = Vec::new();
        let mut txs = Vec::new();
        let mut macs = Vec::new();
        for l in links {
            rxs.push(l.rx);
            txs.push(l.tx);
            macs.push(l.mac);
        }
        let sink = LiveSink::new(txs, log_tx.clone());
        let mut worker = Worker::new(engine, sink, clock, macs, published[k].clone());
        // With rings, looking again costs no system call (pnet would pay a
        // poll(2) per look), so only the ring backend spins.
        if backend == config::Backend::Ring {
            worker.busy_poll = busy_poll;
        }
        let (counters, stop, devices) = (rx_counters.clone(), stop.clone(), devices.clone());
        let h = thread::Builder::new()
            .name(format!("ftpgate-w{k}"))
            .spawn(move || {
                worker.run_polling(rxs, counters, ctl, &stop, devices);
                worker.engine.stats().clone()
            })
            .map_err(|e| LiveError::Os(format!("cannot start a worker thread: {e}")))?;
        handles.push(h);
    }
    drop(log_tx);
    tracing::info!(
        "running on {} with {workers} worker{} ({} datapath); pid {}",
        names.join(", "),
        if workers == 1 { "" } else { "s" },
        match backend {
            config::Backend::Ring => "ring",
            config::Backend::Pnet => "pnet",
        },
        std::process::id()
    );

    let mut total = crate::engine::Stats::default();
    for h in handles {
        if let Ok(s) = h.join() {
            total.add(&s);
        }
    }
    // A worker that ended on its own (it should not) stops the rest too.
    stop.store(true, Relaxed);
    let lost: u64 = rx_counters.iter().map(|c| c.lost.load(Relaxed)).sum();
    tracing::info!(
        "stopped: frames {} in, {} forwarded, {} dropped, {} gateway-generated; {lost} lost before reading (receive queue full)",
        total.frames_in,
        total.forwarded,
        total.dropped_total(),
        total.generated
    );
    drop(ctl_txs);
    let _ = logger.join();
    if let Some(p) = socket_path {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}

fn describe_listen(l: &AdminListen) -> String {
    match l {
        AdminListen::Unix(p) => format!("unix:{}", p.display()),
        AdminListen::Tcp(a) => a.to_string(),
        AdminListen::Off => "off".into(),
    }
}

fn signal_loop(
    set: libc::sigset_t,
    txs: Vec<SyncSender<Msg>>,
    path: PathBuf,
    devices: Vec<Option<String>>,
    ops: Operations,
    pc: Arc<ProcessCounters>,
    stop: Arc<AtomicBool>,
) {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait on a set blocked in every thread.
        if unsafe { libc::sigwait(&set, &mut sig) } != 0 {
            continue;
        }
        match sig {
            libc::SIGHUP => match reload_config(&path, &devices, &ops) {
                Ok(cfg) => {
                    tracing::info!("SIGHUP: {} is valid; handing it to the workers", path.display());
                    for tx in &txs {
                        if tx.send(Msg::Reload(Box::new(cfg.clone()))).is_err() {
                            return;
                        }
                    }
                }
                Err(lines) => {
                    pc.reload_failures.fetch_add(1, Relaxed);
                    for l in lines {
                        tracing::error!("{l}");
                    }
                    tracing::error!("SIGHUP: reload refused; the running configuration stays");
                }
            },
            _ => {
                let name = if sig == libc::SIGINT { "SIGINT" } else { "SIGTERM" };
                tracing::info!("{name}: shutting down");
                stop.store(true, Relaxed);
                for tx in &txs {
                    let _ = tx.try_send(Msg::Stop);
                }
                return;
            }
        }
    }
}

/// Parse and check a new file (on the signal thread, off the packet path).
fn reload_config(path: &std::path::Path, devices: &[Option<String>], ops: &Operations) -> Result<Config, Vec<String>> {
    let (cfg, new_ops) = match load(path) {
        Ok(x) => x,
        Err(LiveError::Config(errs)) => return Err(errs.iter().map(|e| e.to_string()).collect()),
        Err(e) => return Err(vec![e.to_string()]),
    };
    let new_devices: Vec<Option<String>> = cfg.interfaces.iter().map(|i| i.device.clone()).collect();
    if new_devices != devices {
        return Err(vec![format!(
            "{}: the interfaces' devices changed ({} → {}): restart ftpgate to use other devices",
            path.display(),
            list_devices(devices),
            list_devices(&new_devices)
        )]);
    }
    if &new_ops != ops {
        tracing::warn!("{}: changes under 'admin:' and 'log:' take effect at the next start", path.display());
    }
    Ok(cfg)
}

fn list_devices(d: &[Option<String>]) -> String {
    d.iter().map(|x| x.as_deref().unwrap_or("-")).collect::<Vec<_>>().join(", ")
}

struct AdminState {
    /// One per worker.
    published: Vec<Arc<Published>>,
    labels: Vec<IfaceLabel>,
    rx: Vec<Arc<RxCounters>>,
    proc_: Arc<ProcessCounters>,
    clock: Clock,
}

/// The gateway's counters: the workers' added up.
fn merge_metrics(all: &[snapshot::Metrics]) -> snapshot::Metrics {
    let mut m = all.first().cloned().unwrap_or_default();
    for o in all.iter().skip(1) {
        m.stats.add(&o.stats);
        m.connections += o.connections;
        m.ftp_sessions += o.ftp_sessions;
        // One shared pinhole map and one configuration: not summed.
        m.pinholes = m.pinholes.max(o.pinholes);
        m.max_connections = m.max_connections.max(o.max_connections);
        m.reloads = m.reloads.min(o.reloads);
        m.now = m.now.max(o.now);
        if m.tx.len() < o.tx.len() {
            m.tx.resize(o.tx.len(), Default::default());
        }
        for (x, y) in m.tx.iter_mut().zip(&o.tx) {
            x.add(y);
        }
        for (x, y) in m.events.iter_mut().zip(o.events) {
            *x += y;
        }
        m.events_dropped += o.events_dropped;
        for (x, y) in m.blocked.iter_mut().zip(o.blocked) {
            *x += y;
        }
    }
    m
}

impl admin::Handler for AdminState {
    fn metrics(&self) -> String {
        let all: Vec<snapshot::Metrics> =
            self.published.iter().map(|p| p.metrics.lock().map(|g| g.clone()).unwrap_or_default()).collect();
        let m = merge_metrics(&all);
        let rx: Vec<&RxCounters> = self.rx.iter().map(|a| &**a).collect();
        snapshot::render_metrics(&m, &self.labels, &rx, &self.proc_)
    }

    fn healthy(&self) -> Result<(), String> {
        let now = self.clock.now().0;
        for (k, p) in self.published.iter().enumerate() {
            let beat = p.heartbeat.load(Relaxed);
            let age = now.saturating_sub(beat) / 1_000_000;
            if beat == 0 || age > 2_000 {
                let who = if self.published.len() == 1 {
                    "the packet worker".to_string()
                } else {
                    format!("packet worker {k}")
                };
                return Err(format!("{who} has not ticked for {age} ms"));
            }
        }
        Ok(())
    }

    fn sessions_json(&self) -> Option<String> {
        if let [one] = &self.published[..] {
            return one.request_sessions(Duration::from_secs(2)).map(|s| (*s).clone());
        }
        // Ask every worker at once, then join their lists.
        let mut merged: Option<snapshot::Sessions> = None;
        for p in &self.published {
            let json = p.request_sessions(Duration::from_secs(2))?;
            let s: snapshot::Sessions = serde_json::from_str(&json).ok()?;
            match &mut merged {
                None => merged = Some(s),
                Some(m) => {
                    m.ts = m.ts.max(s.ts);
                    m.truncated |= s.truncated;
                    m.connections.extend(s.connections);
                    m.ftp_sessions.extend(s.ftp_sessions);
                }
            }
        }
        merged.and_then(|m| serde_json::to_string(&m).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = "interfaces:\n  inside:\n    device: veth-a\n    addresses: [192.0.2.1/24]\n  outside:\n    device: veth-b\n    addresses: [198.51.100.1/24]\n";

    fn devices() -> Vec<Option<String>> {
        vec![Some("veth-a".into()), Some("veth-b".into())]
    }

    #[test]
    fn reload_accepts_a_good_file_and_refuses_bad_ones_with_locations() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("gw.yaml");
        std::fs::write(&p, CFG).unwrap();
        let ops = Operations::default();
        assert!(reload_config(&p, &devices(), &ops).is_ok());

        std::fs::write(&p, format!("{CFG}policy:\n  default: permit\n")).unwrap();
        let e = reload_config(&p, &devices(), &ops).unwrap_err();
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with(&format!("{}:9:12: unknown value 'permit'", p.display())), "{e:?}");

        std::fs::write(&p, CFG.replace("veth-b", "eth7")).unwrap();
        let e = reload_config(&p, &devices(), &ops).unwrap_err();
        assert!(e[0].contains("devices changed (veth-a, veth-b → veth-a, eth7)"), "{e:?}");

        std::fs::remove_file(&p).unwrap();
        let e = reload_config(&p, &devices(), &ops).unwrap_err();
        assert!(e[0].starts_with("cannot read config"), "{e:?}");
    }
}
