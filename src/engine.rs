//! The pure packet engine: frames and a clock in; frames, verdicts and events
//! out. No I/O, threads or wall clock in here, so `replay` and `run` are thin
//! shells around the same code.

use crate::config::{Config, IfIndex};
use crate::event::{DropReason, Event};
use crate::time::Nanos;

/// Where the engine's output goes.
pub trait Sink {
    /// A frame the gateway originates (ARP/ND answers, RSTs, ICMP errors, held
    /// frames released later) to be sent on `iface`.
    fn transmit(&mut self, iface: IfIndex, frame: &[u8]);
    /// An event for the log.
    fn event(&mut self, ev: Event);
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

pub struct Engine {
    config: Config,
}

impl Engine {
    /// `seed` drives the random NAT port allocator (replay may fix it; `run` draws one from the OS).
    pub fn new(config: Config, seed: u64) -> Engine {
        let _ = seed;
        Engine { config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The interface a frame arrived on when the capture does not say:
    /// the one whose connected networks or routes contain the source address,
    /// failing that the one holding the default route.
    pub fn ingress_for(&self, frame: &[u8]) -> Option<IfIndex> {
        let _ = frame;
        None
    }

    /// Process one frame received on `ingress` at `now`. `packet` is the
    /// 1-based input frame index carried into events. The frame may be
    /// rewritten in place (and grow or shrink for ALG rewrites).
    pub fn process(&mut self, now: Nanos, packet: u64, ingress: IfIndex, frame: &mut Vec<u8>, sink: &mut impl Sink) -> Verdict {
        let _ = (now, packet, ingress, frame, sink);
        Verdict::Drop(DropReason::Unsupported)
    }

    /// Advance timers to `now`: expire connections and pinholes.
    pub fn tick(&mut self, now: Nanos, sink: &mut impl Sink) {
        let _ = (now, sink);
    }
}
