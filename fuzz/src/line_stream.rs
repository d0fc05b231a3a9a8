//! `LineStream` fed an arbitrary sequence of segments (any sequence number
//! near the stream, retransmissions with different content, overlaps, holes,
//! `skip_to`). A model records the first copy of each byte the stream could
//! have accepted; every line must be exactly those bytes (first-seen wins,
//! nothing invented), lines come out in stream order without overlap, and
//! memory stays within `max_line` and `max_pending`.

use std::collections::HashMap;

use ftpgate::ftp::stream::{LineStream, StreamEvent};

use crate::Input;

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let isn = inp.u32();
    let max_line = 1 + usize::from(inp.u8());
    let max_pending = usize::from(inp.u16() % 2048);
    let mut s = LineStream::new(isn, max_line, max_pending);
    // First copy of each stream offset offered at or beyond `next_offset()`.
    let mut first: HashMap<u64, u8> = HashMap::new();
    let mut last_end = 0u64;
    let mut out = Vec::new();
    let mut steps = 0;
    while !inp.is_empty() && steps < 2000 {
        steps += 1;
        let op = inp.u8();
        let next = s.next_offset();
        if op % 16 == 15 {
            // Declare a loss up to some point ahead.
            let ahead = u32::from(inp.u16());
            s.skip_to(s.next_seq().wrapping_add(ahead), &mut out);
        } else {
            // A segment near the next expected byte: behind, at, or ahead of it.
            let rel = i64::from(inp.u16() as i16) / 4;
            let len = usize::from(inp.u8() % 96);
            let payload = inp.bytes(len);
            let seq = s.next_seq().wrapping_add(rel as u32);
            let at = next as i64 + rel;
            for (i, &b) in payload.iter().enumerate() {
                let o = at + i as i64;
                if o >= next as i64 {
                    first.entry(o as u64).or_insert(b);
                }
            }
            let before = s.next_offset();
            let adv = s.push(seq, payload, &mut out);
            assert_eq!(adv as u64, s.next_offset() - before, "push returns how far the stream advanced");
        }
        assert!(s.next_offset() >= next, "the stream never goes back");
        for ev in out.drain(..) {
            match ev {
                StreamEvent::Line(l) => {
                    assert!(l.text.len() <= max_line, "line of {} > max_line {max_line}", l.text.len());
                    assert!(l.term == 1 || l.term == 2);
                    assert!(l.start >= last_end, "line at {} overlaps the previous (ended {last_end})", l.start);
                    let end = l.start + l.text.len() as u64 + u64::from(l.term);
                    assert!(end <= s.next_offset(), "line beyond what was delivered");
                    for (i, &b) in l.text.iter().enumerate() {
                        let o = l.start + i as u64;
                        assert_eq!(first.get(&o), Some(&b), "byte at offset {o} is not the first copy seen");
                    }
                    let t = &[b'\r', b'\n'][2 - usize::from(l.term)..];
                    for (i, &b) in t.iter().enumerate() {
                        assert_eq!(first.get(&(end - t.len() as u64 + i as u64)), Some(&b), "terminator");
                    }
                    last_end = end;
                }
                StreamEvent::Overlong { start } | StreamEvent::Gap { at: start } => {
                    assert!(start <= s.next_offset());
                }
            }
        }
        assert!(s.partial_len() <= max_line + 1, "partial line {} > max_line", s.partial_len());
        assert!(s.held_bytes() <= max_pending, "held {} > max_pending {max_pending}", s.held_bytes());
        // The model only needs what is still ahead of the stream.
        if first.len() > 1 << 14 {
            let floor = last_end;
            first.retain(|&o, _| o >= floor);
        }
    }
}
