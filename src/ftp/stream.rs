//! One direction of an FTP control connection as a byte stream, cut into lines.
//! TCP segments arrive with their sequence numbers; this reassembles them
//! (retransmissions identical or re-segmented, overlaps where the first-seen
//! bytes win, out-of-order within a bounded window) and yields complete lines
//! with their position in the stream, so the ALG can find which segment bytes
//! a line came from. Memory is bounded: an overlong line is reported, never
//! buffered without limit.
//!
//! Rules, in the order they matter for an ALG:
//! - Bytes are delivered once. A byte already delivered, or already held
//!   out of order, is never replaced by a later copy (first-seen wins), so a
//!   retransmission with different content cannot change a line after the
//!   fact.
//! - After any loss (`Gap`) or an overlong line (`Overlong`) the stream
//!   discards up to and including the next LF: the byte after an LF is the
//!   only confirmed line start, so a line tail is never parsed as a command.
//! - Memory: the current line holds at most `max_line` bytes, out-of-order
//!   data at most `max_pending` bytes in at most [`MAX_HELD_RUNS`] runs.
//!   When holding a segment would exceed that, the oldest hole is declared
//!   lost (`Gap`) and the held data after it is delivered (resynchronising at
//!   its first LF); this repeats until the segment fits or is in order. The
//!   bytes of a hole declared lost are ignored if they turn up later.
//! - Each `skip_to` or overflow that skips bytes emits its own `Gap`, even
//!   while already discarding.
//! - Allocation: in-order segments only grow the reused line buffer. What
//!   is found goes to a [`LineSink`]: into a `Vec<StreamEvent>` each line owns
//!   its text (one allocation per line, simple to test against); into a
//!   [`Batch`] the texts share one buffer reused from push to push, so a warm
//!   stream allocates nothing per line (the ALG's path). Only out-of-order
//!   segments allocate for holding.
//! - Sequence numbers are compared with serial-number arithmetic relative to
//!   the next expected byte: a segment up to 2^31 bytes behind it is old, up
//!   to 2^31 ahead is new. Stream offsets are u64, so they do not wrap.

use std::collections::VecDeque;

/// At most this many separate out-of-order runs are held; a control
/// connection with more holes than this is not being delivered, it is being
/// sprayed.
pub const MAX_HELD_RUNS: usize = 64;

/// Where a complete line sits in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Stream offset (relative sequence number) of the first byte.
    pub start: u64,
    /// Line content without the terminator.
    pub text: Vec<u8>,
    /// Terminator length: 2 for CRLF, 1 for bare LF.
    pub term: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StreamEvent {
    Line(Line),
    /// A line exceeded the limit; the stream resynchronises at the next LF.
    Overlong {
        start: u64,
    },
    /// Bytes were lost (a gap that the window could not hold, or capture loss);
    /// parsing resumes after the next LF. `at` is the offset of the first
    /// lost byte.
    Gap {
        at: u64,
    },
}

/// Where the line machine puts what it finds, in stream order.
pub trait LineSink {
    /// A complete line at stream offset `start`: `text` without its
    /// terminator, which is `term` bytes long (2 for CRLF, 1 for bare LF).
    fn line(&mut self, start: u64, text: &[u8], term: u8);
    /// See [`StreamEvent::Overlong`].
    fn overlong(&mut self, start: u64);
    /// See [`StreamEvent::Gap`].
    fn gap(&mut self, at: u64);
}

impl LineSink for Vec<StreamEvent> {
    fn line(&mut self, start: u64, text: &[u8], term: u8) {
        self.push(StreamEvent::Line(Line { start, text: text.to_vec(), term }));
    }
    fn overlong(&mut self, start: u64) {
        self.push(StreamEvent::Overlong { start });
    }
    fn gap(&mut self, at: u64) {
        self.push(StreamEvent::Gap { at });
    }
}

/// What pushes found, kept without an allocation per line: the line texts
/// sit end to end in one buffer, and the caller reads them back through
/// [`Batch::iter`] before clearing the batch for the next segment.
#[derive(Default)]
pub struct Batch {
    text: Vec<u8>,
    found: Vec<Stored>,
}

/// A `Found` with its text as a range of `Batch::text`.
#[derive(Clone, Copy)]
enum Stored {
    Line { start: u64, text: (usize, usize), term: u8 },
    Overlong { start: u64 },
    Gap { at: u64 },
}

/// One item of a [`Batch`]: a [`StreamEvent`] whose line borrows its text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found<'a> {
    Line { start: u64, text: &'a [u8], term: u8 },
    Overlong { start: u64 },
    Gap { at: u64 },
}

impl Batch {
    /// Room for `text` bytes of lines and `items` items, for a batch that
    /// has none yet (growing from empty a line at a time reallocates often).
    pub fn reserve_first(&mut self, text: usize, items: usize) {
        if self.text.capacity() == 0 {
            self.text.reserve(text);
        }
        if self.found.capacity() == 0 {
            self.found.reserve(items);
        }
    }

    /// Forget what was found. A text buffer grown past `keep` bytes (a
    /// segment full of lines) is released rather than kept for the next.
    pub fn clear(&mut self, keep: usize) {
        if self.text.capacity() > keep {
            self.text = Vec::new();
        }
        self.text.clear();
        self.found.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    pub fn len(&self) -> usize {
        self.found.len()
    }

    /// What was found since the last `clear`, in stream order.
    pub fn iter(&self) -> impl Iterator<Item = Found<'_>> + '_ {
        self.found.iter().map(|f| match *f {
            Stored::Line { start, text: (a, b), term } => Found::Line { start, text: &self.text[a..b], term },
            Stored::Overlong { start } => Found::Overlong { start },
            Stored::Gap { at } => Found::Gap { at },
        })
    }
}

impl LineSink for Batch {
    fn line(&mut self, start: u64, text: &[u8], term: u8) {
        let a = self.text.len();
        self.text.extend_from_slice(text);
        self.found.push(Stored::Line { start, text: (a, self.text.len()), term });
    }
    fn overlong(&mut self, start: u64) {
        self.found.push(Stored::Overlong { start });
    }
    fn gap(&mut self, at: u64) {
        self.found.push(Stored::Gap { at });
    }
}

/// Contiguous out-of-order bytes starting at a stream offset. A deque, so a
/// run can grow at either end without moving what it holds: merging always
/// copies the smaller side, which keeps a stream of tiny segments arriving in
/// any order from costing a copy of the whole window each.
struct Run {
    start: u64,
    data: VecDeque<u8>,
}

impl Run {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

pub struct LineStream {
    isn: u32,
    max_line: usize,
    max_pending: usize,
    /// Next stream offset to deliver; everything before it has been fed.
    next: u64,
    /// Offset of the first byte of the current line.
    line_start: u64,
    /// The current line's content so far, without a trailing CR (see `cr`).
    buf: Vec<u8>,
    /// The last byte fed was a CR that is not in `buf` yet: it is the
    /// terminator if an LF follows, content otherwise.
    cr: bool,
    /// Discarding up to the next LF (after a gap or an overlong line).
    discard: bool,
    /// Out-of-order data: sorted, disjoint, never adjacent, all beyond `next`.
    runs: Vec<Run>,
    held: usize,
}

impl LineStream {
    /// Bytes of buffer room held (for tests and memory accounting).
    pub fn capacity(&self) -> usize {
        self.buf.capacity() + self.runs.capacity() * std::mem::size_of::<Run>()
    }

    /// Give back buffer room that holds nothing (the connection is closing).
    pub fn trim(&mut self) {
        if self.buf.is_empty() {
            self.buf = Vec::new();
        }
        if self.runs.is_empty() {
            self.runs = Vec::new();
        }
    }

    /// `isn` is the sequence number of the first payload byte (SYN's seq + 1).
    /// `max_line` bounds a line; `max_pending` bounds out-of-order bytes held.
    pub fn new(isn: u32, max_line: usize, max_pending: usize) -> Self {
        LineStream {
            isn,
            max_line,
            max_pending,
            next: 0,
            line_start: 0,
            buf: Vec::new(),
            cr: false,
            discard: false,
            runs: Vec::new(),
            held: 0,
        }
    }

    /// Feed one segment's payload at sequence number `seq`; complete lines and
    /// problems go to `out` in stream order. Returns the number of new
    /// in-order bytes accepted, i.e. how far `next_offset()` advanced (which
    /// includes held bytes this segment released, and is 0 for a segment that
    /// was only held or only retransmitted old bytes).
    pub fn push<S: LineSink>(&mut self, seq: u32, payload: &[u8], out: &mut S) -> usize {
        let before = self.next;
        let off = self.rel(seq);
        let end = off + payload.len() as i128;
        let next = i128::from(self.next);
        if end <= next || payload.is_empty() {
            return 0;
        }
        if off <= next {
            // Already-delivered bytes are not fed again.
            let skip = (next - off) as usize;
            self.deliver(self.next, &payload[skip..], out);
        } else {
            self.hold(off as u64, payload, out);
        }
        usize::try_from(self.next - before).unwrap_or(usize::MAX)
    }

    /// Declare the bytes before `seq` lost (capture loss, or a hole the peer
    /// will never fill). If that skips anything, `Gap` is emitted, the partial
    /// line is dropped and parsing resumes after the next LF at or beyond
    /// `seq`. Held data beyond `seq` is kept. A `seq` at or before the next
    /// expected byte does nothing.
    pub fn skip_to<S: LineSink>(&mut self, seq: u32, out: &mut S) {
        let off = self.rel(seq);
        if off > i128::from(self.next) {
            self.lose_until(off as u64, out);
        }
    }

    /// Relative stream offset of sequence number `seq` (handles wrap).
    /// Sequence numbers before the ISN map to 0.
    pub fn offset_of(&self, seq: u32) -> u64 {
        u64::try_from(self.rel(seq).max(0)).unwrap_or(u64::MAX)
    }

    /// Next stream offset expected in order.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Sequence number of the next byte expected in order.
    pub fn next_seq(&self) -> u32 {
        self.isn.wrapping_add(self.next as u32)
    }

    /// Bytes of the current incomplete line buffered (a pending CR counts).
    /// 0 at a line boundary, and while discarding (nothing is kept then).
    pub fn partial_len(&self) -> usize {
        self.buf.len() + usize::from(self.cr)
    }

    /// True while bytes are being thrown away up to the next LF (after a gap
    /// or an overlong line): the next in-order byte is not a line start.
    pub fn is_discarding(&self) -> bool {
        self.discard
    }

    /// True when the next in-order byte starts a line.
    pub fn at_line_start(&self) -> bool {
        !self.discard && self.partial_len() == 0
    }

    /// Stream offset where the current line began.
    pub fn line_start(&self) -> u64 {
        self.line_start
    }

    /// Out-of-order bytes currently held.
    pub fn held_bytes(&self) -> usize {
        self.held
    }

    /// `seq` relative to the ISN, taking the nearest interpretation around
    /// the next expected byte. May be negative (before the ISN).
    fn rel(&self, seq: u32) -> i128 {
        let diff = seq.wrapping_sub(self.next_seq()) as i32;
        i128::from(self.next) + i128::from(diff)
    }

    /// In-order bytes starting at `off` (<= `next`). Where they overlap held
    /// data, the held bytes (seen first) are the ones fed.
    fn deliver<S: LineSink>(&mut self, mut off: u64, mut data: &[u8], out: &mut S) {
        loop {
            self.release(out);
            if off < self.next {
                let k = usize::try_from(self.next - off).unwrap_or(usize::MAX).min(data.len());
                data = &data[k..];
                off += k as u64;
            }
            if data.is_empty() {
                return;
            }
            let n = match self.runs.first() {
                Some(r) => usize::try_from(r.start - self.next).unwrap_or(usize::MAX).min(data.len()),
                None => data.len(),
            };
            self.feed(&data[..n], out);
            data = &data[n..];
            off += n as u64;
        }
    }

    /// Feed held runs that `next` has reached.
    fn release<S: LineSink>(&mut self, out: &mut S) {
        while self.runs.first().is_some_and(|r| r.start <= self.next) {
            let run = self.runs.remove(0);
            self.held -= run.data.len();
            if run.end() > self.next {
                let skip = (self.next - run.start) as usize;
                let (a, b) = run.data.as_slices();
                if skip < a.len() {
                    self.feed(&a[skip..], out);
                    self.feed(b, out);
                } else {
                    self.feed(&b[skip - a.len()..], out);
                }
            }
        }
    }

    /// A segment starting beyond `next`.
    fn hold<S: LineSink>(&mut self, off: u64, data: &[u8], out: &mut S) {
        // Each failed attempt declares one hole lost, which removes a run or
        // makes the segment in-order: at most MAX_HELD_RUNS + 1 rounds.
        loop {
            if off <= self.next {
                self.deliver(off, data, out);
                return;
            }
            if self.try_hold(off, data) {
                return;
            }
            let first_held = self.runs.first().map_or(off, |r| r.start);
            self.lose_until(first_held.min(off), out);
        }
    }

    /// Merge `data` at `off` into the held runs, keeping bytes already held.
    /// False (nothing changed) if the limits would be exceeded.
    fn try_hold(&mut self, off: u64, data: &[u8]) -> bool {
        let end = off + data.len() as u64;
        // Runs overlapping or touching [off, end) merge into one.
        let first = self.runs.partition_point(|r| r.end() < off);
        let last = self.runs.partition_point(|r| r.start <= end);
        let (start, stop) = if first < last {
            (self.runs[first].start.min(off), self.runs[last - 1].end().max(end))
        } else {
            (off, end)
        };
        let replaced: usize = self.runs[first..last].iter().map(|r| r.data.len()).sum();
        let merged_len = stop - start;
        let count = self.runs.len() - (last - first) + 1;
        let total = (self.held - replaced) as u64 + merged_len;
        if total > self.max_pending as u64 || count > MAX_HELD_RUNS {
            return false;
        }
        if last - first == 1 && self.runs[first].start <= off && self.runs[first].end() >= end {
            return true; // entirely held already
        }
        // Held bytes were seen first: new bytes only go where nothing is held.
        self.held = total as usize;
        if first == last {
            self.runs.insert(first, Run { start: off, data: data.to_vec().into() });
            return true;
        }
        let mut held = self.runs.drain(first..last);
        let Some(mut acc) = held.next() else {
            return true; // first < last: not reached
        };
        let new = |from: u64, to: u64| &data[(from - off) as usize..(to - off) as usize];
        if off < acc.start {
            for &b in new(off, acc.start).iter().rev() {
                acc.data.push_front(b);
            }
            acc.start = off;
        }
        for mut r in held {
            // The hole between two runs lies within [off, end).
            acc.data.extend(new(acc.end(), r.start));
            if acc.data.len() >= r.data.len() {
                acc.data.extend(r.data);
            } else {
                for &b in acc.data.iter().rev() {
                    r.data.push_front(b);
                }
                r.start = acc.start;
                acc = r;
            }
        }
        if end > acc.end() {
            acc.data.extend(new(acc.end(), end));
        }
        debug_assert_eq!((acc.start, acc.end()), (start, stop));
        self.runs.insert(first, acc);
        true
    }

    /// Bytes from `next` up to `target` are lost.
    fn lose_until<S: LineSink>(&mut self, target: u64, out: &mut S) {
        out.gap(self.next);
        self.buf.clear();
        self.cr = false;
        self.discard = true;
        self.next = target;
        self.line_start = target;
        self.release(out);
    }

    /// The line machine: in-order bytes at `next`.
    fn feed<S: LineSink>(&mut self, mut data: &[u8], out: &mut S) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                None => {
                    self.absorb(data, out);
                    self.next += data.len() as u64;
                    return;
                }
                Some(k) => {
                    self.end_line(&data[..k], out);
                    self.next += k as u64 + 1;
                    self.line_start = self.next;
                    data = &data[k + 1..];
                }
            }
        }
    }

    /// Bytes of the current line, no LF among them.
    fn absorb<S: LineSink>(&mut self, chunk: &[u8], out: &mut S) {
        if self.discard || chunk.is_empty() {
            return;
        }
        let (body, tail_cr) = match chunk {
            [body @ .., b'\r'] => (body, true),
            _ => (chunk, false),
        };
        // A held CR followed by more bytes is content.
        let len = self.buf.len() + usize::from(self.cr) + body.len();
        if len > self.max_line {
            self.overlong(out);
            self.discard = true;
            return;
        }
        if self.cr {
            self.buf.push(b'\r');
        }
        self.buf.extend_from_slice(body);
        self.cr = tail_cr;
    }

    /// The bytes before an LF: the line is complete.
    fn end_line<S: LineSink>(&mut self, chunk: &[u8], out: &mut S) {
        if self.discard {
            self.discard = false;
            return;
        }
        let (lead_cr, body, term) = match chunk {
            [] => (false, chunk, if self.cr { 2 } else { 1 }),
            [body @ .., b'\r'] => (self.cr, body, 2),
            _ => (self.cr, chunk, 1),
        };
        let len = self.buf.len() + usize::from(lead_cr) + body.len();
        if len > self.max_line {
            self.overlong(out);
            return;
        }
        if self.buf.is_empty() && !lead_cr {
            // The whole line is in this chunk: hand it out from there.
            out.line(self.line_start, body, term);
        } else {
            if lead_cr {
                self.buf.push(b'\r');
            }
            self.buf.extend_from_slice(body);
            out.line(self.line_start, &self.buf, term);
            self.buf.clear();
        }
        self.cr = false;
    }

    fn overlong<S: LineSink>(&mut self, out: &mut S) {
        out.overlong(self.line_start);
        self.buf.clear();
        self.cr = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(start: u64, text: &str, term: u8) -> StreamEvent {
        StreamEvent::Line(Line { start, text: text.as_bytes().to_vec(), term })
    }

    /// Push segments given as (offset from ISN, bytes); return all events.
    fn run(isn: u32, max_line: usize, max_pending: usize, segs: &[(u32, &str)]) -> Vec<StreamEvent> {
        let mut s = LineStream::new(isn, max_line, max_pending);
        let mut out = Vec::new();
        for &(off, data) in segs {
            s.push(isn.wrapping_add(off), data.as_bytes(), &mut out);
        }
        out
    }

    #[test]
    fn command_split_across_segments() {
        let out = run(1000, 512, 4096, &[(0, "PORT 10,0,0,1,"), (14, "4,1\r\n")]);
        assert_eq!(out, [line(0, "PORT 10,0,0,1,4,1", 2)]);
        // Three pieces, the CR and LF in different segments.
        let out = run(1000, 512, 4096, &[(0, "PO"), (2, "RT 10,0,0,1,4,1\r"), (18, "\nQUIT\r\n")]);
        assert_eq!(out, [line(0, "PORT 10,0,0,1,4,1", 2), line(19, "QUIT", 2)]);
    }

    #[test]
    fn several_commands_in_one_segment() {
        let out = run(7, 512, 4096, &[(0, "USER a\r\nPASS b\r\nPASV\r\nRETR x")]);
        assert_eq!(out, [line(0, "USER a", 2), line(8, "PASS b", 2), line(16, "PASV", 2)]);
        let mut s = LineStream::new(7, 512, 4096);
        let mut out = Vec::new();
        assert_eq!(s.push(7, b"USER a\r\nPASS b\r\nRETR x", &mut out), 22);
        assert_eq!(s.partial_len(), 6);
        assert!(!s.at_line_start());
        assert_eq!(s.line_start(), 16);
    }

    #[test]
    fn bare_lf_and_stray_cr() {
        let out = run(0, 512, 4096, &[(0, "A\nB\r\nC\rD\nE\r\r\n\n\r\n")]);
        assert_eq!(
            out,
            [line(0, "A", 1), line(2, "B", 2), line(5, "C\rD", 1), line(9, "E\r", 2), line(13, "", 1), line(14, "", 2),]
        );
        // A CR at the end of a segment followed by something other than LF.
        let out = run(0, 512, 4096, &[(0, "A\r"), (2, "B\n"), (4, "C\r"), (6, "\r"), (7, "\n")]);
        assert_eq!(out, [line(0, "A\rB", 1), line(4, "C\r", 2)]);
    }

    #[test]
    fn identical_and_resegmented_retransmissions() {
        let mut s = LineStream::new(100, 512, 4096);
        let mut out = Vec::new();
        assert_eq!(s.push(100, b"USER anonymous\r\n", &mut out), 16);
        assert_eq!(s.push(100, b"USER anonymous\r\n", &mut out), 0);
        assert_eq!(s.push(116, b"PASS x\r", &mut out), 7);
        // Re-segmented: old bytes plus new ones.
        assert_eq!(s.push(110, b"mous\r\nPASS x\r\nPASV\r\n", &mut out), 7);
        assert_eq!(s.push(116, b"PASS", &mut out), 0);
        assert_eq!(out, [line(0, "USER anonymous", 2), line(16, "PASS x", 2), line(24, "PASV", 2)]);
        assert!(s.at_line_start());
    }

    #[test]
    fn out_of_order_delivery() {
        let segs = [(13, "PASV\r\n"), (6, "CWD /\r\n"), (0, "NOOP\r\n")];
        let out = run(5, 512, 4096, &segs);
        assert_eq!(out, [line(0, "NOOP", 2), line(6, "CWD /", 2), line(13, "PASV", 2)]);

        let mut s = LineStream::new(5, 512, 4096);
        let mut out = Vec::new();
        assert_eq!(s.push(5 + 14, b"ASV\r\n", &mut out), 0);
        assert_eq!(s.push(5 + 6, b"CWD /\r\nP", &mut out), 0);
        assert_eq!(s.held_bytes(), 13);
        assert!(out.is_empty());
        assert_eq!(s.push(5, b"NOOP\r\n", &mut out), 19);
        assert_eq!(s.held_bytes(), 0);
        assert_eq!(out, [line(0, "NOOP", 2), line(6, "CWD /", 2), line(13, "PASV", 2)]);
    }

    #[test]
    fn conflicting_overlaps_first_seen_wins() {
        // Delivered bytes cannot be rewritten by a retransmission.
        let out = run(0, 512, 4096, &[(0, "PORT 10,0,0,1,"), (0, "PORT 10,0,0,9,9,9\r\n"), (14, "4,1\r\n")]);
        assert_eq!(out, [line(0, "PORT 10,0,0,1,9,9", 2)]);
        // Out of order, the held byte wins even where it breaks the line up
        // differently than the later copy would.
        let out = run(0, 512, 4096, &[(12, "PASV\r\n"), (6, "CWD /\r\n"), (0, "NOOP\r\n")]);
        assert_eq!(out, [line(0, "NOOP", 2), line(6, "CWD /\rPASV", 2)]);
        // Held bytes win over a later in-order copy of the same range.
        let out = run(0, 512, 4096, &[(5, "AAAA\r\n"), (0, "RETR BBBB\r\n")]);
        assert_eq!(out, [line(0, "RETR AAAA", 2)]);
        // Held bytes win over a later held copy.
        let out = run(0, 512, 4096, &[(5, "AA"), (5, "BBBB\r\n"), (0, "RETR ")]);
        assert_eq!(out, [line(0, "RETR AABB", 2)]);
        // A new segment bridging two held runs keeps both.
        let out = run(0, 512, 4096, &[(2, "b"), (4, "d\n"), (1, "XXXX"), (0, "a")]);
        assert_eq!(out, [line(0, "aXbXd", 1)]);
    }

    #[test]
    fn held_runs_merge_in_any_order() {
        let text = b"RETR 0123456789\r\n";
        // Backwards one byte at a time, then every other byte, then bridging.
        let mut s = LineStream::new(9, 512, 4096);
        let mut out = Vec::new();
        for i in (5..text.len()).rev() {
            s.push(9 + i as u32, &text[i..i + 1], &mut out);
        }
        assert_eq!(s.held_bytes(), text.len() - 5);
        s.push(9, &text[..5], &mut out);
        assert_eq!(out, [line(0, "RETR 0123456789", 2)]);

        let mut s = LineStream::new(9, 512, 4096);
        let mut out = Vec::new();
        for i in (1..text.len()).step_by(2) {
            s.push(9 + i as u32, &text[i..i + 1], &mut out);
        }
        s.push(9 + 2, &text[2..text.len() - 2], &mut out); // bridges all but the ends
        s.push(9 + text.len() as u32 - 2, &text[text.len() - 2..], &mut out);
        assert_eq!(s.held_bytes(), text.len() - 1);
        s.push(9, &text[..1], &mut out);
        assert_eq!(out, [line(0, "RETR 0123456789", 2)]);
        assert_eq!(s.held_bytes(), 0);
    }

    #[test]
    fn sequence_wrap() {
        let isn = u32::MAX - 3;
        let mut s = LineStream::new(isn, 512, 4096);
        let mut out = Vec::new();
        s.push(isn, b"USE", &mut out);
        s.push(isn.wrapping_add(8), b"QUIT\r\n", &mut out); // held, across the wrap
        s.push(isn.wrapping_add(3), b"R a\r\n", &mut out);
        assert_eq!(out, [line(0, "USER a", 2), line(8, "QUIT", 2)]);
        assert_eq!(s.next_offset(), 14);
        assert_eq!(s.next_seq(), 10);
        assert_eq!(s.offset_of(10), 14);
        assert_eq!(s.offset_of(isn), 0);
        assert_eq!(s.offset_of(isn.wrapping_sub(5)), 0);
        // A segment from before the ISN (a SYN-era retransmission) is old.
        assert_eq!(s.push(isn.wrapping_sub(2), b"xx", &mut out), 0);

        // Offsets keep counting past 4 GiB: feed 2^32 + 10 bytes' worth of
        // sequence space by declaring most of it lost.
        let mut s = LineStream::new(0xfff0_0000, 512, 4096);
        let mut out = Vec::new();
        for step in 0..3u64 {
            let target = 0xfff0_0000u32.wrapping_add((step as u32 + 1) << 30);
            s.skip_to(target, &mut out);
        }
        s.skip_to(0xfff0_0000u32.wrapping_add(10), &mut out);
        s.push(0xfff0_0000u32.wrapping_add(10), b"x\nNOOP\n", &mut out);
        assert_eq!(s.next_offset(), (1u64 << 32) + 17);
        assert_eq!(out.last(), Some(&line((1u64 << 32) + 12, "NOOP", 1)));
    }

    #[test]
    fn overlong_lines() {
        let out = run(0, 8, 4096, &[(0, "12345678\r\n123456789\r\nOK\n")]);
        assert_eq!(out, [line(0, "12345678", 2), StreamEvent::Overlong { start: 10 }, line(21, "OK", 1)]);
        // Over many segments: reported once, memory stays bounded.
        let mut s = LineStream::new(0, 8, 4096);
        let mut out = Vec::new();
        let mut seq = 0u32;
        s.push(seq, b"RETR ", &mut out);
        seq += 5;
        for _ in 0..1000 {
            s.push(seq, b"AAAAAAAAAA", &mut out);
            seq += 10;
            assert!(s.partial_len() <= 8);
        }
        assert!(s.is_discarding());
        s.push(seq, b"\r\nPASV\r\n", &mut out);
        assert_eq!(out, [StreamEvent::Overlong { start: 0 }, line(10007, "PASV", 2)]);
        // Exactly max_line with the CR held at a segment end is fine.
        let out = run(0, 4, 4096, &[(0, "ABCD\r"), (5, "\n"), (6, "ABCD\rE\n")]);
        assert_eq!(out, [line(0, "ABCD", 2), StreamEvent::Overlong { start: 6 }]);
    }

    #[test]
    fn pending_overflow_declares_the_hole_lost() {
        let mut s = LineStream::new(0, 512, 16);
        let mut out = Vec::new();
        s.push(0, b"RETR a", &mut out); // partial line, then a hole at 6..10
        s.push(10, b"xx\r\nPASV\r\n", &mut out); // held: 10 bytes
        assert!(out.is_empty());
        s.push(20, b"PORT 1,2,3,4,5,6\r\n", &mut out); // 28 > 16: overflow
        assert_eq!(out, [StreamEvent::Gap { at: 6 }, line(14, "PASV", 2), line(20, "PORT 1,2,3,4,5,6", 2),]);
        assert_eq!(s.held_bytes(), 0);
        // The lost hole arriving late is ignored.
        assert_eq!(s.push(6, b"b\r\nX", &mut out), 0);
        assert_eq!(out.len(), 3);

        // Too many separate runs also overflows.
        let mut s = LineStream::new(0, 512, 1 << 20);
        let mut out = Vec::new();
        for i in 0..=MAX_HELD_RUNS as u32 {
            s.push(2 + 2 * i, b"a", &mut out);
        }
        assert_eq!(out.first(), Some(&StreamEvent::Gap { at: 0 }));
        assert!(s.held_bytes() <= MAX_HELD_RUNS);

        // With no room at all, any hole is lost at once.
        let out = run(0, 512, 0, &[(0, "NOOP\r\nRE"), (10, "TR x\r\nPASV\r\n")]);
        assert_eq!(out, [line(0, "NOOP", 2), StreamEvent::Gap { at: 8 }, line(16, "PASV", 2)]);
    }

    #[test]
    fn resync_after_gap_only_at_a_line_boundary() {
        let mut s = LineStream::new(0, 512, 4096);
        let mut out = Vec::new();
        s.push(0, b"STOR fi", &mut out);
        // Lost: "le\r\n" (7..11) and a whole line. The capture resumes in the
        // middle of a line whose tail looks like a command.
        s.skip_to(30, &mut out);
        assert!(s.is_discarding());
        assert_eq!(s.partial_len(), 0);
        s.push(30, b"PORT 10,0,0,1,0,21\r\nPASV\r\n", &mut out);
        assert_eq!(out, [StreamEvent::Gap { at: 7 }, line(50, "PASV", 2)]);
        // Even when the gap ended exactly at a line start, the first line
        // after it is not trusted.
        let mut s = LineStream::new(0, 512, 4096);
        let mut out = Vec::new();
        s.push(0, b"NOOP\r\n", &mut out);
        s.skip_to(12, &mut out);
        s.push(12, b"PASV\r\nQUIT\r\n", &mut out);
        assert_eq!(out, [line(0, "NOOP", 2), StreamEvent::Gap { at: 6 }, line(18, "QUIT", 2)]);
        // skip_to behind or at next does nothing; held data beyond it stays.
        let mut s = LineStream::new(0, 512, 4096);
        let mut out = Vec::new();
        s.push(0, b"NOOP\r\n", &mut out);
        s.skip_to(3, &mut out);
        s.skip_to(6, &mut out);
        assert_eq!(out.len(), 1);
        s.push(12, b"x\r\nPASV\r\n", &mut out);
        s.skip_to(9, &mut out); // 9..12 still missing: the held run waits
        assert_eq!(out.len(), 2);
        assert_eq!(s.held_bytes(), 9);
        s.skip_to(12, &mut out);
        assert_eq!(
            out,
            [line(0, "NOOP", 2), StreamEvent::Gap { at: 6 }, StreamEvent::Gap { at: 9 }, line(15, "PASV", 2)]
        );
    }

    #[test]
    fn empty_and_far_segments() {
        let mut s = LineStream::new(0, 512, 4096);
        let mut out = Vec::new();
        assert_eq!(s.push(0, b"", &mut out), 0);
        assert_eq!(s.push(0x8000_0000, b"far", &mut out), 0); // exactly 2^31 away: old
        assert_eq!(s.push(0x7fff_fff0, b"far", &mut out), 0); // far ahead: held
        assert_eq!(s.held_bytes(), 3);
        assert_eq!(s.push(0, b"NOOP\r\n", &mut out), 6);
        assert_eq!(out, [line(0, "NOOP", 2)]);
        // Declaring everything up to it lost releases it.
        s.skip_to(0x7fff_fff0, &mut out);
        s.push(0x7fff_fff3, b"\nQUIT\n", &mut out);
        assert_eq!(out[1..], [StreamEvent::Gap { at: 6 }, line(0x7fff_fff4, "QUIT", 1)]);
    }

    /// A `Batch` as owned events, to compare with the `Vec<StreamEvent>` sink.
    fn owned(b: &Batch) -> Vec<StreamEvent> {
        b.iter()
            .map(|f| match f {
                Found::Line { start, text, term } => StreamEvent::Line(Line { start, text: text.to_vec(), term }),
                Found::Overlong { start } => StreamEvent::Overlong { start },
                Found::Gap { at } => StreamEvent::Gap { at },
            })
            .collect()
    }

    #[test]
    fn batch_line_spanning_several_pushes_comes_out_whole() {
        let mut s = LineStream::new(50, 512, 0);
        let mut b = Batch::default();
        // Cut inside the verb, between CR and LF, and a line that starts in
        // the same segment that ends the previous one.
        for (off, piece) in [(0u32, "PO"), (2, "RT 10,0,0,1,"), (14, "4,1\r"), (18, "\nCWD /pu"), (26, "b\r\n")] {
            s.push(50 + off, piece.as_bytes(), &mut b);
        }
        assert_eq!(
            b.iter().collect::<Vec<_>>(),
            [
                Found::Line { start: 0, text: b"PORT 10,0,0,1,4,1", term: 2 },
                Found::Line { start: 19, text: b"CWD /pub", term: 2 },
            ]
        );
        assert_eq!(b.len(), 2);
        // Cleared, the batch is empty and the next line stands alone.
        b.clear(4096);
        assert!(b.is_empty());
        s.push(50 + 29, b"NOOP\n", &mut b);
        assert_eq!(b.iter().collect::<Vec<_>>(), [Found::Line { start: 29, text: b"NOOP", term: 1 }]);
    }

    #[test]
    fn batch_finds_what_the_owned_sink_finds() {
        // Lines, an overlong line, a gap, a stray CR kept at a segment end,
        // and an out-of-order run released later.
        let segs: [(u32, &str); 7] = [
            (0, "USER a\r\nPASS b\r"),
            (15, "\n0123456789ABC\r\n"),
            (31, "C\rD"),
            (34, "\n"),
            (44, "x\r\nQUIT\r\n"),
            (35, "NOOP\r\n"),
            (41, "ZZZ"),
        ];
        let mut s1 = LineStream::new(3, 12, 64);
        let mut s2 = LineStream::new(3, 12, 64);
        let mut v = Vec::new();
        let mut b = Batch::default();
        for &(off, data) in &segs {
            s1.push(3 + off, data.as_bytes(), &mut v);
            s2.push(3 + off, data.as_bytes(), &mut b);
        }
        s1.skip_to(3 + 70, &mut v);
        s2.skip_to(3 + 70, &mut b);
        assert_eq!(owned(&b), v);
        assert_eq!(
            v,
            [
                line(0, "USER a", 2),
                line(8, "PASS b", 2),
                StreamEvent::Overlong { start: 16 },
                line(31, "C\rD", 1),
                line(35, "NOOP", 2),
                line(41, "ZZZx", 2),
                line(47, "QUIT", 2),
                StreamEvent::Gap { at: 53 },
            ]
        );
    }

    #[test]
    fn batch_reuses_its_buffers() {
        let mut s = LineStream::new(0, 512, 0);
        let mut b = Batch::default();
        let mut seq = 0u32;
        let mut push = |s: &mut LineStream, b: &mut Batch, data: &[u8]| {
            s.push(seq, data, b);
            seq = seq.wrapping_add(data.len() as u32);
        };
        push(&mut s, &mut b, b"USER anonymous\r\nPASS x\r\n");
        b.clear(4096);
        let (cap, found_cap) = (b.text.capacity(), b.found.capacity());
        for _ in 0..100 {
            push(&mut s, &mut b, b"CWD /pub\r\nPWD\r\n");
            assert_eq!(b.len(), 2);
            b.clear(4096);
        }
        assert_eq!((b.text.capacity(), b.found.capacity()), (cap, found_cap));
        // A batch grown past `keep` lets its text buffer go.
        push(&mut s, &mut b, &b"NOOP\r\n".repeat(200));
        assert!(b.text.capacity() > 64);
        b.clear(64);
        assert_eq!(b.text.capacity(), 0);
    }
}
