//! Memory per connection and a fast-path driver for profilers; criterion is
//! the wrong tool for both.
//!
//!     cargo run --release --example memprobe -- mem 1000 1000000
//!     cargo run --release --example memprobe -- push 1000000 10000000 random both small
//!
//! `mem N…`: for each N, a fresh process-wide baseline, N established
//! connections, then the table's own estimate (`Table::heap_bytes`) and the
//! growth of the resident set, each divided by N. Run one N per process for
//! the cleanest RSS figure (freed memory is not always returned to the OS).
//!
//! `push N FRAMES [seq|random] [out|in|both] [small|large] [one|batch]`: N
//! established connections, then FRAMES data frames through `Engine::process`
//! (`one`, the default) or `Engine::process_batch` in bursts of
//! `engine::BATCH` (`batch`), inside `push_frames` (a separate function, so
//! `valgrind --tool=callgrind --toggle-collect=*push_frames*` counts only
//! this phase). Prints CPU and wall time, the CPU's own counters for the
//! phase when perf events are available, and how many heap allocations the
//! phase made (a counting global allocator; it must be zero).

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use std::mem::size_of;
use std::time::Instant;

use ftpgate::conntrack::{Conn, Tuple};
use ftpgate::engine::{BatchFrame, Engine, Verdict, BATCH};
use ftpgate::time::Nanos;

use fixture::counting::{allocs, Counting};
use fixture::{rss_bytes, shuffled, Flow, Lab, NullSink, Template, Way, INSIDE, LARGE, OUTSIDE, SMALL};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("mem") => {
            let ns: Vec<usize> = args[1..].iter().map(|s| s.parse().expect("N is a number")).collect();
            sizes();
            for n in if ns.is_empty() { vec![1_000, 1_000_000] } else { ns } {
                mem(n);
            }
        }
        Some("push") => {
            let n: usize = args.get(1).map_or(1_000_000, |s| s.parse().expect("N"));
            let frames: u64 = args.get(2).map_or(10_000_000, |s| s.parse().expect("FRAMES"));
            let random = args.get(3).map_or("random", String::as_str) == "random";
            let ways = match args.get(4).map_or("both", String::as_str) {
                "out" => vec![Way::Out],
                "in" => vec![Way::In],
                _ => vec![Way::Out, Way::In],
            };
            let large = args.get(5).map_or("small", String::as_str) == "large";
            let batch = args.get(6).map_or("one", String::as_str) == "batch";
            push(n, frames, random, &ways, large, batch);
        }
        _ => {
            eprintln!(
                "usage: memprobe mem N… | memprobe push N FRAMES [seq|random] [out|in|both] [small|large] [one|batch]"
            );
            std::process::exit(2);
        }
    }
}

fn sizes() {
    println!("size_of::<Conn>()         = {} bytes", size_of::<Conn>());
    println!("size_of::<Option<Conn>>() = {} bytes", size_of::<Option<Conn>>());
    println!("size_of::<Tuple>()        = {} bytes", size_of::<Tuple>());
    println!("size_of::<Engine>()       = {} bytes", size_of::<Engine>());
    // Where the fields landed: which 64-byte lines the fast path touches.
    use std::mem::offset_of;
    let mut fields = [
        ("orig", offset_of!(Conn, orig), size_of::<Tuple>()),
        ("reply", offset_of!(Conn, reply), size_of::<Tuple>()),
        ("state", offset_of!(Conn, state), 1),
        ("expires", offset_of!(Conn, expires), 8),
        ("ifaces", offset_of!(Conn, ifaces), 2),
        ("macs", offset_of!(Conn, macs), 12),
        ("tcp", offset_of!(Conn, tcp), size_of::<[ftpgate::conntrack::TcpDir; 2]>()),
        ("alg", offset_of!(Conn, alg), size_of::<Option<u32>>()),
        ("parent", offset_of!(Conn, parent), size_of::<Option<u32>>()),
        ("ended", offset_of!(Conn, ended), 1),
    ];
    fields.sort_by_key(|f| f.1);
    let layout: Vec<String> = fields.iter().map(|(n, o, s)| format!("{n}@{o}+{s}")).collect();
    println!("Conn layout: {}", layout.join(" "));
}

fn mem(n: usize) {
    // The flow list is the harness's, not the gateway's: allocate it (and
    // touch it) before the baseline.
    let mut flows: Vec<Flow> = (0..n as u32).map(fixture::flow).collect();
    let mut engine = Engine::new(fixture::config(), 7);
    let before = rss_bytes();
    let mut t = 0;
    fixture::handshake(&mut engine, &mut flows, &mut t);
    let after = rss_bytes();
    let table = engine.table();
    assert_eq!(table.len(), n);
    let heap = table.heap_bytes();
    println!(
        "{n:>9} connections: Table::heap_bytes {:>11} B = {:>6.1} B/conn; RSS growth {:>11} B = {:>6.1} B/conn",
        heap,
        heap as f64 / n as f64,
        after.saturating_sub(before),
        after.saturating_sub(before) as f64 / n as f64
    );
    drop(engine);
}

fn push(n: usize, frames: u64, random: bool, ways: &[Way], large: bool, batch: bool) {
    let setup = Instant::now();
    let Lab { mut engine, flows, now } = Lab::establish(n);
    eprintln!("set up {n} connections in {:.2?}", setup.elapsed());
    let order = if random { shuffled(&flows, 0x5eed) } else { flows };
    let (size, flags) = if large { (LARGE, "PA") } else { (SMALL, "A") };
    let tpls: Vec<Template> = ways.iter().map(|&w| Template::new(w, flags, size)).collect();
    let counters = perf::Counters::open();
    // The harness's own frame buffers, allocated before counting starts.
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(2048)).collect();
    let allocs0 = allocs();
    counters.start();
    let start = Instant::now();
    let cpu0 = thread_cpu_ns();
    let wrong = if batch {
        push_frames_batch(&mut engine, &order, &tpls, now, frames, &mut bufs)
    } else {
        push_frames(&mut engine, &order, &tpls, now, frames, &mut bufs[0])
    };
    let cpu = thread_cpu_ns() - cpu0;
    let wall = start.elapsed();
    let c = counters.stop();
    let allocs = allocs() - allocs0;
    assert_eq!(wrong, 0, "every frame is forwarded");
    let per = |x: u64| x as f64 / frames as f64;
    println!(
        "{n} conns, {frames} frames ({}, {}, {}, {}): {:.1} ns/frame CPU = {:.2} Mframes/s per core; wall {:.1} ns/frame; {allocs} allocations",
        if batch { "batch" } else { "one" },
        if random { "random" } else { "seq" },
        if ways.len() == 2 { "both" } else if ways[0] == Way::Out { "out" } else { "in" },
        if large { "large" } else { "small" },
        cpu as f64 / frames as f64,
        frames as f64 / (cpu as f64 / 1e9) / 1e6,
        wall.as_nanos() as f64 / frames as f64,
    );
    if let Some(c) = c {
        println!(
            "per frame: {:.0} instructions, {:.0} cycles (IPC {:.2}), {:.2} cache misses, {:.2} branch misses",
            per(c[1]),
            per(c[0]),
            c[1] as f64 / c[0].max(1) as f64,
            per(c[2]),
            per(c[3])
        );
    }
}

/// This thread's CPU time: time spent descheduled on a shared machine is not the engine's.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid clock id and a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The measured loop, kept out of line so profilers can isolate it.
#[inline(never)]
fn push_frames(
    engine: &mut Engine,
    order: &[Flow],
    tpls: &[Template],
    now: Nanos,
    frames: u64,
    buf: &mut Vec<u8>,
) -> u64 {
    let mut sink = NullSink;
    let mut wrong = 0u64;
    let mut i = 0usize;
    let mut k = 0usize;
    for _ in 0..frames {
        let tpl = &tpls[k];
        tpl.stamp(buf, &order[i]);
        let (ingress, egress) = if tpl.way == Way::Out { (INSIDE, OUTSIDE) } else { (OUTSIDE, INSIDE) };
        let v = engine.process(now, 0, ingress, buf, &mut sink);
        wrong += (v != Verdict::Forward(egress)) as u64;
        k += 1;
        if k == tpls.len() {
            k = 0;
            i += 1;
            if i == order.len() {
                i = 0;
            }
        }
    }
    wrong
}

/// `push_frames` through `Engine::process_batch`, `BATCH` frames at a time
/// (each in its own buffer, as a receive ring would hand them over).
#[inline(never)]
fn push_frames_batch(
    engine: &mut Engine,
    order: &[Flow],
    tpls: &[Template],
    now: Nanos,
    frames: u64,
    bufs: &mut [Vec<u8>],
) -> u64 {
    let mut sink = NullSink;
    let mut wrong = 0u64;
    let mut i = 0usize;
    let mut k = 0usize;
    let mut done = 0u64;
    while done < frames {
        let n = (frames - done).min(BATCH as u64) as usize;
        let mut ways = [(INSIDE, OUTSIDE); BATCH];
        for (j, b) in bufs.iter_mut().take(n).enumerate() {
            let tpl = &tpls[k];
            tpl.stamp(b, &order[i]);
            ways[j] = if tpl.way == Way::Out { (INSIDE, OUTSIDE) } else { (OUTSIDE, INSIDE) };
            k += 1;
            if k == tpls.len() {
                k = 0;
                i += 1;
                if i == order.len() {
                    i = 0;
                }
            }
        }
        let mut it = bufs.iter_mut().zip(ways);
        let mut batch: [BatchFrame<'_>; BATCH] = std::array::from_fn(|_| {
            let (b, (ingress, _)) = it.next().expect("BATCH buffers");
            BatchFrame::new(ingress, 0, b)
        });
        engine.process_batch(now, &mut batch[..n], &mut sink);
        for (b, (_, egress)) in batch[..n].iter().zip(ways) {
            wrong += (b.verdict != Verdict::Forward(egress)) as u64;
        }
        done += n as u64;
    }
    wrong
}

/// User-space hardware counters for this thread via perf_event_open(2):
/// cycles, instructions, cache misses, branch misses. Absent (None) when the
/// kernel or a VM does not offer them.
mod perf {
    #[repr(C)]
    #[derive(Default)]
    struct Attr {
        kind: u32,
        size: u32,
        config: u64,
        sample_period: u64,
        sample_type: u64,
        read_format: u64,
        flags: u64,
        wakeup_events: u32,
        bp_type: u32,
        config1: u64,
        config2: u64,
        branch_sample_type: u64,
        sample_regs_user: u64,
        sample_stack_user: u32,
        clockid: i32,
        sample_regs_intr: u64,
        aux_watermark: u32,
        sample_max_stack: u16,
        reserved2: u16,
        aux_sample_size: u32,
        reserved3: u32,
        sig_data: u64,
        config3: u64,
    }

    const FLAG_DISABLED: u64 = 1;
    const FLAG_EXCLUDE_KERNEL: u64 = 1 << 5;
    const FLAG_EXCLUDE_HV: u64 = 1 << 6;
    const IOC_ENABLE: libc::c_ulong = 0x2400;
    const IOC_DISABLE: libc::c_ulong = 0x2401;
    const IOC_RESET: libc::c_ulong = 0x2403;
    // PERF_COUNT_HW_{CPU_CYCLES, INSTRUCTIONS, CACHE_MISSES, BRANCH_MISSES}
    const EVENTS: [u64; 4] = [0, 1, 3, 5];

    pub struct Counters(Vec<i32>);

    impl Counters {
        pub fn open() -> Counters {
            let fds = EVENTS
                .iter()
                .map(|&config| {
                    let attr = Attr {
                        kind: 0, // PERF_TYPE_HARDWARE
                        size: std::mem::size_of::<Attr>() as u32,
                        config,
                        flags: FLAG_DISABLED | FLAG_EXCLUDE_KERNEL | FLAG_EXCLUDE_HV,
                        ..Attr::default()
                    };
                    // SAFETY: attr is a valid, fully initialised perf_event_attr
                    // of the size it declares; pid 0 / cpu -1 = this thread.
                    unsafe { libc::syscall(libc::SYS_perf_event_open, &attr as *const Attr, 0, -1, -1, 0) as i32 }
                })
                .collect();
            Counters(fds)
        }

        pub fn start(&self) {
            for &fd in self.0.iter().filter(|&&fd| fd >= 0) {
                // SAFETY: fd is a perf event descriptor we opened.
                unsafe {
                    libc::ioctl(fd, IOC_RESET, 0);
                    libc::ioctl(fd, IOC_ENABLE, 0);
                }
            }
        }

        /// [cycles, instructions, cache misses, branch misses]; None if any is unavailable.
        pub fn stop(&self) -> Option<[u64; 4]> {
            let mut out = [0u64; 4];
            for (i, &fd) in self.0.iter().enumerate() {
                if fd < 0 {
                    return None;
                }
                let mut v = 0u64;
                // SAFETY: fd is ours; we read exactly 8 bytes into a u64.
                let r = unsafe {
                    libc::ioctl(fd, IOC_DISABLE, 0);
                    libc::read(fd, &mut v as *mut u64 as *mut libc::c_void, 8)
                };
                if r != 8 {
                    return None;
                }
                out[i] = v;
            }
            Some(out)
        }
    }

    impl Drop for Counters {
        fn drop(&mut self) {
            for &fd in self.0.iter().filter(|&&fd| fd >= 0) {
                // SAFETY: closing descriptors we own, once.
                unsafe { libc::close(fd) };
            }
        }
    }
}
