//! `ftpgate run`: the live gateway, the same kind of thin shell around the
//! engine as `replay`, with Linux devices instead of a capture file.
//!
//! Threads (none of them blocks the packet path):
//! - one receive thread per device: reads batches (AF_PACKET via pnet, behind
//!   the `datapath` traits) and sends them to the worker over a bounded channel;
//! - the worker (the calling thread): owns the `Engine` and every transmit
//!   handle, processes frames, ticks every 100 ms, publishes counters, and
//!   builds the session list when the admin thread asks;
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
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use crate::config::{self, AdminListen, Config, ConfigError, LogFormat, Operations};
use crate::engine::Engine;

use datapath::{Batch, Datapath, LinkRx, PnetDatapath};
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
    let infos: Vec<Option<checks::DeviceInfo>> = config
        .interfaces
        .iter()
        .map(|i| i.device.as_deref().and_then(checks::device_info))
        .collect();
    let mut fatal = Vec::new();
    for f in checks::findings(&config, &infos) {
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

    let mut dp = PnetDatapath;
    let mut links = Vec::new();
    for ifc in &config.interfaces {
        let dev = ifc.device.as_deref().unwrap_or(&ifc.name);
        // MTU plus Ethernet header and one VLAN tag.
        let max = usize::from(ifc.mtu) + 18;
        let link = dp
            .open(dev, max, None)
            .map_err(|e| LiveError::Os(format!("{dev}: cannot open for capture: {}", crate::capture::strip_os_error(&e))))?;
        links.push(link);
    }

    let events = match &ops.log.events {
        Some(p) => Some((
            p.clone(),
            File::options()
                .create(true)
                .append(true)
                .open(p)
                .map(|f| BufWriter::with_capacity(256 * 1024, f))
                .map_err(|e| LiveError::Os(format!("cannot write event log {}: {}", p.display(), crate::capture::strip_os_error(&e))))?,
        )),
        None => None,
    };
    let listener = admin::Listener::bind(&ops.admin).map_err(|e| {
        LiveError::Os(format!("admin endpoint {}: {}", describe_listen(&ops.admin), crate::capture::strip_os_error(&e)))
    })?;

    let clock = Clock::new();
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(Published::default());
    let proc_counters = Arc::new(ProcessCounters { started: clock.now().as_secs_f64(), ..Default::default() });

    let (log_tx, log_rx) = sync_channel::<LogMsg>(logging::QUEUE);
    let logger = thread::Builder::new()
        .name("ftpgate-log".into())
        .spawn(move || logging::run(log_rx, events))
        .map_err(|e| LiveError::Os(format!("cannot start the logger thread: {e}")))?;

    let (msg_tx, msg_rx) = sync_channel::<Msg>(128);
    let mut rx_threads = Vec::new();
    let mut recycle = Vec::new();
    let mut rx_counters = Vec::new();
    let mut txs = Vec::new();
    let mut macs = Vec::new();
    let labels: Vec<IfaceLabel> = config
        .interfaces
        .iter()
        .map(|i| IfaceLabel { name: i.name.clone(), device: i.device.clone().unwrap_or_default() })
        .collect();
    for (iface, link) in links.into_iter().enumerate() {
        let (pool_tx, pool_rx) = sync_channel::<Batch>(160);
        recycle.push(pool_tx);
        let counters = Arc::new(RxCounters::default());
        rx_counters.push(counters.clone());
        txs.push(link.tx);
        macs.push(link.mac);
        let (tx, stop, dev, mtu) = (msg_tx.clone(), stop.clone(), labels[iface].device.clone(), config.interfaces[iface].mtu);
        let rx = link.rx;
        let h = thread::Builder::new()
            .name(format!("ftpgate-rx-{iface}"))
            .spawn(move || rx_loop(iface, rx, tx, pool_rx, counters, stop, dev, mtu))
            .map_err(|e| LiveError::Os(format!("cannot start a receive thread: {e}")))?;
        rx_threads.push(h);
    }

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

    {
        let tx = msg_tx.clone();
        let path = opts.config.clone();
        let running_devices: Vec<Option<String>> = config.interfaces.iter().map(|i| i.device.clone()).collect();
        let pc = proc_counters.clone();
        let stop = stop.clone();
        thread::Builder::new()
            .name("ftpgate-signal".into())
            .spawn(move || signal_loop(sigset, tx, path, running_devices, ops, pc, stop))
            .map_err(|e| LiveError::Os(format!("cannot start the signal thread: {e}")))?;
    }
    drop(msg_tx);

    let seed = opts.seed.unwrap_or_else(rand::random);
    let names: Vec<String> = labels.iter().map(|l| format!("{} ({})", l.name, l.device)).collect();
    let mut engine = Engine::new(config, seed);
    engine.set_resolve_neighbors(true);
    let sink = LiveSink::new(txs, log_tx);
    let mut worker = Worker::new(engine, sink, clock, macs, published);
    tracing::info!("running on {}; pid {}", names.join(", "), std::process::id());
    worker.run(msg_rx, recycle);

    // Shutdown: receivers notice within their read timeout.
    stop.store(true, Relaxed);
    for h in rx_threads {
        let _ = h.join();
    }
    let stats = worker.engine.stats().clone();
    tracing::info!(
        "stopped: frames {} in, {} forwarded, {} dropped, {} gateway-generated",
        stats.frames_in,
        stats.forwarded,
        stats.dropped_total(),
        stats.generated
    );
    drop(worker); // the last log sender: the logger drains and exits
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

#[allow(clippy::too_many_arguments)]
fn rx_loop(
    iface: usize,
    mut rx: Box<dyn LinkRx>,
    tx: SyncSender<Msg>,
    pool: Receiver<Batch>,
    counters: Arc<RxCounters>,
    stop: Arc<AtomicBool>,
    dev: String,
    mtu: u16,
) {
    let mut warned_big: Option<std::time::Instant> = None;
    let mut warned_err: Option<std::time::Instant> = None;
    let quiet_for = |t: &Option<std::time::Instant>, d: u64| t.is_none_or(|t| t.elapsed() >= Duration::from_secs(d));
    while !stop.load(Relaxed) {
        let mut batch = pool.try_recv().unwrap_or_else(|_| Batch::with_capacity(64 * 2048));
        batch.clear();
        if let Err(e) = rx.recv_batch(&mut batch, 64, Duration::from_millis(100)) {
            counters.errors.fetch_add(1, Relaxed);
            if quiet_for(&warned_err, 10) {
                warned_err = Some(std::time::Instant::now());
                tracing::error!("{dev}: receive failed: {e}");
            }
            thread::sleep(Duration::from_millis(100));
            continue;
        }
        if batch.oversized > 0 {
            counters.oversized.fetch_add(u64::from(batch.oversized), Relaxed);
            if quiet_for(&warned_big, 60) {
                warned_big = Some(std::time::Instant::now());
                tracing::warn!(
                    "{dev}: received frames larger than MTU {mtu} (GRO/GSO on?): dropped and counted; \
                     `ethtool -K {dev} gro off gso off tso off tx off`"
                );
            }
        }
        if batch.frames.is_empty() {
            continue;
        }
        counters.frames.fetch_add(batch.len() as u64, Relaxed);
        counters.bytes.fetch_add(batch.data.len() as u64, Relaxed);
        // Blocking here is backpressure into the kernel's socket buffer, not a
        // stall of the worker; it fails only when the worker has gone.
        if tx.send(Msg::Frames(iface, batch)).is_err() {
            break;
        }
    }
}

fn signal_loop(
    set: libc::sigset_t,
    tx: SyncSender<Msg>,
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
                    tracing::info!("SIGHUP: {} is valid; handing it to the worker", path.display());
                    if tx.send(Msg::Reload(Box::new(cfg))).is_err() {
                        return;
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
                let _ = tx.send(Msg::Stop);
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
    published: Arc<Published>,
    labels: Vec<IfaceLabel>,
    rx: Vec<Arc<RxCounters>>,
    proc_: Arc<ProcessCounters>,
    clock: Clock,
}

impl admin::Handler for AdminState {
    fn metrics(&self) -> String {
        let m = self.published.metrics.lock().map(|g| g.clone()).unwrap_or_default();
        let rx: Vec<&RxCounters> = self.rx.iter().map(|a| &**a).collect();
        snapshot::render_metrics(&m, &self.labels, &rx, &self.proc_)
    }

    fn healthy(&self) -> Result<(), String> {
        let beat = self.published.heartbeat.load(Relaxed);
        let now = self.clock.now().0;
        let age = now.saturating_sub(beat) / 1_000_000;
        if beat == 0 || age > 2_000 {
            return Err(format!("the packet worker has not ticked for {} ms", age));
        }
        Ok(())
    }

    fn sessions_json(&self) -> Option<String> {
        self.published.request_sessions(Duration::from_secs(2)).map(|s| (*s).clone())
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
