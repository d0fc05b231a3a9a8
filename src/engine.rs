//! The pure packet engine: frames and a clock in; frames, verdicts and events
//! out. No I/O, threads or wall clock in here, so `replay` and `run` are thin
//! shells around the same code.
//!
//! A frame's path: parse → gateway's own traffic (ARP, ND, ping) → TTL →
//! connection table (existing: track, ALG, NAT, forward) or new connection
//! (limits → DNAT → route → policy → SNAT → insert) → emit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use crate::config::{Config, IfIndex, Protocol};
use crate::conntrack::{self, Conn, ConnId, Dir, Segment, State, Table, TcpDir, TcpOutcome, Tuple, TupleHasher};
use crate::event::{DropReason, EndReason, Endpoint, Event, EventKind, Pair};
use crate::ftp::alg::{self, FtpSession, Pinholes, SegVerdict};
use crate::nat::PortAllocator;
use crate::policy::{self, Flow};
use crate::route::{self, Routes};
use crate::time::Nanos;
use crate::wire::parse::{parse_into, Parsed};
use crate::wire::{build, setters, tcp_flags, Arp, Mac, Meta, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// Where the engine's output goes.
pub trait Sink {
    /// A frame the gateway originates (ARP/ND answers, RSTs, ICMP errors, held
    /// frames released later) to be sent on `iface`.
    fn transmit(&mut self, iface: IfIndex, frame: &[u8]);
    /// An event for the log.
    fn event(&mut self, ev: Event);
    /// `process_batch` is about to process the `i`-th frame of its burst:
    /// a sink that writes output in input order files what `transmit` gives
    /// it under that frame (replay does; live sends as it comes).
    fn frame_start(&mut self, _i: usize) {}
    /// Whether the sink reads `ftp_command`/`ftp_reply` lines. One that only
    /// counts events (replay without an event log) says no, and is spared
    /// half a million rendered lines per million frames.
    fn wants_lines(&self) -> bool {
        true
    }
}

/// What became of one input frame. Every input frame gets exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (possibly rewritten) frame buffer on this interface.
    Forward(IfIndex),
    /// Dropped; an event with the reason was emitted.
    Drop(DropReason),
    /// Used by the gateway itself (ARP/ND for its addresses, ping to it).
    Consumed,
}

/// One frame of a burst for `Engine::process_batch`: what `process` takes,
/// and the verdict it would have returned.
#[derive(Debug)]
pub struct BatchFrame<'a> {
    pub ingress: IfIndex,
    /// 1-based input frame index carried into events (0: none).
    pub packet: u64,
    pub frame: &'a mut Vec<u8>,
    /// Set by `process_batch`.
    pub verdict: Verdict,
    /// When the frame arrived, if not the burst's time (replay: each frame
    /// keeps its capture time).
    pub at: Option<Nanos>,
    /// The frame as `Preparsed::parse` saw it, if the caller parsed it
    /// already. Processing works on its `Meta` in place (and changes it).
    pub pre: Option<&'a mut Preparsed>,
}

impl<'a> BatchFrame<'a> {
    pub fn new(ingress: IfIndex, packet: u64, frame: &'a mut Vec<u8>) -> BatchFrame<'a> {
        BatchFrame { ingress, packet, frame, verdict: Verdict::Consumed, at: None, pre: None }
    }
}

/// A frame parsed, and its tuple hashed, before it reaches the engine: the
/// first step of `process_batch`, which a caller with a thread to spare can
/// take there (replay's reading thread does). Parsing is pure, so the
/// engine's answer is the same either way.
#[derive(Clone, Copy, Debug)]
pub struct Preparsed {
    pub meta: Meta,
    pub parsed: Parsed,
    /// The table hash of the tuple (`Parsed::Ip` only, and only when a hasher was given).
    pub hash: Option<u64>,
}

impl Preparsed {
    pub const EMPTY: Preparsed = Preparsed { meta: Meta::EMPTY, parsed: Parsed::Other { ethertype: 0 }, hash: None };

    /// Parse `frame` into `self`; with `hasher` (from `Engine::hasher` of the
    /// engine that will process it), hash its tuple too.
    pub fn parse(&mut self, frame: &[u8], hasher: Option<&TupleHasher>) {
        self.parsed = parse_into(frame, &mut self.meta);
        self.hash = match (self.parsed, hasher) {
            (Parsed::Ip, Some(h)) => Some(h.hash(&tuple_of(&self.meta))),
            _ => None,
        };
    }

    /// The sender's address: IP source, or an ARP packet's sender.
    pub fn source(&self) -> Option<IpAddr> {
        match self.parsed {
            Parsed::Ip => Some(self.meta.src),
            Parsed::Arp(a) => Some(IpAddr::V4(a.spa)),
            _ => None,
        }
    }
}

/// Frames parsed and prefetched together in `process_batch`. Enough for the
/// first prefetch to land before its frame is processed; few enough that the
/// burst's index entries and connections stay in L1/L2.
pub const BATCH: usize = 16;

/// Counters, read by the summary and the metrics endpoint.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub frames_in: u64,
    pub forwarded: u64,
    pub consumed: u64,
    pub generated: u64,
    pub dropped: [u64; DropReason::ALL.len()],
    pub connections_new: u64,
    pub nat_mappings: u64,
}

impl Stats {
    /// Add another worker's counters (the gateway's totals).
    pub fn add(&mut self, o: &Stats) {
        self.frames_in += o.frames_in;
        self.forwarded += o.forwarded;
        self.consumed += o.consumed;
        self.generated += o.generated;
        self.connections_new += o.connections_new;
        self.nat_mappings += o.nat_mappings;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }
    pub fn dropped_for(&self, r: DropReason) -> u64 {
        self.dropped[r as usize]
    }
}

/// How later fragments of a datagram are treated: like its first fragment.
#[derive(Clone, Copy, Debug)]
struct FragState {
    outcome: Result<(ConnId, Dir), DropReason>,
    expires: Nanos,
}

type FragKey = (IpAddr, IpAddr, u8, u32);

struct Unresolved {
    /// Frames (MACs set but the destination) and their input index.
    frames: Vec<(Vec<u8>, u64)>,
    tries: u8,
    next_try: Nanos,
}

/// Frames held per unresolved neighbour, and how often to ask (as Linux: 3).
const NEIGH_QUEUE: usize = 3;
const NEIGH_TRIES: u8 = 3;

/// Linux's ipfrag_time.
const FRAG_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections examined for expiry per tick; the whole table is covered every
/// few ticks without any tick walking a million entries.
const SWEEP_MIN: usize = 4096;

pub struct Engine {
    config: Config,
    routes: Routes,
    table: Table,
    ports: PortAllocator,
    macs: Vec<Mac>,
    /// Shared by the workers of one gateway: ARP and ND answers all reach
    /// worker 0 (see `dispatch`), which learns them for everyone.
    neighbors: Neighbors,
    /// Live only: frames waiting for a next hop's MAC.
    unresolved: HashMap<(IfIndex, IpAddr), Unresolved>,
    resolve: bool,
    frags: HashMap<FragKey, FragState>,
    now: Nanos,
    stats: Stats,
    scratch: Vec<ConnId>,
    /// FTP control sessions, indexed by `Conn::alg`.
    // Boxed: a session (about 650 bytes) is taken out for each control
    // segment while the ALG borrows the rest of the engine.
    ftp: Vec<Option<Box<FtpSession>>>,
    ftp_free: Vec<u32>,
    pinholes: Pinholes,
    alg_events: Vec<EventKind>,
    alg_scratch: alg::Scratch,
    shard: Shard,
    seed: u64,
    /// `config.interfaces[i].name`, shared by the events that name them.
    ifnames: Vec<std::sync::Arc<str>>,
}

const TABLE_SEED: u64 = 0x5eed_f7a9_a7e0_0001;

/// Which of how many workers an engine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: u16,
    pub count: u16,
}

impl Shard {
    pub const ONE: Shard = Shard { index: 0, count: 1 };
}

pub type Neighbors = std::sync::Arc<dashmap::DashMap<(IfIndex, IpAddr), Mac, foldhash::fast::RandomState>>;

/// What the workers of one gateway share.
#[derive(Clone)]
pub struct Shared {
    pub pinholes: Pinholes,
    pub neighbors: Neighbors,
    /// Connection counts for the limits, with more than one worker.
    pub counts: Option<conntrack::SharedCounts>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            pinholes: alg::new_pinholes(),
            neighbors: std::sync::Arc::new(dashmap::DashMap::with_hasher(foldhash::fast::RandomState::default())),
            counts: None,
        }
    }
}

impl Engine {
    /// `seed` drives the random NAT port allocator and the table's hash
    /// (replay fixes it for reproducible output; `run` draws one from the OS).
    pub fn new(config: Config, seed: u64) -> Engine {
        Engine::new_worker(config, seed, Shard::ONE, &Shared::default())
    }

    /// The `workers` engines of one gateway, sharing one `Shared`, each with
    /// a seed of its own so their port choices are independent. `run` and
    /// `replay` both build them here, so replay splits as the gateway does.
    pub fn workers(config: &Config, seed: u64, workers: u16) -> Vec<Engine> {
        let n = workers.max(1);
        let shared = Shared { counts: (n > 1).then(conntrack::SharedCounts::default), ..Shared::default() };
        (0..n)
            .map(|k| {
                let s = seed.wrapping_add(u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                Engine::new_worker(config.clone(), s, Shard { index: k, count: n }, &shared)
            })
            .collect()
    }

    /// One of several workers of a gateway: its own connection table (a
    /// share of `max_connections`), ports chosen so that `dispatch` brings
    /// both directions of a connection back to it, and the pinholes and
    /// neighbours of `shared`.
    pub fn new_worker(config: Config, seed: u64, shard: Shard, shared: &Shared) -> Engine {
        let count = shard.count.max(1);
        let capacity = (config.limits.max_connections as usize).div_ceil(count as usize);
        let macs = config
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, ifc)| ifc.mac.unwrap_or([0x02, 0x66, 0x67, 0x00, 0x00, (i as u8).wrapping_add(1)]))
            .collect();
        // Sized for the configured limit, so the index never rehashes under load.
        let mut table = Table::new(seed ^ TABLE_SEED, capacity);
        if let Some(counts) = &shared.counts {
            table.share_counts(counts.clone());
        }
        Engine {
            routes: Routes::new(&config),
            table,
            seed,
            ports: PortAllocator::with_stride(seed, count),
            shard: Shard { index: shard.index, count },
            macs,
            unresolved: HashMap::new(),
            resolve: false,
            frags: HashMap::new(),
            now: Nanos::ZERO,
            stats: Stats::default(),
            scratch: Vec::new(),
            ftp: Vec::new(),
            ftp_free: Vec::new(),
            pinholes: shared.pinholes.clone(),
            neighbors: shared.neighbors.clone(),
            alg_events: Vec::new(),
            alg_scratch: alg::Scratch::default(),
            ifnames: ifnames(&config),
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This engine's table hash, for `Preparsed::parse` on another thread.
    pub fn hasher(&self) -> TupleHasher {
        self.table.hasher()
    }

    /// Size the (still empty) connection table for `n` connections instead
    /// of the configured limit; it grows when it must. For replay: a capture
    /// rarely holds many connections at once, and a small index stays in
    /// cache where one sized for a million would miss on every lookup.
    /// Live, the presized table is kept so the index never rehashes under load.
    pub fn presize_table(&mut self, n: usize) {
        if self.table.is_empty() {
            self.table = Table::new(self.seed ^ TABLE_SEED, n);
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The MAC the gateway uses on `iface`.
    pub fn mac(&self, iface: IfIndex) -> Mac {
        self.macs[iface]
    }

    /// Swap in a new configuration, keeping the connection table: a
    /// connection the new policy no longer allows ends (`evicted`); the rest,
    /// their NAT mappings and FTP sessions carry on. Returns how many ended.
    pub fn reload(&mut self, config: Config, sink: &mut impl Sink) -> usize {
        let keep_macs: Vec<(String, Mac)> =
            self.config.interfaces.iter().zip(&self.macs).map(|(i, m)| (i.name.clone(), *m)).collect();
        self.routes = Routes::new(&config);
        self.macs = config
            .interfaces
            .iter()
            .enumerate()
            .map(|(i, ifc)| {
                ifc.mac.or_else(|| keep_macs.iter().find(|(n, _)| *n == ifc.name).map(|(_, m)| *m)).unwrap_or([
                    0x02,
                    0x66,
                    0x67,
                    0x00,
                    0x00,
                    (i as u8).wrapping_add(1),
                ])
            })
            .collect();
        self.ifnames = ifnames(&config);
        self.config = config;
        let n_if = self.config.interfaces.len();
        let denied: Vec<ConnId> = self
            .table
            .iter()
            .filter(|(_, c)| {
                if c.parent.is_some() {
                    return false; // data connections live and die with their pinhole's decision
                }
                if c.ifaces.iter().any(|&i| i as usize >= n_if) {
                    return true;
                }
                let (_, dep) = c.translation(Dir::Orig);
                let flow = Flow {
                    from: c.iface(0),
                    to: c.iface(1),
                    src: c.orig.src,
                    dst: dep.dst,
                    proto: c.orig.proto,
                    dport: dep.dport,
                };
                policy::evaluate(&self.config.policy, &flow).action == crate::config::Action::Deny
            })
            .map(|(id, _)| id)
            .collect();
        let mut cx = Cx { packet: 0, sink, generated: 0 };
        for &id in &denied {
            self.end_conn(&mut cx, id, EndReason::Evicted);
        }
        denied.len()
    }

    /// Live operation: resolve next hops with ARP / neighbour discovery and
    /// hold frames until they answer, instead of trusting captured MACs.
    pub fn set_resolve_neighbors(&mut self, on: bool) {
        self.resolve = on;
    }

    /// The FTP pinholes, shared with other workers and the admin endpoint.
    pub fn pinholes(&self) -> &Pinholes {
        &self.pinholes
    }

    /// Live FTP control sessions.
    pub fn ftp_sessions(&self) -> impl Iterator<Item = &FtpSession> {
        self.ftp.iter().flatten().map(|b| &**b)
    }

    /// Use the device's real MAC (for `run`).
    pub fn set_mac(&mut self, iface: IfIndex, mac: Mac) {
        self.macs[iface] = mac;
    }

    /// Process one frame received on `ingress` at `now`. `packet` is the
    /// 1-based input frame index carried into events. The frame may be
    /// rewritten in place (and grow or shrink for ALG rewrites).
    pub fn process(
        &mut self,
        now: Nanos,
        packet: u64,
        ingress: IfIndex,
        frame: &mut Vec<u8>,
        sink: &mut impl Sink,
    ) -> Verdict {
        let mut m = Meta::EMPTY;
        let parsed = parse_into(frame, &mut m);
        self.process_parsed(now, packet, ingress, frame, &mut m, parsed, None, sink)
    }

    /// Process a burst of frames received at `now`, exactly as calling
    /// `process` on each in order would (same verdicts, output and events),
    /// but faster on a big table: every frame of a group of `BATCH` is parsed
    /// and hashed first and its index entry prefetched, then each likely
    /// connection is prefetched, and only then are the frames processed, so
    /// the cache misses of the group overlap instead of following each other.
    pub fn process_batch(&mut self, now: Nanos, batch: &mut [BatchFrame<'_>], sink: &mut impl Sink) {
        let mut metas = [Meta::EMPTY; BATCH];
        let mut parsed = [Parsed::Other { ethertype: 0 }; BATCH];
        let mut hashes: [Option<u64>; BATCH] = [None; BATCH];
        let mut pos = 0;
        for group in batch.chunks_mut(BATCH) {
            for (i, bf) in group.iter().enumerate() {
                // A pre-parsed frame is processed with its own `Meta`, not a copy.
                let m = match &bf.pre {
                    Some(p) => {
                        (parsed[i], hashes[i]) = (p.parsed, p.hash);
                        &p.meta
                    }
                    None => {
                        (parsed[i], hashes[i]) = (parse_into(bf.frame, &mut metas[i]), None);
                        &metas[i]
                    }
                };
                debug_assert!(hashes[i].is_none_or(|h| h == self.table.hash(&tuple_of(m))), "foreign hasher");
                if parsed[i] == Parsed::Ip && hashes[i].is_none() {
                    hashes[i] = Some(self.table.hash(&tuple_of(m)));
                }
                // A guess is enough: the frame may turn out not to need the
                // lookup (ARP, link scope, a later fragment); a prefetch is harmless.
                if let Some(h) = hashes[i] {
                    self.table.prefetch_index(h);
                }
            }
            for h in hashes[..group.len()].iter().flatten() {
                self.table.prefetch_conn(*h);
            }
            for (i, bf) in group.iter_mut().enumerate() {
                sink.frame_start(pos + i);
                let at = bf.at.unwrap_or(now);
                let m = match &mut bf.pre {
                    Some(p) => &mut p.meta,
                    None => &mut metas[i],
                };
                bf.verdict = self.process_parsed(at, bf.packet, bf.ingress, bf.frame, m, parsed[i], hashes[i], sink);
            }
            pos += group.len();
        }
    }

    /// `process` once the frame is parsed; `hash` is the table hash of its
    /// tuple when already known.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn process_parsed(
        &mut self,
        now: Nanos,
        packet: u64,
        ingress: IfIndex,
        frame: &mut Vec<u8>,
        m: &mut Meta,
        parsed: Parsed,
        hash: Option<u64>,
        sink: &mut impl Sink,
    ) -> Verdict {
        if now > self.now {
            self.now = now;
        }
        self.stats.frames_in += 1;
        let mut cx = Cx { packet, sink, generated: 0 };
        let v = if ingress >= self.config.interfaces.len() {
            self.drop(&mut cx, DropReason::Invalid, None, None, "arrived on an unknown interface".into())
        } else {
            self.process_frame(&mut cx, ingress, frame, m, parsed, hash)
        };
        self.stats.generated += cx.generated;
        match v {
            Verdict::Forward(_) => self.stats.forwarded += 1,
            Verdict::Drop(r) => self.stats.dropped[r as usize] += 1,
            Verdict::Consumed => self.stats.consumed += 1,
        }
        v
    }

    /// Advance timers to `now`: expire connections and fragment state.
    pub fn tick(&mut self, now: Nanos, sink: &mut impl Sink) {
        if now > self.now {
            self.now = now;
        }
        let mut expired = std::mem::take(&mut self.scratch);
        expired.clear();
        let budget = (self.table.len() / 8).max(SWEEP_MIN);
        self.table.sweep(self.now, budget, &mut expired);
        let mut cx = Cx { packet: 0, sink, generated: 0 };
        for &id in &expired {
            self.end_conn(&mut cx, id, EndReason::Timeout);
        }
        self.scratch = expired;
        let now = self.now;
        if !self.pinholes.is_empty() {
            let mut gone = Vec::new();
            let me = self.shard.index;
            self.pinholes.retain(|k, p| {
                let keep = p.expires > now || p.worker != me;
                if !keep {
                    gone.push((*k, p.session, p.control));
                }
                keep
            });
            // The map iterates in its random hasher's order: log in a stable one.
            gone.sort_unstable_by_key(|g| g.0);
            for (key, session, control) in gone {
                if let Some(sess) = self.session_of(control) {
                    sess.pinholes.retain(|k| *k != key);
                }
                cx.event(now, EventKind::PinholeExpire { session, address: key.0, port: key.1 });
            }
        }
        if !self.frags.is_empty() {
            self.frags.retain(|_, f| f.expires > now);
        }
        if !self.unresolved.is_empty() {
            self.retry_neighbors(&mut cx);
        }
        self.stats.generated += cx.generated;
    }

    fn process_frame<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        ingress: IfIndex,
        frame: &mut Vec<u8>,
        m: &mut Meta,
        parsed: Parsed,
        hash: Option<u64>,
    ) -> Verdict {
        match parsed {
            Parsed::Ip => {}
            Parsed::Arp(a) => return self.on_arp(cx, ingress, &a),
            Parsed::Other { ethertype } => {
                return self.drop(
                    cx,
                    DropReason::Unsupported,
                    None,
                    None,
                    format!("EtherType 0x{ethertype:04x} is not IPv4, IPv6 or ARP"),
                )
            }
            Parsed::Malformed(why) => return self.drop(cx, DropReason::Invalid, None, None, why.to_string()),
        }

        // Neighbour discovery is link-local whatever the destination: a
        // solicited advertisement comes unicast to the gateway's address.
        if is_link_scope(m.dst) || is_nd(m) {
            return self.on_link_scope(cx, ingress, frame, m);
        }
        if m.is_later_fragment() {
            return self.later_fragment(cx, frame, m);
        }
        // Traffic for the gateway's own addresses that is not a NAT return
        // (asked only when it matters: the route lookup is not free).
        if m.ttl <= 1 && !self.routes.is_local(m.dst) {
            return self.ttl_exceeded(cx, ingress, frame, m);
        }
        if let Some(icmp) = m.icmp {
            if is_icmp_error(m.v6, icmp.ty) {
                return self.icmp_error(cx, frame, m);
            }
        }
        let tuple = tuple_of(m);
        let h = hash.unwrap_or_else(|| self.table.hash(&tuple));
        let verdict = match self.table.lookup_hashed(&tuple, h) {
            Some((id, dir)) => self.existing(cx, ingress, id, dir, frame, m),
            None => {
                let to_us = self.routes.is_local(m.dst);
                self.new_conn(cx, ingress, frame, m, to_us)
            }
        };
        if let Some(f) = m.frag {
            // A first fragment: its later fragments follow its fate.
            let outcome = match verdict {
                Verdict::Forward(_) => self.table.lookup(&tuple).ok_or(DropReason::Invalid),
                Verdict::Drop(r) => Err(r),
                Verdict::Consumed => Err(DropReason::Unsupported),
            };
            let key = (tuple.src, tuple.dst, m.proto, f.id);
            self.frags.insert(key, FragState { outcome, expires: self.now.saturating_add(FRAG_TIMEOUT) });
        }
        verdict
    }

    /// A packet of a connection the table knows.
    fn existing<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        ingress: IfIndex,
        id: ConnId,
        dir: Dir,
        frame: &mut Vec<u8>,
        m: &mut Meta,
    ) -> Verdict {
        let now = self.now;
        let idle = self.timeout_for(m.proto);
        // One borrow of the connection for the whole plain path: the table is
        // indexed once per frame.
        let Some(conn) = self.table.get_mut(id) else {
            return self.drop(cx, DropReason::Invalid, None, Some(m), "connection vanished".into());
        };
        let expired = conn.expires <= now;
        // A fresh SYN from the initiator on a known tuple: the client reused a
        // port whose old connection the gateway still holds (it closed
        // without the gateway seeing it, or is still closing). Unless it is
        // a retransmission of the SYN that opened this one, start over.
        let reopen = m.proto == PROTO_TCP
            && dir == Dir::Orig
            && m.tcp.is_some_and(|t| {
                t.flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN
                    && !(matches!(conn.state, State::SynSent | State::SynRecv)
                        && t.seq.wrapping_add(1) == conn.tcp[0].end)
            });
        if expired || reopen {
            // Its time is up (the sweep had not reached it yet), or a new SYN
            // reuses the tuple of a closed connection: start over.
            self.end_conn(cx, id, EndReason::Timeout);
            let to_us = self.routes.is_local(m.dst);
            return self.new_conn(cx, ingress, frame, m, to_us);
        }
        let alg_idx = conn.alg;
        let mut ended_alg = None;
        if let Some(t) = m.tcp {
            let mut ack = t.ack;
            if let Some(sess) = alg_idx.and_then(|i| self.ftp[i as usize].as_mut()) {
                if dir == Dir::Reply && t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN | tcp_flags::ACK {
                    sess.server_isn(t.seq.wrapping_add(1));
                }
                // Window tracking works in each sender's own sequence space.
                ack = sess.map_ack(dir, t.ack);
            }
            let seg = Segment {
                seq: t.seq,
                ack,
                flags: t.flags,
                window: t.window,
                payload_len: t.payload_len as u32,
                wscale: None,
            };
            if t.flags & tcp_flags::SYN != 0 && t.flags & tcp_flags::ACK != 0 {
                let opts = &frame[m.l4 + 20..(m.l4 + t.header_len).min(frame.len())];
                let seg = Segment { wscale: conntrack::tcp_wscale(opts), ..seg };
                let _ = conntrack::track_tcp(conn, dir, &seg, now, &self.config.timeouts);
            } else {
                match conntrack::track_tcp(conn, dir, &seg, now, &self.config.timeouts) {
                    TcpOutcome::Ok => {}
                    TcpOutcome::OutOfWindow => {
                        let detail = format!("TCP sequence {} is outside the window", t.seq);
                        return self.drop(cx, DropReason::Invalid, None, Some(m), detail);
                    }
                    TcpOutcome::Ended(reason) => {
                        conn.ended = true;
                        let ev = end_event(&self.ifnames, conn, reason);
                        cx.event(now, ev);
                        ended_alg = alg_idx;
                    }
                }
            }
        } else {
            if dir == Dir::Reply && conn.state == State::New {
                conn.state = State::Replied;
            }
            conn.expires = now.saturating_add(idle);
        }
        // The sender's MAC is where the other direction goes next.
        let back = dir.flip().idx();
        if conn.macs[back] != m.eth_src {
            conn.macs[back] = m.eth_src;
        }
        if alg_idx.is_none() {
            let (egress, next_mac) = (conn.egress(dir), conn.macs[dir.idx()]);
            apply_translation(frame, m, conn, dir);
            return self.emit(cx, frame, m, egress, next_mac);
        }
        if let Some(i) = ended_alg {
            self.close_pinholes(cx, i);
        }
        if m.tcp.is_some() {
            if let Some(v) = self.run_alg(cx, id, dir, frame, m) {
                return v;
            }
        }
        let conn = self.table.get(id).expect("checked above");
        let (egress, next_mac) = (conn.egress(dir), conn.macs[dir.idx()]);
        apply_translation(frame, m, conn, dir);
        let v = self.emit(cx, frame, m, egress, next_mac);
        if v == Verdict::Forward(egress) {
            self.split_for_mtu(cx, frame, m, egress);
        }
        v
    }

    /// A rewritten control segment (a longer line, or held bytes joining the
    /// next segment) may no longer fit the egress MTU: send its first part
    /// as a segment of its own and leave the rest in `frame`.
    fn split_for_mtu<S: Sink>(&mut self, cx: &mut Cx<'_, S>, frame: &mut Vec<u8>, m: &mut Meta, egress: IfIndex) {
        let mtu = self.config.interfaces[egress].mtu as usize;
        let Some(t) = m.tcp else { return };
        if m.ip_len <= mtu {
            return;
        }
        let headers = t.payload - m.l3;
        let room = mtu.saturating_sub(headers);
        if room == 0 || t.payload_len <= room {
            return;
        }
        let mut first = frame.clone();
        let mut fm = *m;
        setters::replace_tcp_payload(&mut first, &mut fm, room, t.payload_len, b"");
        if fm.tcp.is_some_and(|ft| ft.flags & tcp_flags::FIN != 0) {
            // The FIN belongs after the last byte: only the second part carries it.
            first[fm.l4 + 13] &= !tcp_flags::FIN;
            let sum = crate::wire::checksum::transport(fm.src, fm.dst, PROTO_TCP, &first[fm.l4..fm.l4 + fm.l4_len], 16);
            first[fm.l4 + 16..fm.l4 + 18].copy_from_slice(&sum.to_be_bytes());
        }
        cx.transmit(egress, &first);
        setters::replace_tcp_payload(frame, m, 0, room, b"");
        setters::set_tcp_seq(frame, m, t.seq.wrapping_add(room as u32));
    }

    /// The FTP ALG's look at a control-connection segment: it may rewrite the
    /// payload and shift sequence numbers, hold a partial line, or refuse.
    /// None: carry on forwarding.
    fn run_alg<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        id: ConnId,
        dir: Dir,
        frame: &mut Vec<u8>,
        m: &mut Meta,
    ) -> Option<Verdict> {
        let t = m.tcp?;
        let ai = self.table.get(id)?.alg? as usize;
        let mut sess = self.ftp.get_mut(ai)?.take()?;
        let mut events = std::mem::take(&mut self.alg_events);
        let (verdict, edit) = {
            let conn = self.table.get(id).expect("caller checked");
            let mut ctx = alg::Ctx {
                cfg: &self.config.ftp,
                now: self.now,
                conn,
                table: &self.table,
                ports: &mut self.ports,
                pinholes: &self.pinholes,
                nat_ports: self.config.nat.ports,
                events: &mut events,
                scratch: &mut self.alg_scratch,
                capture: !self.resolve,
                worker: self.shard.index,
                lines: cx.sink.wants_lines(),
            };
            let end = (t.payload + t.payload_len).min(frame.len());
            let seg = alg::Seg { seq: t.seq, ack: t.ack, flags: t.flags, payload: &frame[t.payload.min(end)..end] };
            sess.on_segment(&mut ctx, dir, &seg)
        };
        for ev in events.drain(..) {
            let ev = match ev {
                EventKind::Drop { reason, rule, session, detail, .. } => EventKind::Drop {
                    reason,
                    rule,
                    session,
                    src: Some((m.src, m.sport).into()),
                    dst: Some((m.dst, m.dport).into()),
                    detail,
                },
                other => other,
            };
            cx.event(self.now, ev);
        }
        self.alg_events = events;

        if let Some(p) = &edit.payload {
            setters::replace_tcp_payload(frame, m, 0, t.payload_len, p);
        }
        if let Some(seq) = edit.seq {
            setters::set_tcp_seq(frame, m, seq);
        }
        if let Some(ack) = edit.ack {
            setters::set_tcp_ack(frame, m, ack);
        }
        if sess.other_shifted(dir) {
            setters::map_sack(frame, m, |x| sess.map_ack(dir, x));
        }
        let session = sess.session;
        let result = match verdict {
            SegVerdict::Forward => None,
            SegVerdict::Hold => Some(Verdict::Consumed),
            SegVerdict::Drop(reason, detail) => {
                let src = Some(Endpoint::from((m.src, m.sport)));
                let dst = Some(Endpoint::from((m.dst, m.dport)));
                cx.event(self.now, EventKind::Drop { reason, rule: None, session: Some(session), src, dst, detail });
                Some(Verdict::Drop(reason))
            }
            SegVerdict::Reset(reason, detail) => {
                self.reset_control(cx, id, &sess, dir, m, reason, detail);
                Some(Verdict::Drop(reason))
            }
        };
        self.ftp[ai] = Some(sess);
        if self.table.get(id).is_some_and(|c| c.ended) {
            // A reset control connection's pinholes go with it.
            self.close_pinholes(cx, ai as u32);
        }
        result
    }

    /// `on_violation: reset`: RST to both ends, as each expects it, and the
    /// control connection is over.
    #[allow(clippy::too_many_arguments)]
    fn reset_control<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        id: ConnId,
        sess: &FtpSession,
        dir: Dir,
        m: &Meta,
        reason: DropReason,
        detail: String,
    ) {
        let Some(conn) = self.table.get(id) else { return };
        let t = m.tcp.expect("control segments are TCP");
        // The current segment's ACK is exactly what its sender expects next.
        let acked = (t.flags & tcp_flags::ACK != 0).then_some(t.ack);
        let (client_seq, server_seq) = match dir {
            Dir::Orig => (acked, sess.receiver_next(Dir::Orig)),
            Dir::Reply => (sess.receiver_next(Dir::Reply), acked),
        };
        let mac_or = |mac: Mac| if mac == [0; 6] { m.eth_src } else { mac };
        let mut frames = Vec::new();
        if let Some(seq) = client_seq {
            let f = build::tcp_rst(
                self.macs[conn.iface(0)],
                mac_or(conn.macs[1]),
                (conn.orig.dst, conn.orig.dport),
                (conn.orig.src, conn.orig.sport),
                seq,
                None,
            );
            frames.push((conn.iface(0), f));
        }
        if let Some(seq) = server_seq {
            let f = build::tcp_rst(
                self.macs[conn.iface(1)],
                mac_or(conn.macs[0]),
                (conn.reply.dst, conn.reply.dport),
                (conn.reply.src, conn.reply.sport),
                seq,
                None,
            );
            frames.push((conn.iface(1), f));
        }
        for (i, f) in &frames {
            cx.transmit(*i, f);
        }
        let session = Some(sess.session);
        let (src, dst) = (Some(Endpoint::from((m.src, m.sport))), Some(Endpoint::from((m.dst, m.dport))));
        cx.event(self.now, EventKind::Drop { reason, rule: None, session, src, dst, detail });
        cx.event(self.now, EventKind::Reset { session: sess.session, reason });
        let now = self.now;
        if let Some(conn) = self.table.get_mut(id) {
            conn.state = State::Close;
            conn.expires = now.saturating_add(Duration::from_secs(10));
            if !conn.ended {
                conn.ended = true;
                let ev = end_event(&self.ifnames, conn, EndReason::Rst);
                cx.event(now, ev);
            }
        }
    }

    /// Close every pinhole an FTP session holds (its control connection ended).
    fn close_pinholes<S: Sink>(&mut self, cx: &mut Cx<'_, S>, ai: u32) {
        let Some(sess) = self.ftp.get_mut(ai as usize).and_then(|s| s.as_mut()) else { return };
        for key in sess.pinholes.drain(..) {
            if self.pinholes.remove_if(&key, |_, p| p.control == sess.control && p.worker == self.shard.index).is_some()
            {
                cx.event(self.now, EventKind::PinholeExpire { session: sess.session, address: key.0, port: key.1 });
            }
        }
    }

    /// The first packet of a connection the table does not know.
    fn new_conn<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        ingress: IfIndex,
        frame: &mut Vec<u8>,
        m: &mut Meta,
        to_us: bool,
    ) -> Verdict {
        // Only an opening packet may create state.
        let mut pickup = false;
        match m.proto {
            PROTO_TCP => {
                let flags = m.tcp.map_or(0, |t| t.flags);
                let opening =
                    flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST | tcp_flags::FIN) == tcp_flags::SYN;
                pickup = !opening
                    && self.config.policy.pickup
                    && flags & (tcp_flags::SYN | tcp_flags::RST) == 0
                    && flags & tcp_flags::ACK != 0;
                if !opening && !pickup {
                    let detail = format!("TCP {} for no known connection", flag_names(flags));
                    return self.drop(cx, DropReason::NoConnection, None, Some(m), detail);
                }
            }
            PROTO_ICMP | PROTO_ICMPV6 => {
                let ty = m.icmp.map_or(0, |i| i.ty);
                let request = if m.v6 { ty == 128 } else { ty == 8 };
                if to_us && request {
                    return self.echo_reply(cx, ingress, frame, m);
                }
                if !request {
                    let detail = format!("ICMP{} type {ty} for no known connection", if m.v6 { "v6" } else { "" });
                    return self.drop(cx, DropReason::NoConnection, None, Some(m), detail);
                }
            }
            _ => {}
        }

        let limits = &self.config.limits;
        if self.table.total() >= limits.max_connections as usize {
            let detail = format!("connection table full ({} connections)", limits.max_connections);
            return self.drop(cx, DropReason::Limit, None, Some(m), detail);
        }
        if self.table.count_for_source(m.src) >= limits.max_connections_per_source {
            let detail = format!("{} already has {} connections", m.src, limits.max_connections_per_source);
            return self.drop(cx, DropReason::Limit, None, Some(m), detail);
        }

        if pickup {
            return self.pickup(cx, ingress, frame, m);
        }
        if m.proto == PROTO_TCP {
            // A pinhole admits its peer only where that peer is: the same
            // source arriving on another interface is spoofed (or routed
            // asymmetrically) and meets the policy like any other SYN.
            let now = self.now;
            let admits = |p: &alg::Pinhole| p.peer == m.src && p.ingress == ingress && p.expires > now;
            let offered = self.pinholes.get(&(m.dst, m.dport)).filter(|p| admits(p)).map(|p| p.clone());
            if let Some(pin) = offered {
                return self.pinhole_conn(cx, ingress, frame, m, pin);
            }
        }

        // Destination NAT: a published service on the interface it arrived on.
        let mut dst = (m.dst, m.dport);
        let forward = self.config.nat.forward.iter().find(|f| {
            f.on == ingress
                && proto_matches(f.protocol, m.proto)
                && f.port == m.dport
                && f.to.is_ipv4() == m.dst.is_ipv4()
                && (to_us || self.config.interfaces[ingress].addresses.is_empty())
        });
        if let Some(f) = forward {
            dst = (f.to.ip(), f.to.port());
        } else if to_us {
            let detail = format!("addressed to the gateway itself ({}); nothing listens there", m.dst);
            return self.drop(cx, DropReason::Policy, None, Some(m), detail);
        }

        let Some(hop) = self.routes.lookup(dst.0) else {
            let detail = format!("no route to {}", dst.0);
            return self.drop(cx, DropReason::NoRoute, None, Some(m), detail);
        };

        let decision = policy::evaluate(
            &self.config.policy,
            &Flow { from: ingress, to: hop.iface, src: m.src, dst: dst.0, proto: m.proto, dport: dst.1 },
        );
        if decision.action == crate::config::Action::Deny {
            let rule = decision.rule.map(|i| self.config.policy.rules[i].name.clone());
            let detail = match &rule {
                Some(r) => format!("denied by rule '{r}'"),
                None => "no rule allows it (policy default deny)".to_string(),
            };
            return self.drop(cx, DropReason::Policy, rule, Some(m), detail);
        }

        // Source NAT: masquerade behind the egress interface's address.
        let mut src = (m.src, m.sport);
        let masq = self.config.nat.masquerade.iter().any(|r| r.from == ingress && r.to == hop.iface);
        if masq {
            let Some(addr) = route::iface_address(&self.config, hop.iface, m.src) else {
                let detail =
                    format!("masquerade on {} needs an address of this family", self.config.interfaces[hop.iface].name);
                return self.drop(cx, DropReason::NoRoute, None, Some(m), detail);
            };
            let echo = m.icmp.is_some();
            let table = &self.table;
            let proto = m.proto;
            let picked = if echo {
                // An echo's identifier is both "ports" of the tuple.
                self.ports.pick(self.config.nat.ports, m.sport, |p| {
                    !table.contains(&Tuple { src: dst.0, dst: addr, sport: p, dport: p, proto })
                })
            } else {
                self.ports.pick(self.config.nat.ports, m.sport, |p| {
                    !table.contains(&Tuple { src: dst.0, dst: addr, sport: dst.1, dport: p, proto })
                })
            };
            let Some(port) = picked else {
                let detail = format!("no free NAT port on {addr} towards {}", dst.0);
                return self.drop(cx, DropReason::Limit, None, Some(m), detail);
            };
            src = (addr, port);
        }

        self.create_conn(cx, ingress, hop.iface, hop.next_hop, frame, m, src, dst, None)
    }

    /// Insert a new connection `src → dst` (after NAT) for the packet in
    /// hand, log it, and forward the packet.
    #[allow(clippy::too_many_arguments)]
    fn create_conn<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        ingress: IfIndex,
        egress: IfIndex,
        next_hop: IpAddr,
        frame: &mut [u8],
        m: &mut Meta,
        src: (IpAddr, u16),
        dst: (IpAddr, u16),
        parent: Option<ConnId>,
    ) -> Verdict {
        let orig = tuple_of(m);
        let reply = if m.icmp.is_some() {
            Tuple { src: dst.0, dst: src.0, sport: src.1, dport: src.1, proto: m.proto }
        } else {
            Tuple { src: dst.0, dst: src.0, sport: dst.1, dport: src.1, proto: m.proto }
        };
        if let Some((old, _)) = self.table.lookup(&reply) {
            // A closed connection (TIME_WAIT) may still hold the tuple, e.g.
            // an FTP server connecting again from port 20 to a client port
            // it used a moment ago. A fresh SYN replaces it, as in Linux
            // conntrack; anything else keeps the table consistent by a drop.
            let syn =
                m.tcp.is_some_and(|t| t.flags & (tcp_flags::SYN | tcp_flags::ACK | tcp_flags::RST) == tcp_flags::SYN);
            if syn && self.table.get(old).is_some_and(|c| c.state.is_closed()) {
                self.end_conn(cx, old, EndReason::Timeout);
            } else {
                let detail = "its reply tuple belongs to another connection".to_string();
                return self.drop(cx, DropReason::Invalid, None, Some(m), detail);
            }
        }

        let now = self.now;
        let mut conn = Conn {
            orig,
            reply,
            state: if m.proto == PROTO_TCP { State::SynSent } else { State::New },
            expires: now.saturating_add(self.timeout_for(m.proto)),
            ifaces: [ingress as u8, egress as u8],
            macs: [self.next_hop_mac(egress, next_hop).unwrap_or([0; 6]), m.eth_src],
            tcp: [TcpDir::default(); 2],
            alg: None,
            parent,
            ended: false,
        };
        if let Some(t) = m.tcp {
            let opts = &frame[m.l4 + 20..(m.l4 + t.header_len).min(frame.len())];
            let seg = Segment {
                seq: t.seq,
                ack: t.ack,
                flags: t.flags,
                window: t.window,
                payload_len: t.payload_len as u32,
                wscale: conntrack::tcp_wscale(opts),
            };
            conntrack::track_tcp(&mut conn, Dir::Orig, &seg, now, &self.config.timeouts);
        }

        let ifname = |i: IfIndex| self.ifnames[i].clone();
        let protocol = proto_name(m.proto);
        cx.event(
            now,
            EventKind::ConnectionNew {
                protocol,
                src: Endpoint::from((orig.src, orig.sport)),
                dst: Endpoint::from((orig.dst, orig.dport)),
                from: ifname(ingress),
                to: ifname(egress),
            },
        );
        if conn.is_nat() {
            self.stats.nat_mappings += 1;
            let (a, d) = conn.translation(Dir::Orig);
            cx.event(
                now,
                EventKind::Nat {
                    original: Pair { src: (a.src, a.sport).into(), dst: (a.dst, a.dport).into() },
                    translated: Pair { src: (d.src, d.sport).into(), dst: (d.dst, d.dport).into() },
                },
            );
        }
        self.stats.connections_new += 1;

        let ftp_control = m.proto == PROTO_TCP && parent.is_none() && self.config.ftp.control_ports.contains(&dst.1);
        let client_isn = m.tcp.map_or(0, |t| t.seq.wrapping_add(1));
        let id = self.table.insert(conn);
        if ftp_control {
            let conn = self.table.get(id).expect("just inserted");
            let sess = FtpSession::new(id, conn, client_isn);
            let ai = self.add_session(sess);
            self.table.get_mut(id).expect("just inserted").alg = Some(ai);
        }
        let conn = self.table.get(id).expect("just inserted");
        let (egress, next_mac) = (conn.egress(Dir::Orig), conn.macs[0]);
        apply_translation(frame, m, conn, Dir::Orig);
        self.emit(cx, frame, m, egress, next_mac)
    }

    /// A SYN that an FTP pinhole expects: admitted without a policy rule,
    /// translated consistently with its control connection, once.
    fn pinhole_conn<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        ingress: IfIndex,
        frame: &mut [u8],
        m: &mut Meta,
        pin: alg::Pinhole,
    ) -> Verdict {
        // The pinhole is used up only once a route and a NAT port are found:
        // a SYN dropped for want of them leaves it for the retransmission.
        let dst = pin.target;
        let Some(hop) = self.routes.lookup(dst.0) else {
            let detail = format!("no route to {}", dst.0);
            return self.drop(cx, DropReason::NoRoute, None, Some(m), detail);
        };
        let mut src = (m.src, m.sport);
        if let Some(public) = pin.snat {
            if public != m.src {
                let table = &self.table;
                let picked = self.ports.pick(self.config.nat.ports, m.sport, |p| {
                    !table.contains(&Tuple { src: dst.0, dst: public, sport: dst.1, dport: p, proto: PROTO_TCP })
                });
                let Some(port) = picked else {
                    let detail = format!("no free NAT port on {public} for an FTP data connection");
                    return self.drop(cx, DropReason::Limit, None, Some(m), detail);
                };
                src = (public, port);
            }
        }
        let key = (pin.address, pin.port);
        let same = |p: &alg::Pinhole| p.control == pin.control && p.worker == pin.worker && p.peer == pin.peer;
        if self.pinholes.remove_if(&key, |_, p| same(p)).is_none() {
            // Another worker's SYN from the same peer took it first.
            let detail = format!("pinhole {}:{} already used", key.0, key.1);
            return self.drop(cx, DropReason::NoConnection, None, Some(m), detail);
        }
        if pin.worker == self.shard.index {
            if let Some(sess) = self.session_of(pin.control) {
                sess.pinholes.retain(|k| *k != key);
            }
        }
        cx.event(self.now, EventKind::PinholeUse { session: pin.session, address: pin.address, port: pin.port });
        self.create_conn(cx, ingress, hop.iface, hop.next_hop, frame, m, src, dst, Some(pin.control))
    }

    /// `policy.pickup`: a TCP segment of a connection already under way.
    /// It is admitted as established if the rules allow the connection it
    /// belongs to, oriented so that the side on an FTP control port is the
    /// server. No NAT: a mapping the gateway never made cannot be guessed.
    fn pickup<S: Sink>(&mut self, cx: &mut Cx<'_, S>, ingress: IfIndex, frame: &mut Vec<u8>, m: &mut Meta) -> Verdict {
        let Some(hop) = self.routes.lookup(m.dst) else {
            let detail = format!("no route to {}", m.dst);
            return self.drop(cx, DropReason::NoRoute, None, Some(m), detail);
        };
        let cp = &self.config.ftp.control_ports;
        let from_server = cp.contains(&m.sport) && !cp.contains(&m.dport);
        let (client_side, server_side) = if from_server { (hop.iface, ingress) } else { (ingress, hop.iface) };
        let arrival = tuple_of(m);
        let orig = if from_server { arrival.reversed() } else { arrival };
        let flow = Flow {
            from: client_side,
            to: server_side,
            src: orig.src,
            dst: orig.dst,
            proto: PROTO_TCP,
            dport: orig.dport,
        };
        let decision = policy::evaluate(&self.config.policy, &flow);
        if decision.action == crate::config::Action::Deny {
            let rule = decision.rule.map(|i| self.config.policy.rules[i].name.clone());
            let detail = "connection under way (picked up), not allowed by the rules".to_string();
            return self.drop(cx, DropReason::Policy, rule, Some(m), detail);
        }
        let now = self.now;
        let conn = Conn {
            orig,
            reply: orig.reversed(),
            state: State::Established,
            expires: now.saturating_add(self.config.timeouts.tcp_established),
            ifaces: [client_side as u8, server_side as u8],
            macs: [[0; 6]; 2],
            tcp: [TcpDir::default(); 2],
            alg: None,
            parent: None,
            ended: false,
        };
        let ifname = |i: IfIndex| self.ifnames[i].clone();
        cx.event(
            now,
            EventKind::ConnectionNew {
                protocol: "tcp",
                src: Endpoint::from((orig.src, orig.sport)),
                dst: Endpoint::from((orig.dst, orig.dport)),
                from: ifname(client_side),
                to: ifname(server_side),
            },
        );
        self.stats.connections_new += 1;
        let ftp = cp.contains(&orig.dport);
        let id = self.table.insert(conn);
        if ftp {
            let sess = FtpSession::picked_up(id, self.table.get(id).expect("just inserted"));
            let ai = self.add_session(sess);
            self.table.get_mut(id).expect("just inserted").alg = Some(ai);
        }
        let dir = if from_server { Dir::Reply } else { Dir::Orig };
        self.existing(cx, ingress, id, dir, frame, m)
    }

    fn add_session(&mut self, sess: FtpSession) -> u32 {
        match self.ftp_free.pop() {
            Some(i) => {
                self.ftp[i as usize] = Some(Box::new(sess));
                i
            }
            None => {
                self.ftp.push(Some(Box::new(sess)));
                (self.ftp.len() - 1) as u32
            }
        }
    }

    fn session_of(&mut self, control: ConnId) -> Option<&mut FtpSession> {
        let ai = self.table.get(control)?.alg?;
        self.ftp.get_mut(ai as usize)?.as_deref_mut()
    }

    /// An ICMP error about a packet of a known connection travels with that
    /// connection's translation, inner header included (RFC 5508 §4.2).
    fn icmp_error<S: Sink>(&mut self, cx: &mut Cx<'_, S>, frame: &mut [u8], m: &mut Meta) -> Verdict {
        let Some(inner) = m.icmp.and_then(|i| i.inner) else {
            return self.drop(
                cx,
                DropReason::Invalid,
                None,
                Some(m),
                "ICMP error without a readable quoted header".into(),
            );
        };
        let quoted =
            Tuple { src: inner.src, dst: inner.dst, sport: inner.sport, dport: inner.dport, proto: inner.proto };
        // The quoted packet left us as `quoted`; the error comes back the other way.
        let Some((id, dir)) = self.table.lookup(&quoted.reversed()) else {
            return self.drop(
                cx,
                DropReason::NoConnection,
                None,
                Some(m),
                "ICMP error about no known connection".into(),
            );
        };
        let conn = self.table.get(id).expect("lookup hit");
        let (arr, dep) = conn.translation(dir);
        let (egress, next_mac) = (conn.egress(dir), conn.macs[dir.idx()]);
        if m.src == arr.src && m.src != dep.src {
            setters::set_src_ip(frame, m, dep.src);
        }
        if m.dst != dep.dst {
            setters::set_dst_ip(frame, m, dep.dst);
        }
        if inner.src != dep.dst {
            setters::set_inner_src_ip(frame, m, dep.dst);
        }
        if inner.dst != dep.src {
            setters::set_inner_dst_ip(frame, m, dep.src);
        }
        if inner.sport != dep.dport {
            setters::set_inner_sport(frame, m, dep.dport);
        }
        if inner.dport != dep.sport {
            setters::set_inner_dport(frame, m, dep.sport);
        }
        self.emit(cx, frame, m, egress, next_mac)
    }

    /// A fragment after the first: no ports to look at, so it follows the
    /// verdict its first fragment got (tracked by fragment id, not reassembled).
    fn later_fragment<S: Sink>(&mut self, cx: &mut Cx<'_, S>, frame: &mut [u8], m: &mut Meta) -> Verdict {
        let f = m.frag.expect("later fragment has frag info");
        let state = self.frags.get(&(m.src, m.dst, m.proto, f.id)).copied();
        match state.map(|s| s.outcome) {
            Some(Ok((id, dir))) => {
                let Some(conn) = self.table.get(id) else {
                    return self.drop(
                        cx,
                        DropReason::NoConnection,
                        None,
                        Some(m),
                        "fragment of an ended connection".into(),
                    );
                };
                let (arr, dep) = conn.translation(dir);
                let (egress, next_mac) = (conn.egress(dir), conn.macs[dir.idx()]);
                if arr.src != dep.src {
                    setters::set_src_ip(frame, m, dep.src);
                }
                if arr.dst != dep.dst {
                    setters::set_dst_ip(frame, m, dep.dst);
                }
                if m.ttl <= 1 {
                    return self.drop(
                        cx,
                        DropReason::TtlExceeded,
                        None,
                        Some(m),
                        "TTL expired in transit (fragment)".into(),
                    );
                }
                self.emit(cx, frame, m, egress, next_mac)
            }
            Some(Err(r)) => {
                let detail = format!("fragment of a datagram whose first fragment was dropped ({})", r.as_str());
                self.drop(cx, r, None, Some(m), detail)
            }
            None => self.drop(
                cx,
                DropReason::Invalid,
                None,
                Some(m),
                format!("fragment (offset {}) arrived before the first fragment of datagram {}", f.offset, f.id),
            ),
        }
    }

    /// Decrement TTL, set MACs, hand the frame back for transmission. Live,
    /// a frame whose next hop has no known MAC waits for ARP / neighbour
    /// discovery; in replay it keeps the capture's destination MAC.
    fn emit<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        frame: &mut [u8],
        m: &mut Meta,
        egress: IfIndex,
        next_mac: Mac,
    ) -> Verdict {
        setters::dec_ttl(frame, m);
        let mut dst_mac = next_mac;
        if dst_mac == [0; 6] {
            let hop = self.routes.lookup(m.dst).map_or(m.dst, |h| h.next_hop);
            match self.neighbors.get(&(egress, hop)).map(|m| *m) {
                Some(mac) => dst_mac = mac,
                None if self.resolve => {
                    setters::set_macs(frame, m, self.macs[egress], [0; 6]);
                    self.queue_for_neighbor(cx, egress, hop, frame);
                    return Verdict::Consumed;
                }
                None => dst_mac = m.eth_dst,
            }
        }
        setters::set_macs(frame, m, self.macs[egress], dst_mac);
        Verdict::Forward(egress)
    }

    /// Hold a frame until `hop` answers; ask for it the first time.
    fn queue_for_neighbor<S: Sink>(&mut self, cx: &mut Cx<'_, S>, iface: IfIndex, hop: IpAddr, frame: &[u8]) {
        let now = self.now;
        let first = !self.unresolved.contains_key(&(iface, hop));
        let entry = self.unresolved.entry((iface, hop)).or_insert_with(|| Unresolved {
            frames: Vec::new(),
            tries: 0,
            next_try: now,
        });
        // Like Linux's unres_qlen: a few frames wait, the oldest give way.
        if entry.frames.len() >= NEIGH_QUEUE {
            entry.frames.remove(0);
        }
        entry.frames.push((frame.to_vec(), cx.packet));
        if first {
            self.solicit(cx, iface, hop);
        }
    }

    fn solicit<S: Sink>(&mut self, cx: &mut Cx<'_, S>, iface: IfIndex, hop: IpAddr) {
        let Some(ours) = route::iface_address(&self.config, iface, hop) else { return };
        let req = match (ours, hop) {
            (IpAddr::V4(o), IpAddr::V4(t)) => build::arp_request(self.macs[iface], o, t),
            (IpAddr::V6(o), IpAddr::V6(t)) => build::neighbor_solicit(self.macs[iface], o, t),
            _ => return,
        };
        cx.transmit(iface, &req);
        if let Some(u) = self.unresolved.get_mut(&(iface, hop)) {
            u.tries += 1;
            u.next_try = self.now.saturating_add(Duration::from_secs(1));
        }
    }

    /// A neighbour became known: send what waited for it.
    fn learned<S: Sink>(&mut self, cx: &mut Cx<'_, S>, iface: IfIndex, ip: IpAddr, mac: Mac) {
        self.neighbors.insert((iface, ip), mac);
        if let Some(u) = self.unresolved.remove(&(iface, ip)) {
            for (mut f, _) in u.frames {
                if f.len() >= 6 {
                    f[0..6].copy_from_slice(&mac);
                }
                cx.transmit(iface, &f);
            }
        }
    }

    /// Retry or give up on neighbours that have not answered.
    fn retry_neighbors<S: Sink>(&mut self, cx: &mut Cx<'_, S>) {
        // Another worker may have learned the answer (it went to worker 0).
        let known: Vec<((IfIndex, IpAddr), Mac)> =
            self.unresolved.keys().filter_map(|k| self.neighbors.get(k).map(|m| (*k, *m))).collect();
        for ((iface, ip), mac) in known {
            self.learned(cx, iface, ip, mac);
        }
        let now = self.now;
        let due: Vec<(IfIndex, IpAddr)> =
            self.unresolved.iter().filter(|(_, u)| u.next_try <= now).map(|(k, _)| *k).collect();
        for (iface, hop) in due {
            let tries = self.unresolved.get(&(iface, hop)).map_or(0, |u| u.tries);
            if tries >= NEIGH_TRIES {
                let u = self.unresolved.remove(&(iface, hop)).expect("listed");
                for (_, packet) in u.frames {
                    self.stats.dropped[DropReason::NoRoute as usize] += 1;
                    let ev = EventKind::Drop {
                        reason: DropReason::NoRoute,
                        rule: None,
                        session: None,
                        src: None,
                        dst: None,
                        detail: format!(
                            "next hop {hop} did not answer {} requests",
                            if hop.is_ipv4() { "ARP" } else { "neighbour" }
                        ),
                    };
                    let packet = (packet != 0).then_some(packet);
                    cx.sink.event(Event::new(now, packet, ev));
                }
            } else {
                self.solicit(cx, iface, hop);
            }
        }
    }

    fn ttl_exceeded<S: Sink>(&mut self, cx: &mut Cx<'_, S>, ingress: IfIndex, frame: &[u8], m: &Meta) -> Verdict {
        if let Some(from) = route::iface_address(&self.config, ingress, m.src).or_else(|| self.any_address(m.src)) {
            let reply = build::icmp_time_exceeded(frame, m, from, self.macs[ingress], m.eth_src);
            cx.transmit(ingress, &reply);
        }
        self.drop(cx, DropReason::TtlExceeded, None, Some(m), format!("TTL expired in transit (ttl {})", m.ttl))
    }

    fn echo_reply<S: Sink>(&mut self, cx: &mut Cx<'_, S>, ingress: IfIndex, frame: &mut [u8], m: &mut Meta) -> Verdict {
        build::echo_reply_in_place(frame, m);
        cx.transmit(ingress, frame);
        Verdict::Consumed
    }

    fn on_arp<S: Sink>(&mut self, cx: &mut Cx<'_, S>, ingress: IfIndex, a: &Arp) -> Verdict {
        if !a.spa.is_unspecified() {
            self.learned(cx, ingress, IpAddr::V4(a.spa), a.sha);
        }
        let ours = self.routes.local_iface(IpAddr::V4(a.tpa)) == Some(ingress);
        if a.op == 1 && ours {
            let reply = build::arp_reply(a, self.macs[ingress]);
            cx.transmit(ingress, &reply);
        }
        // ARP is link-local: the gateway learns from it and never forwards it.
        Verdict::Consumed
    }

    /// Multicast and broadcast stay on their link. Neighbour discovery is the
    /// gateway's business; anything else is not routed.
    fn on_link_scope<S: Sink>(&mut self, cx: &mut Cx<'_, S>, ingress: IfIndex, frame: &[u8], m: &Meta) -> Verdict {
        if m.proto == PROTO_ICMPV6 {
            if let Some(icmp) = m.icmp {
                if (133..=137).contains(&icmp.ty) {
                    self.on_nd(cx, ingress, frame, m, icmp.ty);
                    return Verdict::Consumed;
                }
            }
        }
        let detail = format!("{} is a multicast/broadcast destination; not routed", m.dst);
        self.drop(cx, DropReason::Unsupported, None, Some(m), detail)
    }

    fn on_nd<S: Sink>(&mut self, cx: &mut Cx<'_, S>, ingress: IfIndex, frame: &[u8], m: &Meta, ty: u8) {
        if !m.src.is_unspecified() {
            self.learned(cx, ingress, m.src, m.eth_src);
        }
        // Neighbour solicitation: type, code, checksum, reserved(4), target(16).
        if ty == 135 {
            if let (Some(t), IpAddr::V6(src)) = (frame.get(m.l4 + 8..m.l4 + 24), m.src) {
                let target = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(t).expect("16 bytes"));
                if self.routes.local_iface(IpAddr::V6(target)) == Some(ingress) && !src.is_unspecified() {
                    let na = build::neighbor_advert(self.macs[ingress], target, m.eth_src, src);
                    cx.transmit(ingress, &na);
                }
            }
        }
    }

    fn end_conn<S: Sink>(&mut self, cx: &mut Cx<'_, S>, id: ConnId, reason: EndReason) {
        if let Some(ai) = self.table.get(id).and_then(|c| c.alg) {
            self.close_pinholes(cx, ai);
            self.ftp[ai as usize] = None;
            self.ftp_free.push(ai);
        }
        if let Some(conn) = self.table.remove(id) {
            if !conn.ended {
                let ev = end_event(&self.ifnames, &conn, reason);
                cx.event(self.now, ev);
            }
        }
    }

    fn drop<S: Sink>(
        &mut self,
        cx: &mut Cx<'_, S>,
        reason: DropReason,
        rule: Option<String>,
        m: Option<&Meta>,
        detail: String,
    ) -> Verdict {
        let (src, dst) = match m {
            Some(m) => (Some(Endpoint::from((m.src, m.sport))), Some(Endpoint::from((m.dst, m.dport)))),
            None => (None, None),
        };
        cx.event(self.now, EventKind::Drop { reason, rule, session: None, src, dst, detail });
        Verdict::Drop(reason)
    }

    fn timeout_for(&self, proto: u8) -> Duration {
        let t = &self.config.timeouts;
        match proto {
            PROTO_TCP => t.tcp_transitory,
            PROTO_UDP => t.udp,
            PROTO_ICMP | PROTO_ICMPV6 => t.icmp,
            _ => t.udp,
        }
    }

    fn next_hop_mac(&self, iface: IfIndex, ip: IpAddr) -> Option<Mac> {
        self.neighbors.get(&(iface, ip)).map(|m| *m)
    }

    fn any_address(&self, like: IpAddr) -> Option<IpAddr> {
        (0..self.config.interfaces.len()).find_map(|i| route::iface_address(&self.config, i, like))
    }
}

/// Per-call context: the input frame's index and the output sink.
struct Cx<'a, S: Sink> {
    packet: u64,
    sink: &'a mut S,
    generated: u64,
}

impl<S: Sink> Cx<'_, S> {
    fn event(&mut self, now: Nanos, kind: EventKind) {
        let packet = (self.packet != 0).then_some(self.packet);
        self.sink.event(Event::new(now, packet, kind));
    }
    fn transmit(&mut self, iface: IfIndex, frame: &[u8]) {
        self.generated += 1;
        self.sink.transmit(iface, frame);
    }
}

/// Rewrite a packet of `conn` going in `dir` to its departure tuple. The
/// packet carries the arrival tuple (it was looked up by it), so "nothing to
/// change" is "the departure tuple is the packet's own": the same as
/// `!conn.is_nat()`, without building and comparing reversed tuples.
#[inline]
fn apply_translation(frame: &mut [u8], m: &mut Meta, conn: &Conn, dir: Dir) {
    // The departure tuple is the other key, reversed.
    let other = if dir == Dir::Orig { &conn.reply } else { &conn.orig };
    if m.sport == other.dport && m.dport == other.sport && m.src == other.dst && m.dst == other.src {
        return;
    }
    let dep = other.reversed();
    if m.icmp.is_some() {
        // One identifier, carried in the tuple as both ports.
        if m.src != dep.src {
            setters::set_src_ip(frame, m, dep.src);
        }
        if m.dst != dep.dst {
            setters::set_dst_ip(frame, m, dep.dst);
        }
        let id = if dir == Dir::Orig { dep.sport } else { dep.dport };
        if m.sport != id {
            setters::set_src_port(frame, m, id);
        }
        return;
    }
    setters::translate(frame, m, (dep.src, dep.sport), (dep.dst, dep.dport));
}

fn ifnames(cfg: &Config) -> Vec<std::sync::Arc<str>> {
    cfg.interfaces.iter().map(|i| i.name.as_str().into()).collect()
}

fn end_event(names: &[std::sync::Arc<str>], conn: &Conn, reason: EndReason) -> EventKind {
    EventKind::ConnectionEnd {
        protocol: proto_name(conn.orig.proto),
        src: (conn.orig.src, conn.orig.sport).into(),
        dst: (conn.orig.dst, conn.orig.dport).into(),
        from: names[conn.iface(0)].clone(),
        to: names[conn.iface(1)].clone(),
        reason,
    }
}

/// The connection-table tuple of a packet. An ICMP echo's identifier stands in
/// for both ports, so request and reply map to one connection.
#[inline]
fn tuple_of(m: &Meta) -> Tuple {
    Tuple { src: m.src, dst: m.dst, sport: m.sport, dport: m.dport, proto: m.proto }
}

fn is_icmp_error(v6: bool, ty: u8) -> bool {
    if v6 {
        ty < 128
    } else {
        matches!(ty, 3 | 4 | 5 | 11 | 12)
    }
}

fn is_nd(m: &Meta) -> bool {
    m.proto == PROTO_ICMPV6 && m.icmp.is_some_and(|i| (133..=137).contains(&i.ty))
}

fn is_link_scope(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

fn proto_matches(p: Protocol, proto: u8) -> bool {
    match p {
        Protocol::Any => true,
        Protocol::Tcp => proto == PROTO_TCP,
        Protocol::Udp => proto == PROTO_UDP,
        Protocol::Icmp => proto == PROTO_ICMP || proto == PROTO_ICMPV6,
    }
}

pub fn proto_name(proto: u8) -> &'static str {
    match proto {
        PROTO_TCP => "tcp",
        PROTO_UDP => "udp",
        PROTO_ICMP => "icmp",
        PROTO_ICMPV6 => "icmpv6",
        47 => "gre",
        50 => "esp",
        51 => "ah",
        132 => "sctp",
        _ => "other",
    }
}

fn flag_names(flags: u8) -> String {
    let names = [
        (tcp_flags::SYN, "SYN"),
        (tcp_flags::ACK, "ACK"),
        (tcp_flags::FIN, "FIN"),
        (tcp_flags::RST, "RST"),
        (tcp_flags::PSH, "PSH"),
    ];
    let v: Vec<&str> = names.iter().filter(|(b, _)| flags & b != 0).map(|&(_, n)| n).collect();
    if v.is_empty() {
        "segment without flags".into()
    } else {
        v.join("+")
    }
}
