//! ftpgate: a stateful FTP-aware firewall and NAT gateway.
//!
//! The modules follow a packet's path through the gateway:
//! `wire` (parse, in-place setters) → `engine` (classify, route) →
//! `conntrack` → `nat` → `ftp` (ALG) → `policy` → emit.
//! `capture` and `replay` are the pcap shell around the pure engine;
//! `live` is the Linux-device shell (`ftpgate run`).

pub mod capture;
pub mod config;
pub mod conntrack;
pub mod dispatch;
pub mod engine;
pub mod event;
pub mod ftp;
pub mod live;
pub mod nat;
pub mod policy;
pub mod replay;
pub mod route;
pub mod time;
pub mod wire;

/// The lib's unit tests count their thread's allocations (the ALG's test
/// that a control line costs one); the allocator is the one the benchmark
/// fixture and `tests/no_alloc.rs` use.
#[cfg(test)]
#[path = "../benches/fixture/counting.rs"]
mod counting;

#[cfg(test)]
#[global_allocator]
static COUNTING: counting::Counting = counting::Counting;
