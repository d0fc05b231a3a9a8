//! Per-frame costs of the wire layer: parse and the common NAT rewrite.
//! Run with `cargo bench --bench wire` on an otherwise idle machine.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use etherparse::PacketBuilder;
use ftpgate::wire::{parse_frame, setters, FrameKind};

fn tcp_v4() -> Vec<u8> {
    let mut f = Vec::new();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 10], [198, 51, 100, 20], 64)
        .tcp(40000, 21, 1000, 4096)
        .ack(2000)
        .write(&mut f, b"RETR file.txt\r\n")
        .unwrap();
    f
}

fn tcp_v6() -> Vec<u8> {
    let mut f = Vec::new();
    let a = "2001:db8::a".parse::<std::net::Ipv6Addr>().unwrap().octets();
    let b = "2001:db8:1::14".parse::<std::net::Ipv6Addr>().unwrap().octets();
    PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv6(a, b, 64)
        .tcp(40000, 21, 1000, 4096)
        .ack(2000)
        .write(&mut f, b"RETR file.txt\r\n")
        .unwrap();
    f
}

fn bench(c: &mut Criterion) {
    let v4 = tcp_v4();
    let v6 = tcp_v6();
    c.bench_function("parse_frame tcp/ipv4", |b| b.iter(|| parse_frame(black_box(&v4))));
    c.bench_function("parse_frame tcp/ipv6", |b| b.iter(|| parse_frame(black_box(&v6))));
    c.bench_function("snat tcp/ipv4 (addr + port + ttl)", |b| {
        let mut f = v4.clone();
        let FrameKind::Ip(mut m) = parse_frame(&f) else { unreachable!() };
        let mut n = 0u32;
        b.iter(|| {
            n = n.wrapping_add(1);
            setters::set_src_ip(&mut f, &mut m, IpAddr::V4(Ipv4Addr::from(0xcb00_7100 | (n & 0xff))));
            setters::set_src_port(&mut f, &mut m, n as u16);
            black_box(&f);
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
