//! The established fast path allocates nothing: a counting global allocator
//! sees zero allocations across thousands of data frames of established
//! NAT connections, through `process` and through `process_batch`, at a table
//! size that has not been reached before (so no lazily grown structure hides
//! in the first frames).

#[path = "../benches/fixture/mod.rs"]
mod fixture;

use ftpgate::engine::{BatchFrame, Verdict, BATCH};

use fixture::counting::{allocs, Counting};
use fixture::{shuffled, Lab, NullSink, Template, Way, INSIDE, LARGE, OUTSIDE, SMALL};

#[global_allocator]
static A: Counting = Counting;

#[test]
fn established_frames_allocate_nothing() {
    let Lab { mut engine, flows, now } = Lab::establish(320 * BATCH);
    let order = shuffled(&flows, 9);
    let tpls = [
        Template::new(Way::Out, "A", SMALL),
        Template::new(Way::In, "A", SMALL),
        Template::new(Way::Out, "PA", LARGE),
        Template::new(Way::In, "PA", LARGE),
    ];
    let mut sink = NullSink;

    // One frame at a time.
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let before = allocs();
    let mut forwarded = 0;
    for (i, f) in order.iter().enumerate() {
        let tpl = &tpls[i % tpls.len()];
        tpl.stamp(&mut buf, f);
        let ingress = if tpl.way == Way::Out { INSIDE } else { OUTSIDE };
        forwarded += matches!(engine.process(now, 0, ingress, &mut buf, &mut sink), Verdict::Forward(_)) as usize;
    }
    let during = allocs() - before;
    assert_eq!(forwarded, order.len(), "the frames took the established path");
    assert_eq!(during, 0, "allocations across {} established frames through process", order.len());

    // In bursts.
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(2048)).collect();
    let before = allocs();
    let mut forwarded = 0;
    for (c, chunk) in order.chunks(BATCH).enumerate() {
        let mut ways = [Way::Out; BATCH];
        for (j, (f, b)) in chunk.iter().zip(bufs.iter_mut()).enumerate() {
            let tpl = &tpls[(c + j) % tpls.len()];
            tpl.stamp(b, f);
            ways[j] = tpl.way;
        }
        // A stack array of frames: the caller's burst needs no heap either.
        let mut it = bufs.iter_mut().zip(ways);
        let mut frames: [BatchFrame<'_>; BATCH] = std::array::from_fn(|_| {
            let (b, way) = it.next().expect("BATCH buffers");
            BatchFrame::new(if way == Way::Out { INSIDE } else { OUTSIDE }, 0, b)
        });
        let n = chunk.len();
        assert_eq!(n, BATCH, "whole bursts only");
        engine.process_batch(now, &mut frames[..n], &mut sink);
        forwarded += frames[..n].iter().filter(|b| matches!(b.verdict, Verdict::Forward(_))).count();
    }
    let during = allocs() - before;
    assert_eq!(forwarded, order.len(), "the frames took the established path");
    assert_eq!(during, 0, "allocations across {} established frames through process_batch", order.len());
}
