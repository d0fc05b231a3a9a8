//! The packet worker: owns the Engine (a plain owned table, no locks on the
//! packet path), takes batches from the receive threads, transmits, ticks,
//! and publishes copies of its counters and, on request, its sessions.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, IfIndex};
use crate::engine::{BatchFrame, Engine, Sink, Verdict, BATCH};
use crate::event::{Event, EventKind};
use crate::time::Nanos;
use crate::wire::Mac;

use super::datapath::{Batch, LinkRx, LinkTx, Offload};
use super::logging::LogMsg;
use super::snapshot::{self, Metrics, RxCounters, TxCounters};

/// What the worker receives, in order.
pub enum Msg {
    Frames(IfIndex, Batch),
    /// A configuration already parsed and checked off the packet path.
    Reload(Box<Config>),
    Stop,
}

const TICK: Duration = Duration::from_millis(100);
/// Counters are copied out this often.
const PUBLISH: Duration = Duration::from_millis(500);
/// Connections listed by /sessions at most.
pub const SESSIONS_LIMIT: usize = 100_000;

/// The engine's clock: the wall clock at start plus monotonic time since, so
/// event timestamps are real times and never go backwards.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
    epoch: Nanos,
}

impl Clock {
    pub fn new() -> Clock {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        Clock { start: Instant::now(), epoch: Nanos(epoch) }
    }
    pub fn now(&self) -> Nanos {
        self.epoch.saturating_add(self.start.elapsed())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

/// Shared between the worker and the admin thread.
#[derive(Default)]
pub struct Published {
    pub metrics: Mutex<Metrics>,
    /// Engine time of the worker's last tick (heartbeat for /healthz).
    pub heartbeat: AtomicU64,
    pub sessions_wanted: AtomicBool,
    pub sessions: Mutex<(u64, Arc<String>)>,
    pub sessions_ready: Condvar,
}

impl Published {
    /// Ask the worker for a fresh session list and wait up to `wait` for it.
    pub fn request_sessions(&self, wait: Duration) -> Option<Arc<String>> {
        let guard = self.sessions.lock().ok()?;
        let seen = guard.0;
        self.sessions_wanted.store(true, Relaxed);
        let (guard, res) = self.sessions_ready.wait_timeout_while(guard, wait, |g| g.0 == seen).ok()?;
        if res.timed_out() {
            return None;
        }
        Some(guard.1.clone())
    }
}

pub struct LiveSink {
    tx: Vec<Box<dyn LinkTx>>,
    /// Frames waiting for `flush`, per device.
    queues: Vec<Batch>,
    pub counters: Vec<TxCounters>,
    log: SyncSender<LogMsg>,
    pub events: [u64; EventKind::NAMES.len()],
    pub events_dropped: u64,
    pub blocked: [u64; crate::event::DropReason::ALL.len()],
    warned: Option<Instant>,
}

impl LiveSink {
    pub fn new(tx: Vec<Box<dyn LinkTx>>, log: SyncSender<LogMsg>) -> LiveSink {
        let n = tx.len();
        LiveSink {
            tx,
            queues: (0..n).map(|_| Batch::with_capacity(64 * 2048)).collect(),
            counters: vec![TxCounters::default(); n],
            log,
            events: [0; EventKind::NAMES.len()],
            events_dropped: 0,
            blocked: [0; crate::event::DropReason::ALL.len()],
            warned: None,
        }
    }

    /// A warning for the log, at most one every 10 s: the packet path never
    /// writes to a terminal or file itself.
    fn warn(&mut self, text: impl FnOnce() -> String) {
        if self.warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            self.warned = Some(Instant::now());
            let _ = self.log.try_send(LogMsg::Warn(text()));
        }
    }

    fn queued(&self) -> usize {
        self.queues.iter().map(|q| q.frames.len()).max().unwrap_or(0)
    }

    /// Queue a frame for `iface`; `flush` sends the queues.
    pub fn send(&mut self, iface: IfIndex, frame: &[u8]) {
        self.send_offload(iface, frame, Offload::default());
    }

    /// Queue a frame that the device (or the kernel) is to cut into segments.
    pub fn send_offload(&mut self, iface: IfIndex, frame: &[u8], offload: Offload) {
        if let Some(q) = self.queues.get_mut(iface) {
            q.push_offload(frame, offload);
        }
    }

    /// Send what is queued, one batch per device.
    pub fn flush(&mut self) {
        for iface in 0..self.tx.len() {
            if self.queues[iface].frames.is_empty() {
                continue;
            }
            let q = std::mem::take(&mut self.queues[iface]);
            let mut oversized = Vec::new();
            let mut errors = Vec::new();
            self.tx[iface].send_batch(&q, &mut |i, e| {
                if e.raw_os_error() == Some(libc::EMSGSIZE) {
                    oversized.push(q.frames[i].1);
                } else {
                    errors.push(e);
                }
            });
            let c = &mut self.counters[iface];
            let failed = (oversized.len() + errors.len()) as u64;
            c.frames += q.frames.len() as u64 - failed;
            c.bytes += q.data.len() as u64;
            c.oversized += oversized.len() as u64;
            c.errors += errors.len() as u64;
            if let Some(len) = oversized.first() {
                self.warn(|| format!("interface #{iface}: a {len}-byte frame is larger than the device MTU (EMSGSIZE); dropped and counted"));
            } else if let Some(e) = errors.first() {
                let e = e.to_string();
                self.warn(|| format!("interface #{iface}: transmit failed: {e}"));
            }
            let mut q = q;
            q.clear();
            self.queues[iface] = q;
        }
    }
}

impl Sink for LiveSink {
    fn transmit(&mut self, iface: IfIndex, frame: &[u8]) {
        self.send(iface, frame);
    }

    fn event(&mut self, ev: Event) {
        self.events[ev.kind.index()] += 1;
        if let EventKind::Drop { reason, .. } = &ev.kind {
            self.blocked[*reason as usize] += 1;
        }
        match self.log.try_send(LogMsg::Event(ev)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.events_dropped += 1,
        }
    }
}

pub struct Worker {
    pub engine: Engine,
    pub sink: LiveSink,
    pub clock: Clock,
    /// Device MACs by interface index, re-applied after a reload.
    pub macs: Vec<Mac>,
    pub published: Arc<Published>,
    reloads: u64,
    /// Frame buffers for one `process_batch` burst (the engine may grow a
    /// frame, so each is a Vec of its own); reused, never freed.
    bufs: Vec<Vec<u8>>,
    offloads: [Offload; BATCH],
    packet: u64,
    /// How long to keep looking for frames without sleeping after the last
    /// ones came (0: always sleep in poll).
    pub busy_poll: Duration,
}

impl Worker {
    pub fn new(engine: Engine, sink: LiveSink, clock: Clock, macs: Vec<Mac>, published: Arc<Published>) -> Worker {
        let bufs = (0..BATCH).map(|_| Vec::with_capacity(65536 + 128)).collect();
        let mut w = Worker {
            engine,
            sink,
            clock,
            macs,
            published,
            reloads: 0,
            bufs,
            offloads: [Offload::default(); BATCH],
            packet: 0,
            busy_poll: Duration::ZERO,
        };
        w.apply_macs();
        w
    }

    fn apply_macs(&mut self) {
        let cfg_macs: Vec<Option<Mac>> = self.engine.config().interfaces.iter().map(|i| i.mac).collect();
        for (i, m) in cfg_macs.into_iter().enumerate() {
            if let Some(dev) = self.macs.get(i) {
                // A configured `mac:` wins; otherwise the device's own.
                self.engine.set_mac(i, m.unwrap_or(*dev));
            }
        }
    }

    /// Until Stop, or until every sender is gone.
    pub fn run(&mut self, rx: Receiver<Msg>, recycle: Vec<SyncSender<Batch>>) {
        let mut next_tick = Instant::now() + TICK;
        let mut next_publish = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(Msg::Frames(iface, batch)) => {
                    self.frames(iface, &batch);
                    if let Some(r) = recycle.get(iface) {
                        let _ = r.try_send(batch);
                    }
                }
                Ok(Msg::Reload(cfg)) => self.reload(*cfg),
                Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
            let now_i = Instant::now();
            if now_i >= next_tick {
                self.tick(now_i, &mut next_publish);
                next_tick = now_i + TICK;
            }
        }
        let now = self.clock.now();
        self.publish_metrics(now);
    }

    /// Process a received batch in bursts of `BATCH` (the engine prefetches
    /// a burst's table entries together) and send what comes out.
    pub fn frames(&mut self, iface: IfIndex, batch: &Batch) {
        let now = self.clock.now();
        let ours = self.engine.mac(iface);
        let mut n = 0;
        for (f, off) in batch.iter_offloads() {
            // Promiscuous capture also sees unicast between other hosts on a
            // flooded segment: not addressed to the gateway, not its to route.
            if f.len() >= 6 && f[0] & 1 == 0 && f[0..6] != ours {
                if let Some(c) = self.sink.counters.get_mut(iface) {
                    c.ignored += 1;
                }
                continue;
            }
            self.bufs[n].clear();
            self.bufs[n].extend_from_slice(f);
            self.offloads[n] = off;
            n += 1;
            if n == BATCH {
                self.burst(now, iface, n);
                n = 0;
            }
        }
        if n > 0 {
            self.burst(now, iface, n);
        }
        self.sink.flush();
    }

    fn burst(&mut self, now: Nanos, iface: IfIndex, n: usize) {
        let first = self.packet + 1;
        self.packet += n as u64;
        let mut bufs = self.bufs.iter_mut();
        let mut burst: [BatchFrame<'_>; BATCH] =
            std::array::from_fn(|i| BatchFrame::new(iface, first + i as u64, bufs.next().expect("BATCH buffers")));
        self.engine.process_batch(now, &mut burst[..n], &mut self.sink);
        for (bf, off) in burst[..n].iter().zip(self.offloads) {
            if let Verdict::Forward(egress) = bf.verdict {
                self.sink.send_offload(egress, bf.frame, off);
            }
        }
        if self.sink.queued() >= 64 {
            self.sink.flush();
        }
    }

    /// Serve `links` (this worker's own sockets, one per device; with several
    /// workers each joined to the device's fanout group) until `stop`:
    /// poll them all, process what is ready, tick, and take control
    /// messages (reload) between bursts.
    pub fn run_polling(
        &mut self,
        mut rx: Vec<Box<dyn LinkRx>>,
        counters: Vec<Arc<RxCounters>>,
        ctl: Receiver<Msg>,
        stop: &AtomicBool,
        devices: Vec<(String, u16)>,
    ) {
        let mut fds: Vec<libc::pollfd> =
            rx.iter().map(|r| libc::pollfd { fd: r.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        let mut batch = Batch::with_capacity(64 * 2048);
        let mut next_tick = Instant::now() + TICK;
        let mut next_publish = Instant::now();
        let mut warned_big: Option<Instant> = None;
        let mut warned_err: Option<Instant> = None;
        let quiet_for = |t: &Option<Instant>, d: u64| t.is_none_or(|t| t.elapsed() >= Duration::from_secs(d));
        let mut busy_until: Option<Instant> = None;
        while !stop.load(Relaxed) {
            let r = if busy_until.is_some_and(|t| Instant::now() < t) {
                // Frames came a moment ago: look again without sleeping
                // (a ring is checked in memory, no system call), which saves
                // a wake-up per frame while traffic flows.
                for f in fds.iter_mut() {
                    f.revents = libc::POLLIN;
                }
                1
            } else {
                let wait = next_tick.saturating_duration_since(Instant::now()).as_millis().min(100) as libc::c_int;
                // SAFETY: poll on our own array of live pollfds.
                unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) }
            };
            let mut got = 0;
            if r > 0 {
                for i in 0..fds.len() {
                    if fds[i].revents == 0 {
                        continue;
                    }
                    // Up to 4 batches per device per wake-up, so one busy
                    // device cannot starve the other.
                    for _ in 0..4 {
                        batch.clear();
                        if let Err(e) = rx[i].recv_batch(&mut batch, 64, Duration::ZERO) {
                            counters[i].errors.fetch_add(1, Relaxed);
                            if quiet_for(&warned_err, 10) {
                                warned_err = Some(Instant::now());
                                let _ = self
                                    .sink
                                    .log
                                    .try_send(LogMsg::Warn(format!("{}: receive failed: {e}", devices[i].0)));
                            }
                            break;
                        }
                        if batch.oversized > 0 {
                            counters[i].oversized.fetch_add(u64::from(batch.oversized), Relaxed);
                            if quiet_for(&warned_big, 60) {
                                warned_big = Some(Instant::now());
                                let (dev, mtu) = &devices[i];
                                let _ = self.sink.log.try_send(LogMsg::Warn(format!(
                                    "{dev}: received frames larger than MTU {mtu} that are not TCP segmentation \
                                     offload frames (jumbo frames? UDP GSO?): dropped and counted. Match the MTU \
                                     to the link's; with the pnet datapath, `ethtool -K {dev} gro off gso off tso off tx off`"
                                )));
                            }
                        }
                        if batch.frames.is_empty() {
                            break;
                        }
                        got += batch.len();
                        counters[i].frames.fetch_add(batch.len() as u64, Relaxed);
                        counters[i].bytes.fetch_add(batch.data.len() as u64, Relaxed);
                        self.frames(i, &batch);
                        if batch.len() < 64 {
                            break;
                        }
                    }
                }
            }
            if got > 0 && !self.busy_poll.is_zero() {
                busy_until = Some(Instant::now() + self.busy_poll);
            }
            match ctl.try_recv() {
                Ok(Msg::Reload(cfg)) => self.reload(*cfg),
                Ok(Msg::Frames(iface, b)) => self.frames(iface, &b),
                Ok(Msg::Stop) => break,
                Err(_) => {}
            }
            let now_i = Instant::now();
            if now_i >= next_tick {
                if now_i >= next_publish {
                    take_drops(&mut rx, &counters);
                }
                self.tick(now_i, &mut next_publish);
                next_tick = now_i + TICK;
            }
        }
        take_drops(&mut rx, &counters);
        let now = self.clock.now();
        self.publish_metrics(now);
    }

    fn tick(&mut self, now_i: Instant, next_publish: &mut Instant) {
        let now = self.clock.now();
        self.engine.tick(now, &mut self.sink);
        self.sink.flush();
        self.published.heartbeat.store(now.0, Relaxed);
        if self.published.sessions_wanted.swap(false, Relaxed) {
            self.publish_sessions(now);
        }
        if now_i >= *next_publish {
            self.publish_metrics(now);
            *next_publish = now_i + PUBLISH;
        }
    }

    pub fn reload(&mut self, cfg: Config) {
        let ended = self.engine.reload(cfg, &mut self.sink);
        self.sink.flush();
        self.apply_macs();
        self.reloads += 1;
        let _ = self.sink.log.try_send(LogMsg::Info(format!(
            "configuration reloaded: {ended} connection(s) the new policy no longer allows were ended, {} kept",
            self.engine.table().len()
        )));
        self.publish_metrics(self.clock.now());
    }

    fn publish_metrics(&self, now: Nanos) {
        let m = Metrics {
            stats: self.engine.stats().clone(),
            connections: self.engine.table().len(),
            max_connections: self.engine.config().limits.max_connections,
            pinholes: self.engine.pinholes().len(),
            ftp_sessions: self.engine.ftp_sessions().count(),
            tx: self.sink.counters.clone(),
            events: self.sink.events,
            events_dropped: self.sink.events_dropped,
            blocked: self.sink.blocked,
            reloads: self.reloads,
            now: now.as_secs_f64(),
        };
        if let Ok(mut g) = self.published.metrics.lock() {
            *g = m;
        }
    }

    fn publish_sessions(&self, now: Nanos) {
        let s = snapshot::sessions(&self.engine, now, SESSIONS_LIMIT);
        let json = serde_json::to_string(&s).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
        if let Ok(mut g) = self.published.sessions.lock() {
            g.0 += 1;
            g.1 = Arc::new(json);
        }
        self.published.sessions_ready.notify_all();
    }
}

/// Add what the kernel dropped on each socket since the last look.
fn take_drops(rx: &mut [Box<dyn LinkRx>], counters: &[Arc<RxCounters>]) {
    for (r, c) in rx.iter_mut().zip(counters) {
        let n = r.take_drops();
        if n > 0 {
            c.lost.fetch_add(n, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::logging::LogMsg;
    use std::sync::mpsc::sync_channel;

    struct MockTx(Arc<Mutex<Vec<Vec<u8>>>>);
    impl LinkTx for MockTx {
        fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
            self.0.lock().unwrap().push(frame.to_vec());
            Ok(())
        }
    }

    const CFG: &str = "interfaces:\n  inside:\n    device: a\n    addresses: [192.0.2.1/24]\n  outside:\n    device: b\n    addresses: [198.51.100.1/24]\n";
    const DEV_MAC: Mac = [0x02, 0, 0, 0, 0xaa, 0x01];
    const HOST_MAC: Mac = [0x02, 0, 0, 0, 0, 0x10];

    fn arp_for_gateway(dst_mac: Mac) -> Vec<u8> {
        let mut f =
            crate::wire::build::arp_request(HOST_MAC, "192.0.2.10".parse().unwrap(), "192.0.2.1".parse().unwrap());
        f[0..6].copy_from_slice(&dst_mac);
        f
    }

    #[test]
    fn worker_answers_with_the_device_mac_reloads_serves_sessions_and_stops() {
        let cfg = crate::config::from_str(CFG, "t.yaml").unwrap();
        let sent: Vec<Arc<Mutex<Vec<Vec<u8>>>>> = (0..2).map(|_| Arc::default()).collect();
        let txs: Vec<Box<dyn LinkTx>> = sent.iter().map(|s| Box::new(MockTx(s.clone())) as Box<dyn LinkTx>).collect();
        let (log_tx, log_rx) = sync_channel::<LogMsg>(64);
        let published = Arc::new(Published::default());
        let mut engine = Engine::new(cfg.clone(), 1);
        engine.set_resolve_neighbors(true);
        let mut w = Worker::new(
            engine,
            LiveSink::new(txs, log_tx),
            Clock::new(),
            vec![DEV_MAC, [0x02, 0, 0, 0, 0xaa, 0x02]],
            published.clone(),
        );
        let (tx, rx) = sync_channel::<Msg>(8);
        let h = std::thread::spawn(move || {
            w.run(rx, Vec::new());
            w
        });

        let mut b = Batch::with_capacity(256);
        b.push(&arp_for_gateway([0xff; 6])); // broadcast: processed
        let mut other = arp_for_gateway([0xff; 6]);
        other[0..6].copy_from_slice(&[0x02, 9, 9, 9, 9, 9]); // unicast to another host: ignored
        b.push(&other);
        tx.send(Msg::Frames(0, b)).unwrap();
        let json = published.request_sessions(Duration::from_secs(2)).expect("the worker answers");
        let s: crate::live::snapshot::Sessions = serde_json::from_str(&json).unwrap();
        assert!(s.connections.is_empty() && s.ts > 1e9, "engine time is wall-clock based: {}", s.ts);
        tx.send(Msg::Reload(Box::new(cfg))).unwrap();
        tx.send(Msg::Stop).unwrap();
        let w = h.join().unwrap();

        let replies = sent[0].lock().unwrap().clone();
        assert_eq!(replies.len(), 1, "one ARP reply, for the broadcast request only");
        assert_eq!(&replies[0][0..6], &HOST_MAC);
        assert_eq!(&replies[0][6..12], &DEV_MAC, "answers with the device's MAC");
        assert_eq!(w.sink.counters[0].ignored, 1);
        assert_eq!(w.sink.counters[0].frames, 1);
        let m = published.metrics.lock().unwrap().clone();
        assert_eq!(m.reloads, 1);
        assert_eq!(m.stats.frames_in, 1);
        drop(w);
        let logged: Vec<String> = log_rx
            .try_iter()
            .filter_map(|m| match m {
                LogMsg::Info(s) => Some(s),
                _ => None,
            })
            .collect();
        assert!(logged.iter().any(|l| l.starts_with("configuration reloaded")), "{logged:?}");
    }

    #[test]
    fn full_log_queue_counts_events_instead_of_waiting() {
        let (log_tx, _log_rx) = sync_channel::<LogMsg>(1);
        let mut sink = LiveSink::new(Vec::new(), log_tx);
        let ev = || {
            Event::new(
                Nanos(1),
                None,
                EventKind::Drop {
                    reason: crate::event::DropReason::Bounce,
                    rule: None,
                    session: None,
                    src: None,
                    dst: None,
                    detail: String::new(),
                },
            )
        };
        sink.event(ev());
        sink.event(ev());
        sink.event(ev());
        assert_eq!(sink.events_dropped, 2);
        assert_eq!(sink.events[ev().kind.index()], 3);
        assert_eq!(sink.blocked[crate::event::DropReason::Bounce as usize], 3);
    }
}
