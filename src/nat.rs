//! NAT port allocation. Ports the gateway chooses are drawn at random from a
//! seeded CSPRNG (ChaCha), so a stranger cannot predict the next mapping or a
//! pinhole's port; `preserve` keeps the original port when it is free, as
//! Linux does by default.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::config::PortMode;

/// The range masquerade and ALG allocations draw from. Ports below 1024 are
/// left alone: some servers treat them as privileged.
pub const PORT_MIN: u16 = 1024;
pub const PORT_MAX: u16 = 65535;

pub struct PortAllocator {
    rng: StdRng,
}

impl PortAllocator {
    pub fn new(seed: u64) -> PortAllocator {
        PortAllocator { rng: StdRng::seed_from_u64(seed) }
    }

    /// Choose a port for a mapping. `want` is the original port; `is_free`
    /// says whether a candidate would make a unique reply tuple. None when
    /// the whole range is taken.
    pub fn pick(&mut self, mode: PortMode, want: u16, mut is_free: impl FnMut(u16) -> bool) -> Option<u16> {
        if mode == PortMode::Preserve && want != 0 && is_free(want) {
            return Some(want);
        }
        for _ in 0..32 {
            let p = self.rng.random_range(PORT_MIN..=PORT_MAX);
            if is_free(p) {
                return Some(p);
            }
        }
        // A crowded range: walk it once from a random point so a free port
        // is found whenever one exists.
        let span = (PORT_MAX - PORT_MIN) as u32 + 1;
        let start = self.rng.random_range(0..span);
        (0..span).map(|i| PORT_MIN + ((start + i) % span) as u16).find(|&p| is_free(p))
    }

    /// A random 64-bit value (ALG tie-breaks, sequence of pinhole ids).
    pub fn next_u64(&mut self) -> u64 {
        self.rng.random()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn preserve_keeps_free_port_and_falls_back() {
        let mut a = PortAllocator::new(1);
        assert_eq!(a.pick(PortMode::Preserve, 40000, |_| true), Some(40000));
        let p = a.pick(PortMode::Preserve, 40000, |p| p != 40000).unwrap();
        assert!(p != 40000 && p >= PORT_MIN);
    }

    #[test]
    fn random_ports_are_spread_and_not_sequential() {
        let mut a = PortAllocator::new(42);
        let ports: Vec<u16> = (0..200).map(|_| a.pick(PortMode::Random, 40000, |_| true).unwrap()).collect();
        let distinct: HashSet<_> = ports.iter().collect();
        assert!(distinct.len() > 190, "random choices collide rarely");
        let sequential = ports.windows(2).filter(|w| w[1].wrapping_sub(w[0]) == 1).count();
        assert!(sequential < 3);
        assert!(ports.iter().all(|&p| p >= PORT_MIN));
        // Different seeds, different sequences.
        let mut b = PortAllocator::new(43);
        let other: Vec<u16> = (0..20).map(|_| b.pick(PortMode::Random, 0, |_| true).unwrap()).collect();
        assert_ne!(&ports[..20], &other[..]);
    }

    #[test]
    fn finds_the_last_free_port_and_reports_exhaustion() {
        let mut a = PortAllocator::new(3);
        assert_eq!(a.pick(PortMode::Random, 0, |p| p == 5555), Some(5555));
        assert_eq!(a.pick(PortMode::Random, 0, |_| false), None);
    }
}
