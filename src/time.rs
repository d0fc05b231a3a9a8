//! The engine's clock: nanoseconds, supplied by the caller with every frame.
//! Replay uses capture timestamps, `run` a monotonic clock; the engine never reads one.

use std::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Nanos(pub u64);

impl Nanos {
    pub const ZERO: Nanos = Nanos(0);
    pub fn from_secs_f64(s: f64) -> Nanos {
        Nanos((s.max(0.0) * 1e9) as u64)
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e9
    }
    pub fn saturating_add(self, d: std::time::Duration) -> Nanos {
        Nanos(self.0.saturating_add(d.as_nanos().min(u64::MAX as u128) as u64))
    }
    pub fn saturating_sub(self, other: Nanos) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6}", self.as_secs_f64())
    }
}
