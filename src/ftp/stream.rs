//! One direction of an FTP control connection as a byte stream, cut into lines.
//! TCP segments arrive with their sequence numbers; this reassembles them
//! (retransmissions identical or re-segmented, overlaps where the first-seen
//! bytes win, out-of-order within a bounded window) and yields complete lines
//! with their position in the stream, so the ALG can find which segment bytes
//! a line came from. Memory is bounded: an overlong line is reported, never
//! buffered without limit.

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
    Overlong { start: u64 },
    /// Bytes were lost (a gap that the window could not hold, or capture loss);
    /// parsing resumes after the next LF.
    Gap { at: u64 },
}

pub struct LineStream {
    _private: (),
}

impl LineStream {
    /// `isn` is the sequence number of the first payload byte (SYN's seq + 1).
    /// `max_line` bounds a line; `max_pending` bounds out-of-order bytes held.
    pub fn new(isn: u32, max_line: usize, max_pending: usize) -> Self {
        let _ = (isn, max_line, max_pending);
        todo!()
    }

    /// Feed one segment's payload at sequence number `seq`; complete lines and
    /// problems are pushed to `out` in stream order. Returns the number of new
    /// in-order bytes accepted.
    pub fn push(&mut self, seq: u32, payload: &[u8], out: &mut Vec<StreamEvent>) -> usize {
        let _ = (seq, payload, out);
        todo!()
    }

    /// Relative stream offset of sequence number `seq` (handles wrap).
    pub fn offset_of(&self, seq: u32) -> u64 {
        let _ = seq;
        todo!()
    }

    /// Next stream offset expected in order.
    pub fn next_offset(&self) -> u64 {
        todo!()
    }
}
