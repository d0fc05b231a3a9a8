//! The connection table: every connection keyed twice, by the tuple its
//! initiator's packets carry on arrival (`Dir::Orig`) and by the tuple the
//! replies carry on arrival (`Dir::Reply`, after NAT). A lookup answers both
//! "is this known" and "which way is it going" in one probe.
//!
//! A plain owned table with a seeded hash: each worker owns its table, so no
//! locks on the per-frame path. The index is our own open-addressing array
//! of 8-byte (hash tag, slot) entries; the key itself is compared against the
//! connection the slot points to, which the frame needs next anyway. Owning
//! the index lets a burst of frames prefetch their entries before probing
//! (`Table::prefetch_index`, `Table::prefetch_conn`): at a million
//! connections each probe is a cache miss, and overlapping them is most of
//! the per-frame cost.

use std::collections::HashMap;
use std::hash::BuildHasher;

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::config::{IfIndex, Timeouts};
use crate::time::Nanos;
use crate::wire::{tcp_flags, Mac};

/// A flow as seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    pub fn reversed(&self) -> Tuple {
        Tuple { src: self.dst, dst: self.src, sport: self.dport, dport: self.sport, proto: self.proto }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Dir {
    Orig = 0,
    Reply = 1,
}

impl Dir {
    pub fn flip(self) -> Dir {
        match self {
            Dir::Orig => Dir::Reply,
            Dir::Reply => Dir::Orig,
        }
    }
    pub fn idx(self) -> usize {
        self as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// UDP/ICMP/other: seen one way only.
    New,
    /// UDP/ICMP/other: seen both ways.
    Replied,
    SynSent,
    SynRecv,
    Established,
    /// One side has sent FIN.
    FinWait,
    /// Both sides sent FIN; lingering to absorb the last ACKs and retransmissions.
    TimeWait,
    /// Reset; lingering briefly.
    Close,
}

impl State {
    /// The connection is over for the log (its `connection_end` has been emitted).
    pub fn is_closed(self) -> bool {
        matches!(self, State::TimeWait | State::Close)
    }
}

/// Per-direction TCP sequence tracking, after Guido van Rooij's "Real Stateful
/// TCP Packet Filtering in IP Filter", as Linux conntrack does it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDir {
    /// Highest sequence number this side has sent, plus one.
    pub end: u32,
    /// Highest sequence number the other side has allowed this side to send.
    pub maxend: u32,
    /// Largest window the other side has advertised (scaled), at least 1.
    pub maxwin: u32,
    pub scale: u8,
    /// This side's SYN carried a window-scale option.
    pub scaled: bool,
    pub init: bool,
    pub fin: bool,
}

/// Index of a connection in the table's slab.
pub type ConnId = u32;

#[derive(Clone, Debug)]
pub struct Conn {
    pub orig: Tuple,
    pub reply: Tuple,
    pub state: State,
    pub expires: Nanos,
    /// [interface the initiator is on, interface the responder is on]
    /// (`IfIndex` values, narrowed: a gateway has far fewer than 256).
    pub ifaces: [u8; 2],
    /// Next-hop MAC for each direction ([toward the responder, toward the initiator]),
    /// learned from the frames themselves; all-zero while unknown.
    pub macs: [Mac; 2],
    pub tcp: [TcpDir; 2],
    /// Index of the FTP ALG state when this is an FTP control connection.
    pub alg: Option<u32>,
    /// Set on data connections admitted by a pinhole: the control connection.
    pub parent: Option<ConnId>,
    pub ended: bool,
}

impl Conn {
    /// A connection between interfaces 0 and 1 with nothing else set, for
    /// unit tests of the table and of the ALG.
    #[cfg(test)]
    pub(crate) fn for_test(orig: Tuple, reply: Tuple, state: State) -> Conn {
        Conn {
            orig,
            reply,
            state,
            expires: Nanos(0),
            ifaces: [0, 1],
            macs: [[0; 6]; 2],
            tcp: [TcpDir::default(); 2],
            alg: None,
            parent: None,
            ended: false,
        }
    }

    /// Source address/port NAT changes for packets going in `dir`, if any.
    pub fn snat(&self, dir: Dir) -> Option<(IpAddr, u16)> {
        let (from, to) = self.translation(dir);
        (from.src != to.src || from.sport != to.sport).then_some((to.src, to.sport))
    }
    /// Destination NAT for packets going in `dir`, if any.
    pub fn dnat(&self, dir: Dir) -> Option<(IpAddr, u16)> {
        let (from, to) = self.translation(dir);
        (from.dst != to.dst || from.dport != to.dport).then_some((to.dst, to.dport))
    }
    /// (tuple on arrival, tuple on departure) for packets going in `dir`.
    pub fn translation(&self, dir: Dir) -> (Tuple, Tuple) {
        match dir {
            Dir::Orig => (self.orig, self.reply.reversed()),
            Dir::Reply => (self.reply, self.orig.reversed()),
        }
    }
    pub fn is_nat(&self) -> bool {
        self.orig != self.reply.reversed()
    }
    /// Egress interface for packets going in `dir`.
    pub fn egress(&self, dir: Dir) -> IfIndex {
        match dir {
            Dir::Orig => self.ifaces[1] as IfIndex,
            Dir::Reply => self.ifaces[0] as IfIndex,
        }
    }

    /// The interface on `side` 0 (initiator) or 1 (responder).
    pub fn iface(&self, side: usize) -> IfIndex {
        self.ifaces[side] as IfIndex
    }
}

/// (slot << 1) | dir
type Slot = u32;

/// An open-addressing (linear probing) index from tuple hash to slot.
///
/// Each entry is `tag << 32 | (slot + 1)`, 0 when empty; `tag` is the high
/// half of the hash and also picks the home position (`tag & mask`), so a
/// deletion can shift later entries back without tombstones and without
/// rehashing their keys. Eight entries share a cache line, so a probe
/// sequence rarely leaves the line its home is on; load stays at most 3/4.
struct Index {
    entries: Vec<u64>,
    mask: usize,
    len: usize,
}

impl Index {
    fn with_keys(keys: usize) -> Index {
        let cap = (keys.max(8) * 4 / 3 + 1).next_power_of_two();
        let entries = vec![0; cap];
        advise_huge_pages(&entries);
        Index { entries, mask: cap - 1, len: 0 }
    }

    #[inline(always)]
    fn home(&self, h: u64) -> usize {
        (h >> 32) as usize & self.mask
    }

    #[inline]
    fn find(&self, h: u64, mut eq: impl FnMut(Slot) -> bool) -> Option<Slot> {
        let tag = h >> 32;
        let mut i = self.home(h);
        loop {
            // SAFETY: i is masked to the length, a power of two.
            let e = unsafe { *self.entries.get_unchecked(i) };
            if e == 0 {
                return None;
            }
            if e >> 32 == tag {
                let slot = (e as u32).wrapping_sub(1);
                if eq(slot) {
                    return Some(slot);
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The first slot whose tag matches, without comparing keys (for prefetching).
    #[inline]
    fn candidate(&self, h: u64) -> Option<Slot> {
        let tag = h >> 32;
        let mut i = self.home(h);
        for _ in 0..8 {
            let e = self.entries[i];
            if e == 0 {
                return None;
            }
            if e >> 32 == tag {
                return Some((e as u32).wrapping_sub(1));
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    fn insert(&mut self, h: u64, slot: Slot) {
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
        }
        self.put(h, slot);
        self.len += 1;
    }

    fn put(&mut self, h: u64, slot: Slot) {
        let mut i = self.home(h);
        while self.entries[i] != 0 {
            i = (i + 1) & self.mask;
        }
        self.entries[i] = (h >> 32) << 32 | (slot as u64 + 1);
    }

    fn grow(&mut self) {
        let old = std::mem::replace(&mut self.entries, vec![0; (self.mask + 1) * 2]);
        advise_huge_pages(&self.entries);
        self.mask = self.entries.len() - 1;
        for e in old.into_iter().filter(|&e| e != 0) {
            // The tag is the hash's high half, all that `home` and `put` use.
            self.put(e & !0xffff_ffff, (e as u32).wrapping_sub(1));
        }
    }

    fn remove(&mut self, h: u64, slot: Slot) -> bool {
        let want = (h >> 32) << 32 | (slot as u64 + 1);
        let mut i = self.home(h);
        loop {
            let e = self.entries[i];
            if e == 0 {
                return false;
            }
            if e == want {
                break;
            }
            i = (i + 1) & self.mask;
        }
        // Backward shift: pull later entries of the run into the hole when
        // their home is not between the hole and where they sit.
        let mut hole = i;
        let mut j = (i + 1) & self.mask;
        loop {
            let e = self.entries[j];
            if e == 0 {
                break;
            }
            let home = (e >> 32) as usize & self.mask;
            if j.wrapping_sub(home) & self.mask >= j.wrapping_sub(hole) & self.mask {
                self.entries[hole] = e;
                hole = j;
            }
            j = (j + 1) & self.mask;
        }
        self.entries[hole] = 0;
        self.len -= 1;
        true
    }

    #[inline(always)]
    fn prefetch(&self, h: u64) {
        prefetch(self.entries.as_ptr().wrapping_add(self.home(h)) as *const u8);
    }
}

/// Ask the CPU to start loading the line at `p`; a hint, never a fault.
#[inline(always)]
pub(crate) fn prefetch(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it does not dereference or fault on any address.
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Ask the kernel for transparent huge pages under a large array. Every
/// frame touches a random index entry and a random connection: on 4 KiB
/// pages nearly every one of those is also a TLB miss and a page walk (the
/// more so under nested paging), which prefetching overlaps but does not
/// remove. Only a hint; without THP (or on other systems) nothing changes.
fn advise_huge_pages<T>(v: &Vec<T>) {
    const HUGE: usize = 2 << 20;
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes < HUGE {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = v.as_ptr() as usize;
        let (from, to) = ((start + 4095) & !4095, (start + bytes) & !4095);
        if to > from {
            // SAFETY: the range lies inside the vector's own allocation (rounded
            // inward to whole pages); MADV_HUGEPAGE changes no contents.
            unsafe { libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE) };
        }
    }
}

/// Up to this many connections' worth of index and slab is reserved at start
/// (`Table::new`); beyond it the table grows by doubling.
const PRESIZE_MAX: usize = 1 << 23;

/// The table's tuple hash, to compute on another thread (replay's reading
/// thread hashes frames ahead of the engine's): equal to `Table::hash` of
/// the table it came from.
#[derive(Clone)]
pub struct TupleHasher(foldhash::quality::SeedableRandomState);

impl TupleHasher {
    #[inline]
    pub fn hash(&self, t: &Tuple) -> u64 {
        hash_tuple(&self.0, t)
    }
}

pub struct Table {
    index: Index,
    hasher: foldhash::quality::SeedableRandomState,
    conns: Vec<Option<Conn>>,
    free: Vec<ConnId>,
    live: usize,
    sweep_cursor: usize,
    /// Connections per source address, kept here with one worker and in
    /// `shared` (the gateway's counts, which the limits apply to) with several.
    per_source: HashMap<IpAddr, u32, foldhash::fast::RandomState>,
    shared: Option<SharedCounts>,
}

/// Connections counted across the tables of every worker of one gateway,
/// so `limits.max_connections` and `max_connections_per_source` bound the
/// gateway and not each worker: a source whose connections the dispatch
/// spreads over N workers would otherwise get N times its limit.
#[derive(Clone, Default)]
pub struct SharedCounts {
    total: Arc<AtomicUsize>,
    per_source: Arc<DashMap<IpAddr, u32, foldhash::fast::RandomState>>,
}

impl SharedCounts {
    fn add(&self, src: IpAddr) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self.per_source.entry(src).or_insert(0) += 1;
    }

    fn sub(&self, src: IpAddr) {
        self.total.fetch_sub(1, Ordering::Relaxed);
        // The entry's guard is dropped before `remove_if` takes the shard again.
        let now_zero = match self.per_source.get_mut(&src) {
            Some(mut n) => {
                *n = n.saturating_sub(1);
                *n == 0
            }
            None => false,
        };
        if now_zero {
            self.per_source.remove_if(&src, |_, n| *n == 0);
        }
    }
}

pub enum Lookup {
    Hit(ConnId, Dir),
    Miss,
}

impl Table {
    /// A table sized for `capacity` connections (up to `PRESIZE_MAX`), so that
    /// reaching it never rehashes the index or moves the slab under load.
    /// Reserved memory the table has not used yet is never touched, so it
    /// costs address space, not resident memory.
    pub fn new(seed: u64, capacity: usize) -> Table {
        let hasher = foldhash::quality::SeedableRandomState::with_seed(seed, foldhash::SharedSeed::global_fixed());
        let capacity = capacity.min(PRESIZE_MAX);
        let conns = Vec::with_capacity(capacity);
        advise_huge_pages(&conns);
        Table {
            index: Index::with_keys(capacity * 2),
            hasher,
            conns,
            free: Vec::new(),
            live: 0,
            sweep_cursor: 0,
            per_source: HashMap::default(),
            shared: None,
        }
    }

    /// Count this table's connections in `counts` too (shared by every
    /// worker's table); `total` and `count_for_source` then answer for all.
    pub fn share_counts(&mut self, counts: SharedCounts) {
        for c in self.conns.iter().flatten() {
            counts.add(c.orig.src);
        }
        self.per_source = HashMap::default();
        self.shared = Some(counts);
    }

    /// Connections of the whole gateway (every worker's table, when shared).
    pub fn total(&self) -> usize {
        match &self.shared {
            Some(s) => s.total.load(Ordering::Relaxed),
            None => self.live,
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Connections currently counted against `src` (for `max_connections_per_source`).
    pub fn count_for_source(&self, src: IpAddr) -> u32 {
        if let Some(s) = &self.shared {
            return s.per_source.get(&src).map_or(0, |n| *n);
        }
        self.per_source.get(&src).copied().unwrap_or(0)
    }

    /// The hash `lookup_hashed` and the prefetches take.
    #[inline]
    pub fn hash(&self, t: &Tuple) -> u64 {
        hash_tuple(&self.hasher, t)
    }

    /// `hash`, as a value that can go to another thread. The seed is fixed
    /// at `new`: growing the table keeps it.
    pub fn hasher(&self) -> TupleHasher {
        TupleHasher(self.hasher.clone())
    }

    #[inline]
    pub fn lookup(&self, t: &Tuple) -> Option<(ConnId, Dir)> {
        self.lookup_hashed(t, self.hash(t))
    }

    /// `lookup` with `h = self.hash(t)` already computed.
    #[inline]
    pub fn lookup_hashed(&self, t: &Tuple, h: u64) -> Option<(ConnId, Dir)> {
        let conns = &self.conns;
        let slot = self.index.find(h, |s| slot_tuple(conns, s) == Some(t))?;
        let dir = if slot & 1 == 0 { Dir::Orig } else { Dir::Reply };
        Some((slot >> 1, dir))
    }

    /// Start loading the index entry for hash `h` (first stage of a burst).
    #[inline(always)]
    pub fn prefetch_index(&self, h: u64) {
        self.index.prefetch(h);
    }

    /// Start loading the connection the index entry for `h` most likely
    /// points to (second stage, once `prefetch_index` has had time to land).
    #[inline]
    pub fn prefetch_conn(&self, h: u64) {
        if let Some(slot) = self.index.candidate(h) {
            let id = (slot >> 1) as usize;
            if id < self.conns.len() {
                let p = self.conns.as_ptr().wrapping_add(id) as *const u8;
                let size = std::mem::size_of::<Option<Conn>>();
                // Every line the entry spans: the fast path reads most of it.
                let mut off = 0;
                while off < size {
                    prefetch(p.wrapping_add(off));
                    off += 64;
                }
                prefetch(p.wrapping_add(size - 1));
            }
        }
    }

    /// True when `t` is in use as either key of some connection.
    pub fn contains(&self, t: &Tuple) -> bool {
        self.lookup(t).is_some()
    }

    #[inline]
    pub fn get(&self, id: ConnId) -> Option<&Conn> {
        self.conns.get(id as usize).and_then(|c| c.as_ref())
    }

    #[inline]
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id as usize).and_then(|c| c.as_mut())
    }

    /// Insert a connection. The caller has checked that neither tuple is in use.
    pub fn insert(&mut self, conn: Conn) -> ConnId {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let cap = self.conns.capacity();
                self.conns.push(None);
                if self.conns.capacity() != cap {
                    advise_huge_pages(&self.conns);
                }
                (self.conns.len() - 1) as ConnId
            }
        };
        let (orig, reply) = (conn.orig, conn.reply);
        match &self.shared {
            Some(s) => s.add(conn.orig.src),
            None => *self.per_source.entry(conn.orig.src).or_insert(0) += 1,
        }
        self.conns[id as usize] = Some(conn);
        let (ho, hr) = (self.hash(&orig), self.hash(&reply));
        self.index.insert(ho, (id << 1) | Dir::Orig as u32);
        self.index.insert(hr, (id << 1) | Dir::Reply as u32);
        self.live += 1;
        id
    }

    pub fn remove(&mut self, id: ConnId) -> Option<Conn> {
        let (orig, reply) = {
            let c = self.conns.get(id as usize)?.as_ref()?;
            (c.orig, c.reply)
        };
        let (ho, hr) = (self.hash(&orig), self.hash(&reply));
        self.index.remove(ho, id << 1);
        self.index.remove(hr, (id << 1) | 1);
        let conn = self.conns[id as usize].take()?;
        if let Some(s) = &self.shared {
            s.sub(conn.orig.src);
        } else if let Some(n) = self.per_source.get_mut(&conn.orig.src) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&conn.orig.src);
            }
        }
        self.free.push(id);
        self.live -= 1;
        Some(conn)
    }

    /// Visit up to `budget` slots from where the last sweep stopped and return
    /// the connections whose time has passed. Amortises expiry over many ticks
    /// so that no tick walks a million entries.
    pub fn sweep(&mut self, now: Nanos, budget: usize, expired: &mut Vec<ConnId>) {
        let n = self.conns.len();
        if n == 0 {
            return;
        }
        for _ in 0..budget.min(n) {
            if self.sweep_cursor >= n {
                self.sweep_cursor = 0;
            }
            if let Some(c) = &self.conns[self.sweep_cursor] {
                if c.expires <= now {
                    expired.push(self.sweep_cursor as ConnId);
                }
            }
            self.sweep_cursor += 1;
        }
    }

    /// Iterate live connections (admin and tests; not the per-frame path).
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &Conn)> {
        self.conns.iter().enumerate().filter_map(|(i, c)| c.as_ref().map(|c| (i as ConnId, c)))
    }

    /// Heap bytes the table has used so far (for the memory-per-connection
    /// benchmark): the slab and index reserved at start but not yet reached
    /// are left out, as they are never touched and cost no resident memory.
    pub fn heap_bytes(&self) -> usize {
        // Index entries in use are spread over the whole array: all of it counts.
        let index = self.index.entries.len() * 8;
        let per_source =
            (self.per_source.capacity() * 8 / 7).next_power_of_two() * (std::mem::size_of::<(IpAddr, u32)>() + 1);
        index + per_source + self.conns.len() * std::mem::size_of::<Option<Conn>>() + self.free.capacity() * 4
    }
}

/// The tuple a slot stands for: its connection's orig or reply key.
#[inline]
fn slot_tuple(conns: &[Option<Conn>], slot: Slot) -> Option<&Tuple> {
    let c = conns.get((slot >> 1) as usize)?.as_ref()?;
    Some(if slot & 1 == 0 { &c.orig } else { &c.reply })
}

/// The key packed into as few words as possible and hashed in one go: the
/// derived `Hash` of a struct feeds the hasher field by field.
#[inline]
fn hash_tuple(hasher: &foldhash::quality::SeedableRandomState, t: &Tuple) -> u64 {
    let rest = (t.sport as u64) << 24 | (t.dport as u64) << 8 | t.proto as u64;
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let addrs = (u32::from(s) as u64) << 32 | u32::from(d) as u64;
            hasher.hash_one((addrs as u128) << 64 | rest as u128)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => hasher.hash_one((u128::from(s), u128::from(d), rest)),
        // Mixed families never match a connection; any hash will do.
        _ => 0,
    }
}

/// Serial-number comparison (RFC 1982) for 32-bit sequence numbers.
#[inline]
pub fn seq_lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}
#[inline]
pub fn seq_le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// What one TCP segment did to the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpOutcome {
    Ok,
    /// The segment lies outside what either side could legitimately send now.
    OutOfWindow,
    /// The connection just ended (second FIN, or RST).
    Ended(crate::event::EndReason),
}

/// A TCP segment's fields as the tracker needs them.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload_len: u32,
    /// Window-scale option, from SYN / SYN-ACK only.
    pub wscale: Option<u8>,
}

/// Advance the TCP state and window tracking of `conn` for a segment going
/// in `dir`. Sequence numbers are those of the sender's side of the wire
/// (before any ALG shift on this hop).
#[inline]
pub fn track_tcp(conn: &mut Conn, dir: Dir, seg: &Segment, now: Nanos, to: &Timeouts) -> TcpOutcome {
    match track_established(conn, dir, seg, now, to) {
        Some(out) => out,
        None => track_tcp_full(conn, dir, seg, now, to),
    }
}

/// `track_tcp_full` for the segment nearly every frame is: no SYN, FIN or
/// RST, on an established connection whose sides are both known. The state
/// cannot change, so only the window checks and updates remain. None: not
/// such a segment, take the full path.
#[inline(always)]
fn track_established(conn: &mut Conn, dir: Dir, seg: &Segment, now: Nanos, to: &Timeouts) -> Option<TcpOutcome> {
    use tcp_flags::{ACK, FIN, RST, SYN};
    if seg.flags & (SYN | FIN | RST) != 0 || conn.state != State::Established || conn.tcp[0].fin || conn.tcp[1].fin {
        return None;
    }
    let (s, r) = split(&mut conn.tcp, dir);
    if !s.init || !r.init {
        return None;
    }
    let end = seg.seq.wrapping_add(seg.payload_len);
    let win = (seg.window as u32) << s.scale.min(14);
    let slack = r.maxwin.max(1);
    if !(seq_le(seg.seq, s.maxend.wrapping_add(slack)) && seq_lt(s.end.wrapping_sub(slack).wrapping_sub(1), end)) {
        return Some(TcpOutcome::OutOfWindow);
    }
    if seq_lt(s.end, end) {
        s.end = end;
    }
    if seq_lt(s.maxend, s.end) {
        s.maxend = s.end;
    }
    if win > s.maxwin {
        s.maxwin = win;
    }
    if seg.flags & ACK != 0 {
        let allowed = seg.ack.wrapping_add(win.max(1));
        if seq_lt(r.maxend, allowed) {
            r.maxend = allowed;
        }
    }
    conn.expires = now.saturating_add(to.tcp_established);
    Some(TcpOutcome::Ok)
}

fn track_tcp_full(conn: &mut Conn, dir: Dir, seg: &Segment, now: Nanos, to: &Timeouts) -> TcpOutcome {
    let f = seg.flags;
    let syn = f & tcp_flags::SYN != 0;
    let ack = f & tcp_flags::ACK != 0;
    let fin = f & tcp_flags::FIN != 0;
    let rst = f & tcp_flags::RST != 0;

    let end = seg.seq.wrapping_add(seg.payload_len).wrapping_add(syn as u32).wrapping_add(fin as u32);
    let (s, r) = split(&mut conn.tcp, dir);

    if syn && !s.init {
        s.init = true;
        s.end = end;
        s.scale = seg.wscale.unwrap_or(0);
        s.scaled = seg.wscale.is_some();
        s.maxwin = (seg.window as u32).max(1);
        s.maxend = end;
    } else if !s.init {
        // Picked up without this side's SYN (the responder's first segment is
        // its SYN-ACK, so this is unusual): trust the first segment seen.
        s.init = true;
        s.end = end;
        s.maxend = end;
        s.maxwin = (seg.window as u32).max(1);
    } else {
        let win = if syn { seg.window as u32 } else { (seg.window as u32) << s.scale.min(14) };
        // Acceptable: not beyond what the receiver allowed, not older than a
        // window behind what we have seen. Slack of one max window each way
        // keeps lost-capture and window-probe cases from being false alarms.
        if r.init {
            let upper = s.maxend.wrapping_add(r.maxwin.max(1));
            let lower = s.end.wrapping_sub(r.maxwin.max(1)).wrapping_sub(1);
            let in_win = seq_le(seg.seq, upper) && seq_lt(lower, end);
            if !in_win {
                return TcpOutcome::OutOfWindow;
            }
        }
        if seq_lt(s.end, end) {
            s.end = end;
        }
        if seq_lt(s.maxend, s.end) {
            s.maxend = s.end;
        }
        if win > s.maxwin {
            s.maxwin = win;
        }
    }
    // The receiver may now send up to what this side acknowledges plus its window.
    if ack {
        let win = (seg.window as u32) << if syn { 0 } else { s.scale.min(14) };
        let allowed = seg.ack.wrapping_add(win.max(1));
        if r.init && seq_lt(r.maxend, allowed) {
            r.maxend = allowed;
        }
        if r.init && win > s.maxwin {
            s.maxwin = win;
        }
    }
    if syn && ack && dir == Dir::Reply && !(conn.tcp[0].scaled && conn.tcp[1].scaled) {
        // RFC 7323: scaling is on only when both SYNs carried the option.
        conn.tcp[0].scale = 0;
        conn.tcp[1].scale = 0;
    }

    let (timeout, outcome) = next_state(conn, dir, syn, ack, fin, rst);
    conn.expires = now.saturating_add(match timeout {
        StateTimeout::Established => to.tcp_established,
        StateTimeout::Transitory => to.tcp_transitory,
        StateTimeout::Close => std::time::Duration::from_secs(10),
    });
    outcome
}

enum StateTimeout {
    Established,
    Transitory,
    Close,
}

fn next_state(conn: &mut Conn, dir: Dir, syn: bool, ack: bool, fin: bool, rst: bool) -> (StateTimeout, TcpOutcome) {
    use crate::event::EndReason;
    if rst {
        let was_closed = conn.state.is_closed();
        conn.state = State::Close;
        let out = if was_closed { TcpOutcome::Ok } else { TcpOutcome::Ended(EndReason::Rst) };
        return (StateTimeout::Close, out);
    }
    if fin {
        conn.tcp[dir.idx()].fin = true;
    }
    let st = match conn.state {
        State::SynSent if syn && ack && dir == Dir::Reply => State::SynRecv,
        State::SynRecv if ack && !syn && dir == Dir::Orig => State::Established,
        State::Established | State::SynRecv | State::SynSent if fin => State::FinWait,
        s => s,
    };
    let st = if conn.tcp[0].fin && conn.tcp[1].fin && !conn.state.is_closed() { State::TimeWait } else { st };
    let ended = st == State::TimeWait && !conn.state.is_closed();
    conn.state = st;
    let t = match st {
        State::Established => StateTimeout::Established,
        State::Close => StateTimeout::Close,
        _ => StateTimeout::Transitory,
    };
    (t, if ended { TcpOutcome::Ended(EndReason::Fin) } else { TcpOutcome::Ok })
}

fn split(d: &mut [TcpDir; 2], dir: Dir) -> (&mut TcpDir, &mut TcpDir) {
    let (a, b) = d.split_at_mut(1);
    match dir {
        Dir::Orig => (&mut a[0], &mut b[0]),
        Dir::Reply => (&mut b[0], &mut a[0]),
    }
}

/// The window-scale option (kind 3) from a SYN's TCP options, if present.
pub fn tcp_wscale(options: &[u8]) -> Option<u8> {
    let mut i = 0;
    while i < options.len() {
        match options[i] {
            0 => return None,
            1 => i += 1,
            kind => {
                let len = *options.get(i + 1)? as usize;
                if len < 2 || i + len > options.len() {
                    return None;
                }
                if kind == 3 && len == 3 {
                    return Some(options[i + 2].min(14));
                }
                i += len;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tuple(a: &str, sp: u16, b: &str, dp: u16) -> Tuple {
        Tuple { src: a.parse().unwrap(), dst: b.parse().unwrap(), sport: sp, dport: dp, proto: 6 }
    }

    fn conn(orig: Tuple, reply: Tuple) -> Conn {
        Conn::for_test(orig, reply, State::SynSent)
    }

    fn timeouts() -> Timeouts {
        Timeouts {
            tcp_established: Duration::from_secs(432000),
            tcp_transitory: Duration::from_secs(120),
            udp: Duration::from_secs(30),
            icmp: Duration::from_secs(30),
        }
    }

    #[test]
    fn both_keys_find_the_connection_with_direction() {
        let mut t = Table::new(7, 16);
        let orig = tuple("192.0.2.10", 40000, "198.51.100.20", 21);
        let reply = tuple("198.51.100.20", 21, "198.51.100.1", 61000);
        let id = t.insert(conn(orig, reply));
        assert_eq!(t.lookup(&orig), Some((id, Dir::Orig)));
        assert_eq!(t.lookup(&reply), Some((id, Dir::Reply)));
        assert_eq!(t.lookup(&orig.reversed()), None);
        let c = t.get(id).unwrap();
        assert_eq!(c.snat(Dir::Orig), Some(("198.51.100.1".parse().unwrap(), 61000)));
        assert_eq!(c.dnat(Dir::Reply), Some(("192.0.2.10".parse().unwrap(), 40000)));
        assert_eq!(c.dnat(Dir::Orig), None);
        assert_eq!(t.count_for_source(orig.src), 1);
        t.remove(id);
        assert!(t.lookup(&orig).is_none() && t.lookup(&reply).is_none() && t.is_empty());
        assert_eq!(t.count_for_source(orig.src), 0);
    }

    #[test]
    fn ipv6_keys_work_and_slots_are_reused() {
        let mut t = Table::new(1, 0);
        let o = tuple("2001:db8:1::10", 1, "2001:db8:2::20", 2);
        let a = t.insert(conn(o, o.reversed()));
        t.remove(a);
        let b = t.insert(conn(o, o.reversed()));
        assert_eq!(a, b);
        assert_eq!(t.lookup(&o.reversed()), Some((b, Dir::Reply)));
    }

    #[test]
    fn index_survives_growth_and_backward_shift_deletes() {
        // A deterministic mix of inserts and removes from a tiny start: the
        // index grows several times and deletions shift runs back; after
        // every step each live key (both directions) is found and each removed
        // key is not.
        let mut t = Table::new(3, 0);
        let mut live: Vec<(ConnId, Tuple)> = Vec::new();
        let mut gone: Vec<Tuple> = Vec::new();
        let mut x = 0x9e37_79b9_u32;
        for step in 0..3000u32 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if !x.is_multiple_of(3) || live.is_empty() {
                let o = Tuple {
                    src: IpAddr::from([10, 0, (step >> 8) as u8, step as u8]),
                    dst: "203.0.113.9".parse().unwrap(),
                    sport: (x >> 16) as u16 | 1024,
                    dport: 80,
                    proto: 6,
                };
                let r =
                    Tuple { src: o.dst, dst: "198.51.100.1".parse().unwrap(), sport: 80, dport: step as u16, proto: 6 };
                if t.contains(&o) || t.contains(&r) {
                    continue;
                }
                live.push((t.insert(conn(o, r)), o));
            } else {
                let (id, o) = live.swap_remove(x as usize % live.len());
                let c = t.remove(id).expect("live");
                assert_eq!(c.orig, o);
                gone.push(o);
                gone.push(c.reply);
            }
            if step.is_multiple_of(97) || step > 2900 {
                for &(id, o) in &live {
                    assert_eq!(t.lookup(&o), Some((id, Dir::Orig)));
                    let r = t.get(id).unwrap().reply;
                    assert_eq!(t.lookup(&r), Some((id, Dir::Reply)));
                }
                for g in &gone {
                    if let Some((id, _)) = t.lookup(g) {
                        // Only if the same tuple was inserted again since.
                        let c = t.get(id).unwrap();
                        assert!(c.orig == *g || c.reply == *g);
                    }
                }
            }
        }
        assert_eq!(t.len(), live.len());
        assert!(t.index.len == 2 * live.len());
    }

    #[test]
    fn presized_table_does_not_grow_its_index() {
        let mut t = Table::new(5, 1000);
        let cap = t.index.entries.len();
        for i in 0..1000u16 {
            let o = tuple("192.0.2.10", 1000 + i, "198.51.100.20", 80);
            t.insert(conn(o, o.reversed()));
        }
        assert_eq!(t.index.entries.len(), cap);
        assert!(t.index.len * 4 <= cap * 3);
    }

    #[test]
    fn sweep_finds_expired_over_several_ticks() {
        let mut t = Table::new(1, 0);
        for i in 0..10u16 {
            let o = tuple("192.0.2.10", 1000 + i, "198.51.100.20", 80);
            let mut c = conn(o, o.reversed());
            c.expires = Nanos(if i % 2 == 0 { 5 } else { 50 });
            t.insert(c);
        }
        let mut out = Vec::new();
        t.sweep(Nanos(10), 4, &mut out);
        t.sweep(Nanos(10), 4, &mut out);
        t.sweep(Nanos(10), 4, &mut out);
        out.sort();
        out.dedup();
        assert_eq!(out, vec![0, 2, 4, 6, 8]);
    }

    fn seg(seq: u32, ack: u32, flags: u8, len: u32) -> Segment {
        Segment { seq, ack, flags, window: 65535, payload_len: len, wscale: None }
    }

    #[test]
    fn handshake_data_fin_and_junk() {
        use tcp_flags::*;
        let o = tuple("192.0.2.10", 40000, "198.51.100.20", 80);
        let mut c = conn(o, o.reversed());
        let to = timeouts();
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1000, 0, SYN, 0), Nanos(1), &to), TcpOutcome::Ok);
        assert_eq!(track_tcp(&mut c, Dir::Reply, &seg(5000, 1001, SYN | ACK, 0), Nanos(2), &to), TcpOutcome::Ok);
        assert_eq!(c.state, State::SynRecv);
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1001, 5001, ACK, 0), Nanos(3), &to), TcpOutcome::Ok);
        assert_eq!(c.state, State::Established);
        assert_eq!(c.expires, Nanos(3).saturating_add(to.tcp_established));
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1001, 5001, ACK | PSH, 100), Nanos(4), &to), TcpOutcome::Ok);
        // A segment far outside the window (an injected RST with a guessed sequence).
        assert_eq!(
            track_tcp(&mut c, Dir::Reply, &seg(5001u32.wrapping_add(3_000_000_000), 1101, RST, 0), Nanos(5), &to),
            TcpOutcome::OutOfWindow
        );
        assert_eq!(c.state, State::Established);
        // Retransmission of old data is fine.
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1001, 5001, ACK, 100), Nanos(6), &to), TcpOutcome::Ok);
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1101, 5001, ACK | FIN, 0), Nanos(7), &to), TcpOutcome::Ok);
        assert_eq!(c.state, State::FinWait);
        assert_eq!(
            track_tcp(&mut c, Dir::Reply, &seg(5001, 1102, ACK | FIN, 0), Nanos(8), &to),
            TcpOutcome::Ended(crate::event::EndReason::Fin)
        );
        assert_eq!(c.state, State::TimeWait);
        assert_eq!(track_tcp(&mut c, Dir::Orig, &seg(1102, 5002, ACK, 0), Nanos(9), &to), TcpOutcome::Ok);
    }

    #[test]
    fn established_fast_path_agrees_with_the_full_tracker() {
        // Random window states and segments (near the edges of the window as
        // often as not): wherever the fast path answers, the full tracker
        // gives the same outcome and leaves the connection the same.
        let to = timeouts();
        let mut x = 0x2545_f491_u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let o = tuple("192.0.2.10", 40000, "198.51.100.20", 80);
        let mut answered = [0u32; 2];
        for _ in 0..200_000 {
            let mut c = conn(o, o.reversed());
            c.state = [State::Established, State::Established, State::FinWait, State::SynRecv][next() as usize % 4];
            let base = next() as u32;
            for d in c.tcp.iter_mut() {
                let r = next();
                *d = TcpDir {
                    end: base.wrapping_add((r as u32) % 200_000),
                    maxend: base.wrapping_add(((r >> 20) as u32) % 300_000),
                    maxwin: ((r >> 40) as u32) % 70_000,
                    scale: ((r >> 60) as u8) % 15,
                    scaled: true,
                    init: next() % 16 != 0,
                    fin: next() % 16 == 0,
                };
            }
            let r = next();
            let flags =
                [tcp_flags::ACK, tcp_flags::ACK | tcp_flags::PSH, 0, tcp_flags::ACK | tcp_flags::FIN, tcp_flags::RST]
                    [r as usize % 5];
            let seg = Segment {
                seq: base.wrapping_add(((r >> 8) as u32) % 600_000).wrapping_sub(150_000),
                ack: base.wrapping_add(((r >> 28) as u32) % 600_000).wrapping_sub(150_000),
                flags,
                window: (r >> 48) as u16,
                payload_len: (next() % 1500) as u32,
                wscale: None,
            };
            let dir = if next() % 2 == 0 { Dir::Orig } else { Dir::Reply };
            let (mut a, mut b) = (c.clone(), c);
            let Some(fast) = track_established(&mut a, dir, &seg, Nanos(77), &to) else { continue };
            let full = track_tcp_full(&mut b, dir, &seg, Nanos(77), &to);
            assert_eq!(fast, full, "{seg:?} {dir:?} {:?}", b.tcp);
            assert_eq!((a.tcp, a.state), (b.tcp, b.state), "{seg:?} {dir:?}");
            if fast == TcpOutcome::Ok {
                assert_eq!(a.expires, b.expires);
            }
            answered[(fast == TcpOutcome::Ok) as usize] += 1;
        }
        assert!(answered.iter().all(|&n| n > 1000), "both outcomes exercised: {answered:?}");
    }

    #[test]
    fn rst_in_window_ends() {
        use tcp_flags::*;
        let o = tuple("192.0.2.10", 40000, "198.51.100.20", 80);
        let mut c = conn(o, o.reversed());
        let to = timeouts();
        track_tcp(&mut c, Dir::Orig, &seg(1000, 0, SYN, 0), Nanos(1), &to);
        assert_eq!(
            track_tcp(&mut c, Dir::Reply, &seg(0, 1001, RST | ACK, 0), Nanos(2), &to),
            TcpOutcome::Ended(crate::event::EndReason::Rst)
        );
        assert_eq!(c.state, State::Close);
    }

    #[test]
    fn wscale_option() {
        assert_eq!(tcp_wscale(&[2, 4, 5, 0xb4, 1, 3, 3, 7]), Some(7));
        assert_eq!(tcp_wscale(&[1, 1, 0, 3, 3, 7]), None);
        assert_eq!(tcp_wscale(&[3, 3]), None);
        assert_eq!(tcp_wscale(&[8, 0]), None);
    }

    #[test]
    fn serial_arithmetic_wraps() {
        assert!(seq_lt(u32::MAX - 5, 3));
        assert!(!seq_lt(3, u32::MAX - 5));
        assert!(seq_le(7, 7));
    }
}
