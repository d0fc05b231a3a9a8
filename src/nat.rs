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
    /// Workers sharing the gateway's addresses (see `dispatch`): a chosen
    /// port is congruent to the original modulo this, so the frames of both
    /// directions hash to the same worker.
    stride: u16,
}

impl PortAllocator {
    pub fn new(seed: u64) -> PortAllocator {
        PortAllocator::with_stride(seed, 1)
    }

    /// An allocator for one of `workers` workers.
    pub fn with_stride(seed: u64, workers: u16) -> PortAllocator {
        PortAllocator { rng: StdRng::seed_from_u64(seed), stride: workers.max(1) }
    }

    /// The smallest port >= PORT_MIN congruent to `want` modulo the stride.
    fn first_of_class(&self, want: u16) -> u32 {
        let s = self.stride as u32;
        let min = PORT_MIN as u32;
        min + (want as u32 + s - min % s) % s
    }

    /// Choose a port for a mapping. `want` is the original port; `is_free`
    /// says whether a candidate would make a unique reply tuple. None when
    /// every port of `want`'s class (all ports, with one worker) is taken.
    pub fn pick(&mut self, mode: PortMode, want: u16, mut is_free: impl FnMut(u16) -> bool) -> Option<u16> {
        if mode == PortMode::Preserve && want != 0 && is_free(want) {
            return Some(want);
        }
        let s = self.stride as u32;
        let first = self.first_of_class(want);
        // Candidates first + k*s, k in 0..span.
        let span = (PORT_MAX as u32 - first) / s + 1;
        for _ in 0..32 {
            let p = (first + self.rng.random_range(0..span) * s) as u16;
            if is_free(p) {
                return Some(p);
            }
        }
        // A crowded range: walk it once from a random point so a free port
        // is found whenever one exists.
        let start = self.rng.random_range(0..span);
        (0..span).map(|i| (first + ((start + i) % span) * s) as u16).find(|&p| is_free(p))
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
    fn workers_pick_ports_congruent_to_the_original() {
        for workers in [2u16, 3, 4, 7] {
            let mut a = PortAllocator::with_stride(9, workers);
            for want in [0u16, 1, 20, 21, 1023, 1024, 40000, 65535] {
                for _ in 0..50 {
                    let p = a.pick(PortMode::Random, want, |_| true).unwrap();
                    assert_eq!(p % workers, want % workers, "{workers} workers, original {want}: {p}");
                    assert!(p >= PORT_MIN);
                }
                // Preserve keeps the original, which is trivially congruent.
                assert_eq!(a.pick(PortMode::Preserve, want.max(1), |_| true), Some(want.max(1)));
            }
            // Exhaustion of one class is found by the walk: only one free port of the class.
            let target = 50_001u16 - (50_001 % workers) + (7 % workers);
            assert_eq!(a.pick(PortMode::Random, 7, |p| p == target), Some(target));
            assert_eq!(a.pick(PortMode::Random, 7, |p| p % workers != 7 % workers), None);
        }
    }

    #[test]
    fn finds_the_last_free_port_and_reports_exhaustion() {
        let mut a = PortAllocator::new(3);
        assert_eq!(a.pick(PortMode::Random, 0, |p| p == 5555), Some(5555));
        assert_eq!(a.pick(PortMode::Random, 0, |_| false), None);
    }
}
