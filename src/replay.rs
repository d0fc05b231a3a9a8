//! `ftpgate replay`: a capture through the engine.
//!
//! The capture's timestamps are the clock, so a replay is a deterministic
//! function of (capture, configuration, seed). Every input frame ends in
//! exactly one of: forwarded, dropped (with a reason) or consumed by the
//! gateway; the summary's last line states that balance.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::time::{Duration, Instant};

use crate::capture::{strip_os_error, CaptureError, CaptureInterface, CaptureReader, FrameMeta, PcapNgOut};
use crate::config::{self, Config, ConfigError, IfIndex};
use crate::conntrack::TupleHasher;
use crate::engine::{BatchFrame, Engine, Preparsed, Sink, Verdict, BATCH};
use crate::event::{DropReason, Endpoint, Event, EventKind};
use crate::time::Nanos;

/// The seed used when none is given: replays are reproducible by default.
/// (`run` draws a random one, as a live gateway should.)
pub const DEFAULT_SEED: u64 = 1;

#[derive(Clone, Debug)]
pub struct Options {
    pub input: PathBuf,
    /// None: the built-in default configuration.
    pub config: Option<PathBuf>,
    pub out: Option<PathBuf>,
    pub events: Option<PathBuf>,
    pub seed: u64,
    /// No progress line even on a terminal.
    pub quiet: bool,
    /// Simulate this many workers (None: the configuration's
    /// `datapath.workers`, else 1).
    pub workers: Option<u16>,
}

impl Options {
    pub fn new(input: impl Into<PathBuf>) -> Options {
        Options {
            input: input.into(),
            config: None,
            out: None,
            events: None,
            seed: DEFAULT_SEED,
            quiet: false,
            workers: None,
        }
    }
}

#[derive(Debug)]
pub enum ReplayError {
    /// The configuration is invalid (exit 1).
    Config(Vec<ConfigError>),
    /// The capture is unreadable or corrupt (exit 2).
    Capture(CaptureError),
    /// A file could not be read or written (exit 2).
    Io { action: &'static str, path: PathBuf, cause: String },
}

impl ReplayError {
    /// The process exit code the contract assigns.
    pub fn exit_code(&self) -> u8 {
        match self {
            ReplayError::Config(_) => 1,
            ReplayError::Capture(_) | ReplayError::Io { .. } => 2,
        }
    }

    fn io(action: &'static str, path: &Path, e: &io::Error) -> ReplayError {
        ReplayError::Io { action, path: path.to_path_buf(), cause: strip_os_error(e) }
    }
}

impl fmt::Display for ReplayError {
    /// One line per problem; no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplayError::Config(errs) => {
                for (i, e) in errs.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            ReplayError::Capture(e) => write!(f, "{e}"),
            ReplayError::Io { action, path, cause } => write!(f, "cannot {action} {}: {cause}", path.display()),
        }
    }
}

impl std::error::Error for ReplayError {}

impl From<CaptureError> for ReplayError {
    fn from(e: CaptureError) -> Self {
        ReplayError::Capture(e)
    }
}

/// Per gateway interface counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InterfaceCounts {
    pub name: String,
    pub device: Option<String>,
    /// Input frames that arrived here.
    pub frames_in: u64,
    /// Input frames forwarded out of here.
    pub forwarded: u64,
    /// Frames the gateway itself sent here.
    pub generated: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    pub input: PathBuf,
    /// "pcap" or "pcapng".
    pub format: &'static str,
    /// The configuration file, or "built-in default".
    pub config: String,
    pub seed: u64,
    pub interfaces: Vec<InterfaceCounts>,
    /// Input frames no interface could be assigned to.
    pub no_interface: u64,
    pub frames_in: u64,
    pub frames_out: u64,
    pub dropped: u64,
    pub consumed: u64,
    pub generated: u64,
    /// Non-zero counts, in `DropReason::ALL` order.
    pub drops: Vec<(DropReason, u64)>,
    /// Frames the capture layer could not normalise, by reason.
    pub unsupported: BTreeMap<String, u64>,
    /// Events by their `event` name.
    pub events: BTreeMap<&'static str, u64>,
    /// E.g. a truncated last record.
    pub warnings: Vec<String>,
}

impl Summary {
    /// The contract's closing line.
    pub fn frames_line(&self) -> String {
        format!(
            "frames: {} in, {} out, {} dropped, {} gateway-generated",
            self.frames_in, self.frames_out, self.dropped, self.generated
        )
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "input: {} ({})", self.input.display(), self.format)?;
        writeln!(f, "config: {}", self.config)?;
        writeln!(f, "seed: {}", self.seed)?;
        writeln!(f, "interfaces:")?;
        for i in &self.interfaces {
            let dev = i.device.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
            writeln!(
                f,
                "  {}{dev}: {} in, {} forwarded out, {} gateway-generated out",
                i.name, i.frames_in, i.forwarded, i.generated
            )?;
        }
        if self.no_interface > 0 {
            writeln!(f, "  (no interface): {} in", self.no_interface)?;
        }
        writeln!(f, "drops:{}", if self.drops.is_empty() { " none" } else { "" })?;
        for (reason, n) in &self.drops {
            writeln!(f, "  {}: {n}", reason.as_str())?;
            if *reason == DropReason::Unsupported {
                for (why, n) in &self.unsupported {
                    writeln!(f, "    {why}: {n}")?;
                }
            }
        }
        writeln!(f, "events:{}", if self.events.is_empty() { " none" } else { "" })?;
        for (kind, n) in &self.events {
            writeln!(f, "  {kind}: {n}")?;
        }
        writeln!(f, "consumed by the gateway: {}", self.consumed)?;
        write!(f, "{}", self.frames_line())
    }
}

/// Replay `opts.input` with the configuration `opts` names.
///
/// The capture is opened first, so an unreadable input is reported before
/// any configuration work.
pub fn run(opts: &Options) -> Result<Summary, ReplayError> {
    let reader = CaptureReader::open(&opts.input)?;
    let (config, label, workers) = match &opts.config {
        Some(path) => {
            // An unreadable file is an OS error (exit 2), not an invalid configuration.
            File::open(path).map_err(|e| ReplayError::io("read config", path, &e))?;
            let (c, ops) = config::load_with_operations(path).map_err(ReplayError::Config)?;
            (c, path.display().to_string(), ops.datapath.workers)
        }
        None => (config::builtin_default(), "built-in default".to_string(), 1),
    };
    run_with(reader, engines(config, opts.seed, opts.workers.unwrap_or(workers)), &label, opts)
}

/// Connections a replay's table is first sized for; it grows past this.
const REPLAY_TABLE: usize = 4096;

/// The engines of a gateway with `workers` workers, as `run` builds them
/// (but with tables that start small, see `Engine::presize_table`).
pub fn engines(config: Config, seed: u64, workers: u16) -> Vec<Engine> {
    let mut engines = Engine::workers(&config, seed, workers);
    for e in &mut engines {
        e.presize_table(REPLAY_TABLE);
    }
    engines
}

/// Replay an opened capture through built engines (one per simulated
/// worker, see `engines`): the part of `run` that tests and benchmarks drive
/// directly. `opts.input`/`config` only label the summary; `opts.seed` and
/// `opts.workers` are not used (the engines have theirs).
pub fn run_with<R: Read + Send>(
    reader: CaptureReader<R>,
    engines: Vec<Engine>,
    config_label: &str,
    opts: &Options,
) -> Result<Summary, ReplayError> {
    let format = reader.format_name();
    let arrival = Arrival::new(engines[0].config());
    // One engine takes bursts of frames the reading thread has already
    // parsed and hashed (with its hasher); several take frames one at a time.
    let hasher = (engines.len() == 1).then(|| engines[0].hasher());
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        let (back_tx, back_rx) = std::sync::mpsc::sync_channel(8);
        let reading = std::thread::Builder::new()
            .name("ftpgate-read".into())
            .spawn_scoped(s, move || read_ahead(reader, arrival, hasher, tx, back_rx))
            .map_err(|e| ReplayError::Io {
                action: "start a thread to read",
                path: opts.input.clone(),
                cause: e.to_string(),
            })?;
        let feed =
            Feed { rx, back: back_tx, cur: Chunk::default(), pos: 0, progress: (0, None), frames: 0, warning: None };
        let r = replay_frames(feed, engines, format, config_label, opts);
        if reading.join().is_err() {
            let cause = "the reading thread stopped unexpectedly".to_string();
            return Err(ReplayError::Io { action: "read", path: opts.input.clone(), cause });
        }
        r
    })
}

/// Frames per chunk handed from the reading thread to the engine's.
const CHUNK: usize = 256;

/// Frames read ahead, with what the reader knew after reading them.
#[derive(Default)]
struct Chunk {
    metas: Vec<Option<FrameMeta>>,
    /// Per frame: the interface it arrived on, see `Arrival`.
    arrivals: Vec<Arrived>,
    /// Per frame: the frame parsed.
    pre: Vec<Preparsed>,
    /// The frames end to end; frame i is `data[ends[i - 1]..ends[i]]`. One
    /// buffer read front to back (chunks travel back and forth and are
    /// reused) stays in cache better than a buffer per frame: with those,
    /// the engine's thread met each frame cold.
    data: Vec<u8>,
    ends: Vec<usize>,
    progress: (u64, Option<u64>),
    frames: u64,
    /// After the last frame: Ok(warning about a truncated end) or the error
    /// that stopped reading.
    end: Option<Result<Option<String>, CaptureError>>,
}

/// The reading thread: decode the capture into chunks, in order, until its
/// end or an error, or until the replay stops listening. Decoding, file
/// reading and parsing each frame are about a third of a replay's work; on
/// their own thread they overlap the engine's.
fn read_ahead<R: Read>(
    mut reader: CaptureReader<R>,
    mut arrival: Arrival,
    hasher: Option<TupleHasher>,
    tx: SyncSender<Chunk>,
    back: Receiver<Chunk>,
) {
    let mut frame = Vec::with_capacity(64 * 1024);
    loop {
        let mut c = back.try_recv().unwrap_or_default();
        c.metas.clear();
        c.arrivals.clear();
        c.data.clear();
        c.ends.clear();
        let mut end = None;
        while c.metas.len() < CHUNK {
            let i = c.metas.len();
            if c.pre.len() <= i {
                c.pre.push(Preparsed::EMPTY);
            }
            match reader.next_frame(&mut frame) {
                Ok(Some(m)) => {
                    c.pre[i].parse(&frame, hasher.as_ref());
                    c.arrivals.push(arrival.of(reader.interfaces(), &m, &c.pre[i]));
                    c.metas.push(Some(m));
                    c.data.extend_from_slice(&frame);
                    c.ends.push(c.data.len());
                }
                Ok(None) => {
                    end = Some(Ok(reader.warning().map(str::to_string)));
                    break;
                }
                Err(e) => {
                    end = Some(Err(e));
                    break;
                }
            }
        }
        (c.progress, c.frames) = (reader.progress(), reader.frames());
        let last = end.is_some();
        c.end = end;
        if tx.send(c).is_err() || last {
            return;
        }
    }
}

/// The engine thread's side of `read_ahead`: frames one at a time, as
/// `CaptureReader::next_frame` gives them.
struct Feed {
    rx: Receiver<Chunk>,
    back: SyncSender<Chunk>,
    cur: Chunk,
    pos: usize,
    progress: (u64, Option<u64>),
    frames: u64,
    warning: Option<String>,
}

impl Feed {
    /// The next frame into `frame` and `pre`.
    fn next_frame(
        &mut self,
        frame: &mut Vec<u8>,
        pre: &mut Preparsed,
    ) -> Result<Option<(FrameMeta, Arrived)>, CaptureError> {
        loop {
            if let Some(meta) = self.cur.metas.get_mut(self.pos).and_then(Option::take) {
                let start = if self.pos == 0 { 0 } else { self.cur.ends[self.pos - 1] };
                frame.clear();
                frame.extend_from_slice(&self.cur.data[start..self.cur.ends[self.pos]]);
                *pre = self.cur.pre[self.pos];
                let arrived = self.cur.arrivals[self.pos];
                self.pos += 1;
                return Ok(Some((meta, arrived)));
            }
            if let Some(end) = self.cur.end.take() {
                self.warning = end?;
                return Ok(None);
            }
            // A reading thread that died says so when joined.
            let Ok(next) = self.rx.recv() else { return Ok(None) };
            let used = std::mem::replace(&mut self.cur, next);
            let _ = self.back.try_send(used);
            self.pos = 0;
            (self.progress, self.frames) = (self.cur.progress, self.cur.frames);
        }
    }
}

fn replay_frames(
    mut reader: Feed,
    mut engines: Vec<Engine>,
    format: &'static str,
    config_label: &str,
    opts: &Options,
) -> Result<Summary, ReplayError> {
    assert!(!engines.is_empty(), "replay needs at least one engine");
    // Which worker a frame goes to, exactly as the kernel's fanout program
    // would decide it live.
    let dispatch = crate::dispatch::Dispatch::new(engines[0].config(), engines.len() as u16);
    let config: &Config = engines[0].config();
    let mut summary = Summary {
        input: opts.input.clone(),
        format,
        config: config_label.to_string(),
        seed: opts.seed,
        interfaces: config
            .interfaces
            .iter()
            .map(|i| InterfaceCounts { name: i.name.clone(), device: i.device.clone(), ..Default::default() })
            .collect(),
        ..Default::default()
    };
    let names: Vec<&str> = config.interfaces.iter().map(|i| i.device.as_deref().unwrap_or(&i.name)).collect();
    let n_ifaces = names.len();

    let out = match &opts.out {
        Some(p) => Some(PcapNgOut::create(p, &names).map_err(|e| ReplayError::io("write", p, &e))?),
        None => None,
    };
    let events = match &opts.events {
        Some(p) => Some(
            File::create(p)
                .map(|f| BufWriter::with_capacity(256 * 1024, f))
                .map_err(|e| ReplayError::io("write", p, &e))?,
        ),
        None => None,
    };
    let mut sink = ReplaySink {
        out,
        out_path: opts.out.clone().unwrap_or_default(),
        events,
        events_path: opts.events.clone().unwrap_or_default(),
        now: Nanos::ZERO,
        generated: vec![0; n_ifaces],
        event_counts: [0; EventKind::NAMES.len()],
        error: None,
        hold: false,
        current: 0,
        held: Vec::new(),
    };

    let mut drops = [0u64; DropReason::ALL.len()];
    let mut clock = Clock::default();
    let mut progress = Progress::new(!opts.quiet && io::stderr().is_terminal());

    // One worker: frames go to the engine in bursts (`process_batch`, which
    // overlaps the table's cache misses); with several, one at a time to
    // the worker the dispatch rule names.
    let bursts = engines.len() == 1;
    let mut slots: Vec<Slot> = (0..BATCH)
        .map(|_| Slot {
            frame: Vec::with_capacity(64 * 1024),
            pre: Preparsed::EMPTY,
            packet: 0,
            now: Nanos::ZERO,
            ingress: 0,
        })
        .collect();
    let mut n = 0;

    // Each frame is read into the next free slot; only a frame for the
    // burst takes it (n += 1), any other is done with before the next read.
    while let Some((meta, Arrived { named, ingress })) = {
        let Slot { frame, pre, .. } = &mut slots[n];
        reader.next_frame(frame, pre)?
    } {
        let (now, tick) = clock.advance(meta.ts);
        if tick {
            // What arrived before the tick is processed before it.
            burst(&mut engines[0], &mut slots, n, &mut sink, &mut summary, &mut drops);
            n = 0;
            sink.now = now;
            for engine in engines.iter_mut() {
                engine.tick(now, &mut sink);
            }
        }
        sink.now = now;
        summary.frames_in += 1;

        if let (Some(ingress), true) = (ingress, bursts) {
            summary.interfaces[ingress].frames_in += 1;
            let slot = &mut slots[n];
            (slot.packet, slot.now, slot.ingress) = (meta.index, now, ingress);
            n += 1;
            if n == BATCH {
                burst(&mut engines[0], &mut slots, n, &mut sink, &mut summary, &mut drops);
                n = 0;
            }
        } else if let Some(ingress) = ingress {
            summary.interfaces[ingress].frames_in += 1;
            let frame = &mut slots[n].frame;
            let w = dispatch.worker(ingress, frame) as usize;
            let v = engines[w].process(now, meta.index, ingress, frame, &mut sink);
            account(v, frame, &mut sink, &mut summary, &mut drops);
        } else {
            // Events keep input order: what waits in the burst goes first.
            burst(&mut engines[0], &mut slots, n, &mut sink, &mut summary, &mut drops);
            n = 0;
            sink.now = now;
            if let Some(why) = meta.unsupported {
                match named {
                    Some(i) => summary.interfaces[i].frames_in += 1,
                    None => summary.no_interface += 1,
                }
                summary.dropped += 1;
                drops[drop_index(DropReason::Unsupported)] += 1;
                sink.event(Event::new(
                    now,
                    Some(meta.index),
                    EventKind::Drop {
                        reason: DropReason::Unsupported,
                        rule: None,
                        session: None,
                        src: None,
                        dst: None,
                        detail: why.clone(),
                    },
                ));
                count_reason(&mut summary.unsupported, why);
            } else {
                summary.no_interface += 1;
                summary.dropped += 1;
                drops[drop_index(DropReason::NoRoute)] += 1;
                let (src, dst) = endpoints(&slots[n].frame);
                sink.event(Event::new(
                    now,
                    Some(meta.index),
                    EventKind::Drop {
                        reason: DropReason::NoRoute,
                        rule: None,
                        session: None,
                        src,
                        dst,
                        detail: "no interface: the capture does not name one and no interface's networks or routes hold its source"
                            .to_string(),
                    },
                ));
            }
        }
        if let Some(e) = sink.error.take() {
            progress.clear();
            return Err(e);
        }
        progress.update(reader.frames, reader.progress);
    }
    burst(&mut engines[0], &mut slots, n, &mut sink, &mut summary, &mut drops);
    if let Some(e) = sink.error.take() {
        progress.clear();
        return Err(e);
    }
    progress.clear();

    summary.warnings.extend(reader.warning.take());
    let ReplaySink { out, out_path, events, events_path, generated, event_counts, .. } = sink;
    if let Some(out) = out {
        out.finish().map_err(|e| ReplayError::io("write", &out_path, &e))?;
    }
    if let Some(mut ev) = events {
        ev.flush().map_err(|e| ReplayError::io("write", &events_path, &e))?;
    }
    for (c, g) in summary.interfaces.iter_mut().zip(&generated) {
        c.generated = *g;
    }
    summary.generated = generated.iter().sum();
    summary.drops = DropReason::ALL.iter().zip(drops).filter(|(_, n)| *n > 0).map(|(r, n)| (*r, n)).collect();
    summary.events = EventKind::NAMES.iter().zip(event_counts).filter(|(_, n)| *n > 0).map(|(k, n)| (*k, n)).collect();
    debug_assert_eq!(
        summary.frames_in,
        summary.frames_out + summary.dropped + summary.consumed,
        "every frame has one fate"
    );
    Ok(summary)
}

/// A pcapng interface name equal to a gateway interface's device, or failing
/// that its configuration name.
fn match_interface(config: &Config, name: &str) -> Option<IfIndex> {
    let ifs = &config.interfaces;
    ifs.iter().position(|i| i.device.as_deref() == Some(name)).or_else(|| ifs.iter().position(|i| i.name == name))
}

/// Which gateway interface a frame arrived on. Decided on the reading
/// thread, which has time to spare: the engine's thread only processes.
struct Arrival {
    config: Config,
    routes: crate::route::Routes,
    /// Capture interface → gateway interface, decided once per capture interface.
    iface_map: Vec<Option<IfIndex>>,
    cache: IngressCache,
}

/// `named`: the gateway interface the capture names; `ingress`: the one the
/// frame goes in on (None: unsupported, or no interface claims it).
#[derive(Clone, Copy, Debug, Default)]
struct Arrived {
    named: Option<IfIndex>,
    ingress: Option<IfIndex>,
}

impl Arrival {
    fn new(config: &Config) -> Arrival {
        Arrival {
            config: config.clone(),
            routes: crate::route::Routes::new(config),
            iface_map: Vec::new(),
            cache: IngressCache::default(),
        }
    }

    fn of(&mut self, ifaces: &[CaptureInterface], meta: &FrameMeta, pre: &Preparsed) -> Arrived {
        while self.iface_map.len() < ifaces.len() {
            let ci = &ifaces[self.iface_map.len()];
            self.iface_map.push(ci.name.as_deref().and_then(|n| match_interface(&self.config, n)));
        }
        let named = meta.iface.and_then(|i| self.iface_map.get(i).copied().flatten());
        let ingress = if meta.unsupported.is_some() {
            None
        } else {
            let n = self.config.interfaces.len();
            named.or_else(|| self.cache.get(&self.routes, pre).filter(|&i| i < n))
        };
        Arrived { named, ingress }
    }
}

/// `Routes::ingress_for_source` remembered per source address: a capture without
/// interface names is split by the route lookup, which showed up at 7% of
/// a replay's time, while a capture has few distinct sources per second.
#[derive(Default)]
struct IngressCache {
    known: std::collections::HashMap<std::net::IpAddr, Option<IfIndex>, foldhash::fast::FixedState>,
}

impl IngressCache {
    /// Bound on remembered sources; past it the cache starts again.
    const MAX: usize = 1 << 16;

    /// Which interface holds the frame's source (an ARP packet's sender).
    fn get(&mut self, routes: &crate::route::Routes, pre: &Preparsed) -> Option<IfIndex> {
        let src = pre.source()?;
        if let Some(&i) = self.known.get(&src) {
            return i;
        }
        if self.known.len() >= Self::MAX {
            self.known.clear();
        }
        let i = routes.ingress_for_source(src);
        self.known.insert(src, i);
        i
    }
}

/// A frame waiting for its burst.
struct Slot {
    frame: Vec<u8>,
    pre: Preparsed,
    packet: u64,
    now: Nanos,
    ingress: IfIndex,
}

/// Process the waiting frames together and write the results in input order.
/// `slots` holds BATCH places (so the burst array needs no allocation); the
/// first `n` wait. The slot after them, where the frame just read is (if
/// any), becomes the first: the next burst's first place.
fn burst(
    engine: &mut Engine,
    slots: &mut [Slot],
    n: usize,
    sink: &mut ReplaySink,
    summary: &mut Summary,
    drops: &mut [u64],
) {
    if n == 0 {
        return;
    }
    let mut nows = [Nanos::ZERO; BATCH];
    for (t, s) in nows.iter_mut().zip(slots.iter()) {
        *t = s.now;
    }
    let mut it = slots.iter_mut();
    let mut bfs: [BatchFrame<'_>; BATCH] = std::array::from_fn(|_| {
        let Slot { frame, pre, packet, now, ingress } = it.next().expect("BATCH slots");
        let mut bf = BatchFrame::new(*ingress, *packet, frame);
        bf.at = Some(*now);
        bf.pre = Some(pre);
        bf
    });
    sink.hold = true;
    sink.held.clear();
    engine.process_batch(nows[n - 1], &mut bfs[..n], sink);
    sink.hold = false;
    let held = std::mem::take(&mut sink.held);
    let mut h = held.iter().peekable();
    for (i, bf) in bfs[..n].iter().enumerate() {
        sink.now = nows[i];
        while let Some((_, iface, f)) = h.next_if(|(j, _, _)| *j == i) {
            sink.write(*iface, f);
        }
        account(bf.verdict, bf.frame, sink, summary, drops);
    }
    sink.held = held;
    if n < slots.len() {
        slots.swap(0, n);
    }
}

fn account(v: Verdict, frame: &[u8], sink: &mut ReplaySink, summary: &mut Summary, drops: &mut [u64]) {
    match v {
        Verdict::Forward(egress) => {
            summary.frames_out += 1;
            if let Some(c) = summary.interfaces.get_mut(egress) {
                c.forwarded += 1;
            }
            sink.write(egress, frame);
        }
        Verdict::Drop(reason) => {
            summary.dropped += 1;
            drops[drop_index(reason)] += 1;
        }
        Verdict::Consumed => summary.consumed += 1,
    }
}

fn drop_index(r: DropReason) -> usize {
    DropReason::ALL.iter().position(|&x| x == r).unwrap_or(DropReason::ALL.len() - 1)
}

/// Distinct reasons are bounded by the link-layer fields they quote, but a
/// hostile capture should not grow the summary without limit.
fn count_reason(map: &mut BTreeMap<String, u64>, why: String) {
    const MAX_REASONS: usize = 32;
    if let Some(n) = map.get_mut(&why) {
        *n += 1;
    } else if map.len() < MAX_REASONS {
        map.insert(why, 1);
    } else {
        *map.entry("(other reasons)".to_string()).or_insert(0) += 1;
    }
}

/// Source and destination of an Ethernet frame, for a drop event. Ports only
/// exist for TCP and UDP; other protocols get none rather than a made-up 0.
fn endpoints(frame: &[u8]) -> (Option<Endpoint>, Option<Endpoint>) {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let Ok(p) = SlicedPacket::from_ethernet(frame) else { return (None, None) };
    let (s, d): (IpAddr, IpAddr) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => (v4.header().source_addr().into(), v4.header().destination_addr().into()),
        Some(NetSlice::Ipv6(v6)) => (v6.header().source_addr().into(), v6.header().destination_addr().into()),
        _ => return (None, None),
    };
    let (sp, dp) = match &p.transport {
        Some(TransportSlice::Tcp(t)) => (t.source_port(), t.destination_port()),
        Some(TransportSlice::Udp(u)) => (u.source_port(), u.destination_port()),
        _ => return (None, None),
    };
    (Some(Endpoint::from((s, sp))), Some(Endpoint::from((d, dp))))
}

/// The replay clock: capture time, never moving backwards, with a timer tick
/// whenever it has advanced a second since the last one.
#[derive(Debug, Default)]
struct Clock {
    now: Option<Nanos>,
    last_tick: Nanos,
}

impl Clock {
    const TICK: u64 = 1_000_000_000;

    /// (the engine's `now` for a frame stamped `ts`, whether to tick first)
    fn advance(&mut self, ts: Nanos) -> (Nanos, bool) {
        match self.now {
            None => {
                self.now = Some(ts);
                self.last_tick = ts;
                (ts, false)
            }
            Some(prev) => {
                let now = prev.max(ts);
                self.now = Some(now);
                let tick = now.0 - self.last_tick.0 >= Self::TICK;
                if tick {
                    self.last_tick = now;
                }
                (now, tick)
            }
        }
    }
}

struct ReplaySink {
    out: Option<PcapNgOut<BufWriter<File>>>,
    out_path: PathBuf,
    events: Option<BufWriter<File>>,
    events_path: PathBuf,
    now: Nanos,
    generated: Vec<u64>,
    event_counts: [u64; EventKind::NAMES.len()],
    /// The first write failure; `Sink` methods cannot return it.
    error: Option<ReplayError>,
    /// During a burst: frames the gateway originates wait here, under the
    /// burst position of the frame that caused them, so the output keeps
    /// input order (they go before that frame's own verdict, as without bursts).
    hold: bool,
    current: usize,
    held: Vec<(usize, IfIndex, Vec<u8>)>,
}

impl ReplaySink {
    fn write(&mut self, iface: IfIndex, frame: &[u8]) {
        debug_assert!(iface < self.generated.len(), "engine chose interface {iface} of {}", self.generated.len());
        if self.error.is_some() {
            return;
        }
        if let Some(out) = &mut self.out {
            if let Err(e) = out.write(iface, self.now, frame) {
                self.error = Some(ReplayError::io("write", &self.out_path, &e));
            }
        }
    }
}

impl Sink for ReplaySink {
    fn transmit(&mut self, iface: IfIndex, frame: &[u8]) {
        if let Some(g) = self.generated.get_mut(iface) {
            *g += 1;
        }
        if self.hold {
            self.held.push((self.current, iface, frame.to_vec()));
        } else {
            self.write(iface, frame);
        }
    }

    fn frame_start(&mut self, i: usize) {
        self.current = i;
    }

    fn wants_lines(&self) -> bool {
        self.events.is_some()
    }

    fn event(&mut self, ev: Event) {
        self.event_counts[ev.kind.index()] += 1;
        if self.error.is_some() {
            return;
        }
        if let Some(w) = &mut self.events {
            let line = ev.to_json();
            if let Err(e) = w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\n")) {
                self.error = Some(ReplayError::io("write", &self.events_path, &e));
            }
        }
    }
}

/// A one-line progress report on a terminal, at most four times a second.
struct Progress {
    enabled: bool,
    shown: bool,
    last: Instant,
    calls: u32,
}

impl Progress {
    fn new(enabled: bool) -> Progress {
        Progress { enabled, shown: false, last: Instant::now(), calls: 0 }
    }

    /// `frames` read so far, `(bytes read, file size)`.
    fn update(&mut self, frames: u64, (done, total): (u64, Option<u64>)) {
        if !self.enabled {
            return;
        }
        // Reading the clock for every frame would cost more than the frame.
        self.calls = self.calls.wrapping_add(1);
        if !self.calls.is_multiple_of(256) || self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        let pct =
            total.filter(|&t| t > 0).map(|t| format!(", {:.0}%", done as f64 * 100.0 / t as f64)).unwrap_or_default();
        let mut err = io::stderr().lock();
        let _ = write!(err, "\rreplay: {frames} frames{pct}\x1b[K");
        let _ = err.flush();
        self.shown = true;
    }

    fn clear(&mut self) {
        if self.shown {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::io::Cursor;

    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
    use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
    use pcap_file::DataLink;

    use super::*;
    use crate::config::*;

    /// A configuration built in code, so these tests do not depend on the YAML loader.
    pub(crate) fn two_interfaces() -> Config {
        let iface = |name: &str, device: Option<&str>, addr: &str| Interface {
            name: name.into(),
            device: device.map(str::to_string),
            addresses: vec![addr.parse().unwrap()],
            gateway: None,
            routes: vec![],
            mac: None,
            mtu: 1500,
        };
        Config {
            interfaces: vec![
                iface("inside", Some("veth-gw-in"), "192.0.2.1/24"),
                iface("outside", None, "198.51.100.1/24"),
            ],
            nat: Nat { masquerade: vec![], forward: vec![], ports: PortMode::Random },
            ftp: Ftp::default(),
            policy: Policy { default: Action::Allow, rules: vec![], pickup: false },
            limits: Limits { max_connections: 1000, max_connections_per_source: 100 },
            timeouts: Timeouts::default(),
        }
    }

    fn tcp_frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1000, 65535);
        let mut v = Vec::new();
        b.write(&mut v, b"USER x\r\n").unwrap();
        v
    }

    fn pcap_bytes(records: &[(u32, &[u8])]) -> Vec<u8> {
        let mut f = vec![0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 1, 0, 0, 0];
        for (sec, d) in records {
            for v in [*sec, 0, d.len() as u32, d.len() as u32] {
                f.extend_from_slice(&v.to_le_bytes());
            }
            f.extend_from_slice(d);
        }
        f
    }

    fn replay(bytes: Vec<u8>, opts: &Options) -> Result<Summary, ReplayError> {
        let reader = CaptureReader::new(&opts.input, Cursor::new(bytes), None)?;
        run_with(reader, vec![Engine::new(two_interfaces(), opts.seed)], "test config", opts)
    }

    fn quiet(input: &str) -> Options {
        Options { quiet: true, ..Options::new(input) }
    }

    #[test]
    fn unrouted_frames_are_counted_and_logged_as_no_route() {
        let dir = tempfile::tempdir().unwrap();
        let f = tcp_frame([203, 0, 113, 5], [192, 0, 2, 9], 40000, 21);
        let bytes = pcap_bytes(&[(100, &f), (101, &f), (99, &f)]);
        let opts = Options {
            events: Some(dir.path().join("ev.jsonl")),
            out: Some(dir.path().join("out.pcapng")),
            ..quiet("in.pcap")
        };
        let s = replay(bytes, &opts).unwrap();
        // The engine under test may route these; the accounting must balance either way.
        assert_eq!(s.frames_in, 3);
        assert_eq!(s.frames_in, s.frames_out + s.dropped + s.consumed);
        let ingress: u64 = s.interfaces.iter().map(|i| i.frames_in).sum();
        assert_eq!(ingress + s.no_interface, 3);
        let text = std::fs::read_to_string(dir.path().join("ev.jsonl")).unwrap();
        let no_route: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|v: &serde_json::Value| v["reason"] == "no_route")
            .collect();
        assert_eq!(no_route.len() as u64, s.no_interface);
        for (i, v) in no_route.iter().enumerate() {
            assert_eq!(v["event"], "drop");
            assert_eq!(v["src"], "203.0.113.5:40000");
            assert_eq!(v["dst"], "192.0.2.9:21");
            assert!(v["packet"].as_u64().unwrap() > i as u64);
            assert!(v["ts"].as_f64().unwrap() >= 100.0, "the clock never goes back: {v}");
        }
        let drop_events = text.lines().filter(|l| l.contains("\"event\":\"drop\"")).count() as u64;
        assert_eq!(s.events.get("drop").copied().unwrap_or(0), drop_events);
    }

    #[test]
    fn pcapng_interface_names_choose_the_ingress() {
        let f = tcp_frame([192, 0, 2, 7], [198, 51, 100, 7], 40000, 21);
        let mut w = PcapNgWriter::new(Vec::new()).unwrap();
        for name in ["veth-gw-in", "outside", "wlan9"] {
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options: vec![InterfaceDescriptionOption::IfName(Cow::Borrowed(name))],
            })
            .unwrap();
        }
        w.write_pcapng_block(InterfaceDescriptionBlock {
            linktype: DataLink::Unknown(147),
            snaplen: 0,
            options: vec![],
        })
        .unwrap();
        for (iface, n) in [(0u32, 2), (1, 3), (3, 1)] {
            for _ in 0..n {
                let epb = EnhancedPacketBlock {
                    interface_id: iface,
                    timestamp: Duration::from_secs(5),
                    original_len: f.len() as u32,
                    data: Cow::Borrowed(&f),
                    options: vec![],
                };
                w.write_pcapng_block(epb).unwrap();
            }
        }
        let s = replay(w.into_inner(), &quiet("in.pcapng")).unwrap();
        assert_eq!(s.format, "pcapng");
        assert_eq!(s.frames_in, 6);
        assert_eq!(s.interfaces[0].frames_in, 2, "matched by device");
        assert_eq!(s.interfaces[1].frames_in, 3, "matched by name");
        // The link type 147 frame is reported, not lost.
        assert_eq!(s.no_interface, 1);
        assert_eq!(s.unsupported.get("link type 147 is not supported"), Some(&1));
        assert!(s.drops.iter().any(|&(r, n)| r == DropReason::Unsupported && n >= 1));
        assert_eq!(s.frames_in, s.frames_out + s.dropped + s.consumed);
    }

    #[test]
    fn output_has_one_block_per_gateway_interface() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o.pcapng");
        let opts = Options { out: Some(out.clone()), ..quiet("in.pcap") };
        let s = replay(pcap_bytes(&[]), &opts).unwrap();
        assert_eq!(s.frames_line(), "frames: 0 in, 0 out, 0 dropped, 0 gateway-generated");
        let mut r = PcapNgReader::new(File::open(&out).unwrap()).unwrap();
        while let Some(b) = r.next_block() {
            assert!(!matches!(b.unwrap(), Block::EnhancedPacket(_)));
        }
        let names: Vec<_> = r
            .interfaces()
            .iter()
            .map(|i| {
                i.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                })
            })
            .collect();
        assert_eq!(names, [Some("veth-gw-in".to_string()), Some("outside".to_string())]);
    }

    #[test]
    fn truncated_input_warns_and_counts_complete_frames() {
        let f = tcp_frame([192, 0, 2, 7], [198, 51, 100, 7], 40000, 21);
        let mut bytes = pcap_bytes(&[(1, &f), (2, &f), (3, &f)]);
        bytes.truncate(bytes.len() - 5);
        let s = replay(bytes, &quiet("cut.pcap")).unwrap();
        assert_eq!(s.frames_in, 2);
        assert_eq!(s.warnings.len(), 1);
        assert!(s.warnings[0].contains("cut.pcap") && s.warnings[0].contains("truncated"), "{:?}", s.warnings);
    }

    #[test]
    fn unwritable_output_is_an_os_error() {
        let opts = Options { out: Some("/nonexistent-dir/o.pcapng".into()), ..quiet("in.pcap") };
        let e = replay(pcap_bytes(&[]), &opts).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(e.to_string(), "cannot write /nonexistent-dir/o.pcapng: No such file or directory");
    }

    #[test]
    fn summary_ends_with_consumed_then_frames() {
        let s = Summary { frames_in: 5, frames_out: 2, dropped: 2, consumed: 1, generated: 4, ..Default::default() };
        let text = s.to_string();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[lines.len() - 1], "frames: 5 in, 2 out, 2 dropped, 4 gateway-generated");
        assert_eq!(lines[lines.len() - 2], "consumed by the gateway: 1");
        assert!(!text.ends_with('\n'));
    }

    #[test]
    fn clock_is_monotonic_and_ticks_each_second() {
        let mut c = Clock::default();
        let s = |x: f64| Nanos::from_secs_f64(x);
        assert_eq!(c.advance(s(10.0)), (s(10.0), false));
        assert_eq!(c.advance(s(10.9)), (s(10.9), false));
        assert_eq!(c.advance(s(11.0)), (s(11.0), true));
        assert_eq!(c.advance(s(5.0)), (s(11.0), false), "backwards: the clock stays");
        assert_eq!(c.advance(s(11.999)), (s(11.999), false));
        assert_eq!(c.advance(s(100.0)), (s(100.0), true));
    }

    #[test]
    fn device_names_win_over_interface_names() {
        let mut c = two_interfaces();
        // "outside" is also the device of the first interface: the device wins.
        c.interfaces[0].device = Some("outside".into());
        assert_eq!(match_interface(&c, "outside"), Some(0));
        assert_eq!(match_interface(&c, "inside"), Some(0));
        assert_eq!(match_interface(&c, "eth0"), None);
    }

    #[test]
    fn every_event_kind_has_its_log_name() {
        use crate::event::Session;
        let sess = Session { client: "192.0.2.1:1".parse().unwrap(), server: "198.51.100.1:21".parse().unwrap() };
        let ep = Endpoint("192.0.2.1:1".parse().unwrap());
        let ip = ep.0.ip();
        let pair = crate::event::Pair { src: ep, dst: ep };
        let line = || "x".to_string();
        let name = || std::sync::Arc::<str>::from("x");
        let kinds = [
            EventKind::ConnectionNew { protocol: "tcp", src: ep, dst: ep, from: name(), to: name() },
            EventKind::ConnectionEnd {
                protocol: "tcp",
                src: ep,
                dst: ep,
                from: name(),
                to: name(),
                reason: crate::event::EndReason::Fin,
            },
            EventKind::Nat { original: pair, translated: pair },
            EventKind::FtpCommand { session: sess, line: line() },
            EventKind::FtpReply { session: sess, line: line() },
            EventKind::FtpEncrypted { session: sess, line: line() },
            EventKind::AlgRewrite { session: sess, before: line(), after: line(), delta: 0 },
            EventKind::PinholeOpen { session: sess, peer: ip, address: ip, port: 1, expires: 0.0 },
            EventKind::PinholeUse { session: sess, address: ip, port: 1 },
            EventKind::PinholeExpire { session: sess, address: ip, port: 1 },
            EventKind::Drop {
                reason: DropReason::Policy,
                rule: None,
                session: None,
                src: None,
                dst: None,
                detail: line(),
            },
            EventKind::Reset { session: sess, reason: DropReason::Bounce },
            EventKind::CaptureGap { session: sess, from: "client", bytes: 10 },
        ];
        let mut seen = std::collections::HashSet::new();
        for k in kinds {
            let json: serde_json::Value =
                serde_json::from_str(&Event::new(Nanos(0), None, k.clone()).to_json()).unwrap();
            assert_eq!(json["event"], k.name());
            seen.insert(k.index());
        }
        assert_eq!(seen.len(), EventKind::NAMES.len());
    }
}
