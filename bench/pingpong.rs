//! TCP request/response round trips for bench/run.sh (std only; built with
//! `rustc -O`, no cargo needed).
//!
//!     pingpong server ADDR:PORT            echo every message back, one thread per connection
//!     pingpong client ADDR:PORT N SIZE     N round trips of SIZE bytes on one connection
//!
//! The client prints `n=N p50_us=.. p90_us=.. p99_us=.. mean_us=.. max_us=..`.
//! Nagle is off on both ends, so each message is one segment each way and
//! every round trip crosses the gateway twice.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::exit;
use std::time::{Duration, Instant};

fn serve(addr: &str) {
    let l = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("pingpong: bind {addr}: {e}");
        exit(1)
    });
    println!("READY");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

fn client(addr: &str, n: usize, size: usize) {
    let sa = addr.parse().unwrap_or_else(|e| {
        eprintln!("pingpong: {addr}: {e}");
        exit(2)
    });
    let mut s = TcpStream::connect_timeout(&sa, Duration::from_secs(5)).unwrap_or_else(|e| {
        eprintln!("pingpong: connect {addr}: {e}");
        exit(1)
    });
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let msg = vec![0x5au8; size];
    let mut back = vec![0u8; size];
    // Warm-up: connection state, caches, the gateway's first-packet path.
    let warm = (n / 20).max(10);
    let mut rtt = Vec::with_capacity(n);
    for i in 0..warm + n {
        let t = Instant::now();
        if let Err(e) = s.write_all(&msg).and_then(|_| s.read_exact(&mut back)) {
            eprintln!("pingpong: round trip {i}: {e}");
            exit(1)
        }
        if i >= warm {
            rtt.push(t.elapsed().as_nanos() as u64);
        }
    }
    rtt.sort_unstable();
    let q = |p: f64| rtt[((rtt.len() as f64 * p) as usize).min(rtt.len() - 1)] as f64 / 1000.0;
    let mean = rtt.iter().sum::<u64>() as f64 / rtt.len() as f64 / 1000.0;
    println!(
        "n={} p50_us={:.1} p90_us={:.1} p99_us={:.1} mean_us={:.1} max_us={:.1}",
        rtt.len(),
        q(0.50),
        q(0.90),
        q(0.99),
        mean,
        *rtt.last().unwrap() as f64 / 1000.0
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    match a.get(1).map(String::as_str) {
        Some("server") if a.len() == 3 => serve(&a[2]),
        Some("client") if a.len() == 5 => {
            let n = a[3].parse().unwrap_or(0);
            let size = a[4].parse().unwrap_or(0);
            if n == 0 || size == 0 {
                eprintln!("pingpong: N and SIZE must be positive");
                exit(2)
            }
            client(&a[2], n, size)
        }
        _ => {
            eprintln!("usage: pingpong server ADDR:PORT | client ADDR:PORT N SIZE");
            exit(2)
        }
    }
}
