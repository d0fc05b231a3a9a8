//! Engine throughput: frames per second on the established NAT fast path at
//! 1,000 and 1,000,000 connections, and the new-connection rate.
//!
//!     cargo bench --bench engine
//!     FTPGATE_BENCH_CONNS=1000 cargo bench --bench engine -- established
//!
//! Each established case cycles over every connection in one direction,
//! either in creation order (`seq`: the slab is walked in order) or in a fixed
//! random permutation (`random`: every frame hits a cold connection once the
//! table is bigger than the caches). One criterion "element" is one frame.
//! The frame is stamped into a reused buffer from a template before each
//! call; `harness/*` measures that stamping alone, to subtract.
//! `batch/*` cases feed the same frames through `Engine::process_batch` in
//! bursts of `engine::BATCH`, each frame in its own buffer.
//! Memory per connection is measured by `cargo run --release --example memprobe`.
//!
//! Timing uses this thread's CPU time (CLOCK_THREAD_CPUTIME_ID), not the wall
//! clock: on a machine shared with other work, time spent descheduled is not
//! the engine's, and "frames per second per core" is what we want. On an idle
//! machine the two agree; FTPGATE_BENCH_CLOCK=wall switches to the wall clock.

#[path = "fixture/mod.rs"]
mod fixture;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftpgate::engine::{BatchFrame, Engine, Verdict, BATCH};

use fixture::{handshake, shuffled, Flow, Lab, NullSink, Template, Way, INSIDE, LARGE, OUTSIDE, SMALL};

/// Table sizes to run, from FTPGATE_BENCH_CONNS (comma-separated) or 1k and 1M.
fn sizes() -> Vec<usize> {
    match std::env::var("FTPGATE_BENCH_CONNS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1_000, 1_000_000],
    }
}

/// The clock the measurements read: thread CPU time unless told otherwise.
#[derive(Clone, Copy)]
struct Clock {
    wall: bool,
}

impl Clock {
    fn from_env() -> Clock {
        Clock { wall: std::env::var("FTPGATE_BENCH_CLOCK").is_ok_and(|v| v == "wall") }
    }

    #[inline]
    fn now(self) -> Duration {
        if self.wall {
            static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
            return EPOCH.get_or_init(Instant::now).elapsed();
        }
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid clock id and a valid out-pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    }
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    // Short runs: the machine is shared, and repeats say more than long runs.
    g.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
}

fn established(c: &mut Criterion) {
    for n in sizes() {
        let clock = Clock::from_env();
        let setup = Instant::now();
        let Lab { mut engine, flows, now } = Lab::establish(n);
        eprintln!("established {n} connections in {:.2?}", setup.elapsed());
        let random = shuffled(&flows, 0x5eed);
        let mut sink = NullSink;

        let mut g = c.benchmark_group(format!("established/{n}"));
        configure(&mut g);
        g.throughput(Throughput::Elements(1));
        for (size_name, size, flags) in [("small", SMALL, "A"), ("large", LARGE, "PA")] {
            for way in [Way::Out, Way::In] {
                let tpl = Template::new(way, flags, size);
                let (ingress, egress, way_name) = match way {
                    Way::Out => (INSIDE, OUTSIDE, "out"),
                    Way::In => (OUTSIDE, INSIDE, "in"),
                };
                for (order_name, order) in [("seq", &flows), ("random", &random)] {
                    let name = format!("{size_name}/{order_name}/{way_name}");
                    let mut buf: Vec<u8> = Vec::with_capacity(2048);
                    let mut i = 0usize;
                    let mut wrong = 0u64;
                    g.bench_function(&name, |b| {
                        b.iter_custom(|iters| {
                            let start = clock.now();
                            for _ in 0..iters {
                                let f = &order[i];
                                i += 1;
                                if i == order.len() {
                                    i = 0;
                                }
                                tpl.stamp(&mut buf, f);
                                let v = engine.process(now, 0, ingress, &mut buf, &mut sink);
                                wrong += (v != Verdict::Forward(egress)) as u64;
                            }
                            clock.now() - start
                        })
                    });
                    assert_eq!(wrong, 0, "{name}: every frame of an established connection is forwarded");
                }
            }
        }
        // The same small frames in bursts. One iteration = one burst; the
        // throughput is per frame.
        g.throughput(Throughput::Elements(BATCH as u64));
        for way in [Way::Out, Way::In] {
            let tpl = Template::new(way, "A", SMALL);
            let (ingress, egress, way_name) = match way {
                Way::Out => (INSIDE, OUTSIDE, "out"),
                Way::In => (OUTSIDE, INSIDE, "in"),
            };
            for (order_name, order) in [("seq", &flows), ("random", &random)] {
                let name = format!("batch/small/{order_name}/{way_name}");
                let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(2048)).collect();
                let mut i = 0usize;
                let mut wrong = 0u64;
                g.bench_function(&name, |b| {
                    b.iter_custom(|iters| {
                        let start = clock.now();
                        for _ in 0..iters {
                            for buf in bufs.iter_mut() {
                                tpl.stamp(buf, &order[i]);
                                i += 1;
                                if i == order.len() {
                                    i = 0;
                                }
                            }
                            let mut it = bufs.iter_mut();
                            let mut batch: [BatchFrame<'_>; BATCH] =
                                std::array::from_fn(|_| BatchFrame::new(ingress, 0, it.next().expect("BATCH buffers")));
                            engine.process_batch(now, &mut batch, &mut sink);
                            wrong += batch.iter().filter(|b| b.verdict != Verdict::Forward(egress)).count() as u64;
                        }
                        clock.now() - start
                    })
                });
                assert_eq!(wrong, 0, "{name}: every frame of an established connection is forwarded");
            }
        }
        g.finish();
        // Freeing a million connections is not part of any measurement.
        drop(engine);
    }
}

/// What the stamping costs without the engine: subtract it from the above.
fn harness(c: &mut Criterion) {
    let clock = Clock::from_env();
    let flows: Vec<Flow> = (0..1_000_000u32).map(fixture::flow).collect();
    let mut g = c.benchmark_group("harness");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    for (size_name, size, flags) in [("small", SMALL, "A"), ("large", LARGE, "PA")] {
        let tpl = Template::new(Way::In, flags, size);
        let mut buf: Vec<u8> = Vec::with_capacity(2048);
        let mut i = 0usize;
        g.bench_function(size_name, |b| {
            b.iter_custom(|iters| {
                let start = clock.now();
                for _ in 0..iters {
                    let f = &flows[i];
                    i += 1;
                    if i == flows.len() {
                        i = 0;
                    }
                    tpl.stamp(&mut buf, f);
                    black_box(&mut buf);
                }
                clock.now() - start
            })
        });
    }
    g.finish();
}

/// New connections per second: SYN, SYN-ACK and ACK through a fresh engine
/// (one criterion element = one whole handshake = three frames). Engines are
/// rebuilt every CHUNK connections, outside the timing, so the table grows
/// from empty to at most CHUNK: the cost includes its rehashing as it grows.
fn new_connections(c: &mut Criterion) {
    const CHUNK: u64 = 100_000;
    let clock = Clock::from_env();
    let base: Vec<Flow> = (0..CHUNK as u32).map(fixture::flow).collect();
    let mut g = c.benchmark_group("new_connection");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    g.bench_function("handshake", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let k = left.min(CHUNK);
                let mut engine = Engine::new(fixture::config(), 11);
                let mut flows = base[..k as usize].to_vec();
                let mut t = 0;
                let start = clock.now();
                handshake(&mut engine, &mut flows, &mut t);
                total += clock.now() - start;
                drop(engine);
                left -= k;
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, harness, established, new_connections);
criterion_main!(benches);
