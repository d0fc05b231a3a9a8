//! Fuzz harnesses for ftpgate. Each `fuzz_targets/*.rs` is a one-line call
//! into a `run` function here, so the harness logic can also be driven
//! outside libFuzzer (e.g. replaying a crash file under a debugger).
//!
//! Every harness asserts properties, not just "no panic": see each module.

pub mod check;
pub mod config;
pub mod engine;
pub mod ftp_parse;
pub mod lab;
pub mod line_stream;
pub mod wire;

/// A cursor over the fuzzer's bytes that never fails: past the end it yields
/// zeros, so every input decodes to some sequence of operations.
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data }
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }
    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}
