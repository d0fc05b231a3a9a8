//! `Engine::process_batch` is `Engine::process` frame by frame, only faster:
//! on the same input (in bursts of varying size, one clock value per burst)
//! both give the same verdicts, the same bytes in every frame buffer, the
//! same transmitted frames and the same events, in the same order. The input
//! mixes what could go wrong with work done ahead for a whole burst: real
//! FTP sessions (ALG rewrites, pinholes, data connections), a connection
//! created and answered inside one burst, connections ending and their
//! tuples reused, policy and no-connection drops, unparsable frames, TTL
//! expiry, ICMP and UDP. Each case runs twice: with the engine parsing
//! each frame, and with frames parsed and hashed beforehand
//! (`Preparsed`, as replay's reading thread does).

mod common;
use common::*;

use ftpgate::config::Config;
use ftpgate::engine::{BatchFrame, Engine, Preparsed, Verdict};
use ftpgate::time::Nanos;

/// One input frame: ingress interface and bytes.
type Input = (usize, Vec<u8>);

/// Feed `frames` to two engines, one with `process` and one with
/// `process_batch`, in bursts whose sizes cycle through `bursts`, and assert
/// that everything observable is the same. Returns how many verdicts of
/// each kind were seen (to check the input really was mixed). With
/// `preparse`, the burst's frames come parsed and hashed.
fn same_as_one_by_one(config: &Config, frames: &[Input], bursts: &[usize], preparse: bool) -> [usize; 3] {
    let mut one = Engine::new(config.clone(), 42);
    let mut many = Engine::new(config.clone(), 42);
    let (mut s1, mut s2) = (Collect::default(), Collect::default());
    let mut kinds = [0usize; 3];
    let (mut i, mut k) = (0usize, 0usize);
    let mut now = 1_000_000_000_000u64;
    while i < frames.len() {
        let n = bursts[k % bursts.len()].min(frames.len() - i);
        k += 1;
        now += 3_000_000;
        let t = Nanos(now);
        let group = &frames[i..i + n];

        let mut out1 = Vec::new();
        for (j, (ingress, f)) in group.iter().enumerate() {
            let mut b = f.clone();
            let v = one.process(t, (i + j + 1) as u64, *ingress, &mut b, &mut s1);
            out1.push((v, b));
        }

        let mut bufs: Vec<Vec<u8>> = group.iter().map(|(_, f)| f.clone()).collect();
        let hasher = many.hasher();
        let mut pre: Vec<Preparsed> = bufs
            .iter()
            .map(|b| {
                let mut p = Preparsed::EMPTY;
                p.parse(b, Some(&hasher));
                p
            })
            .collect();
        let mut batch: Vec<BatchFrame<'_>> = bufs
            .iter_mut()
            .zip(&mut pre)
            .enumerate()
            .map(|(j, (b, p))| {
                let mut bf = BatchFrame::new(group[j].0, (i + j + 1) as u64, b);
                bf.pre = preparse.then_some(p);
                bf
            })
            .collect();
        many.process_batch(t, &mut batch, &mut s2);
        let verdicts: Vec<Verdict> = batch.iter().map(|b| b.verdict).collect();
        drop(batch);

        for (j, ((v1, b1), (v2, b2))) in out1.iter().zip(verdicts.iter().zip(&bufs)).enumerate() {
            let p = i + j + 1;
            assert_eq!(v1, v2, "frame {p}: verdict");
            assert_eq!(b1, b2, "frame {p}: frame bytes after processing");
            kinds[match v1 {
                Verdict::Forward(_) => 0,
                Verdict::Drop(_) => 1,
                Verdict::Consumed => 2,
            }] += 1;
        }
        // Timers between bursts, as a live loop would run them.
        one.tick(t, &mut s1);
        many.tick(t, &mut s2);
        assert_eq!(s1.frames, s2.frames, "transmitted frames up to frame {}", i + n);
        let ev1: Vec<String> = s1.events.iter().map(|e| e.to_json()).collect();
        let ev2: Vec<String> = s2.events.iter().map(|e| e.to_json()).collect();
        assert_eq!(ev1, ev2, "events up to frame {}", i + n);
        i += n;
    }
    assert_eq!(format!("{:?}", one.stats()), format!("{:?}", many.stats()));
    assert_eq!(one.table().len(), many.table().len());
    kinds
}

/// Every kernel recording's input side, one after another (each session
/// uses its own ports, and the sessions of one server reuse nothing that is
/// still open).
fn recordings() -> (Config, Vec<Input>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/kernel");
    let yaml = std::fs::read_to_string(dir.join("masq.yaml")).expect("masq.yaml");
    let config = ftpgate::config::from_str(&yaml, "masq.yaml").expect("valid config");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".in.pcapng"))
        .collect();
    names.sort();
    assert!(names.len() >= 4, "kernel recordings present");
    let mut frames = Vec::new();
    for p in &names {
        for f in read_pcapng_out(p) {
            let ingress = config
                .interfaces
                .iter()
                .position(|i| i.device.as_deref() == Some(f.iface.as_str()) || i.name == f.iface)
                .expect("known interface");
            frames.push((ingress, f.frame));
        }
    }
    (config, frames)
}

#[test]
fn batch_matches_frame_by_frame_on_recorded_ftp_sessions() {
    let (config, frames) = recordings();
    for (bursts, preparse) in [(&[16][..], false), (&[1, 7, 32, 3, 16, 2], false), (&[16], true), (&[5, 1, 13], true)] {
        let kinds = same_as_one_by_one(&config, &frames, bursts, preparse);
        assert!(kinds[0] > 100, "mostly forwarded: {kinds:?}");
    }
}

fn syn_ack(
    src: (&'static str, u16),
    dst: (&'static str, u16),
    seq: u32,
    ack: u32,
    flags: &'static str,
) -> Tcp<'static> {
    Tcp { src, dst, seq, ack, flags, payload: b"" }
}

/// A synthetic mix on the lab layout with masquerade and preserved ports
/// (so replies can be written down in advance).
fn synthetic() -> Vec<Input> {
    let mut v: Vec<Input> = Vec::new();
    let c = "192.0.2.10";
    let srv = "198.51.100.20";
    let pubip = "198.51.100.1";
    let out = |t| (INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, t));
    let back = |t| (OUTSIDE, tcp(SERVER_MAC, GW_OUT_MAC, t));
    for round in 0..3u16 {
        for p in 0..40u16 {
            let cp = 20_000 + p;
            // New connection, answered and acknowledged, often inside one burst.
            v.push(out(syn_ack((c, cp), (srv, 80), 100, 0, "S")));
            v.push(back(syn_ack((srv, 80), (pubip, cp), 900, 101, "SA")));
            v.push(out(syn_ack((c, cp), (srv, 80), 101, 901, "A")));
            match p % 8 {
                // Data both ways.
                0 | 1 => {
                    v.push(out(Tcp {
                        src: (c, cp),
                        dst: (srv, 80),
                        seq: 101,
                        ack: 901,
                        flags: "PA",
                        payload: b"GET /\r\n",
                    }));
                    v.push(back(Tcp {
                        src: (srv, 80),
                        dst: (pubip, cp),
                        seq: 901,
                        ack: 108,
                        flags: "PA",
                        payload: b"ok",
                    }));
                }
                // Closed with FIN both ways; the next round's SYN reuses the tuple.
                2 => {
                    v.push(out(syn_ack((c, cp), (srv, 80), 101, 901, "FA")));
                    v.push(back(syn_ack((srv, 80), (pubip, cp), 901, 102, "FA")));
                    v.push(out(syn_ack((c, cp), (srv, 80), 102, 902, "A")));
                }
                // Reset.
                3 => v.push(back(syn_ack((srv, 80), (pubip, cp), 901, 0, "R"))),
                // Out of window: dropped.
                4 => v.push(out(syn_ack((c, cp), (srv, 80), 101u32.wrapping_add(2_000_000_000), 901, "A"))),
                // Unsolicited from outside: no connection.
                5 => v.push(back(syn_ack((srv, 81), (pubip, cp), 5, 0, "A"))),
                // Not allowed by policy (outside → inside SYN).
                6 => v.push(back(syn_ack((srv, 4000 + p), (c, 22), 5, 0, "S"))),
                _ => {
                    // TTL 1: time exceeded, answered with ICMP.
                    let mut f = tcp(CLIENT_MAC, GW_IN_MAC, syn_ack((c, cp), (srv, 80), 101, 901, "A"));
                    f[22] = 1;
                    v.push((INSIDE, fix_ip_checksum(f)));
                }
            }
            if p % 5 == 0 {
                v.push((INSIDE, udp(CLIENT_MAC, GW_IN_MAC, (c, 5000 + p), (srv, 53), b"q")));
                v.push((OUTSIDE, udp(SERVER_MAC, GW_OUT_MAC, (srv, 53), (pubip, 5000 + p), b"a")));
                v.push((INSIDE, ping(CLIENT_MAC, GW_IN_MAC, c, srv, 300 + p + round, 1, false)));
                // Ping to the gateway itself: answered, consumed.
                v.push((INSIDE, ping(CLIENT_MAC, GW_IN_MAC, c, "192.0.2.1", 7, p, false)));
            }
            if p % 7 == 0 {
                // Garbage: short, an unknown EtherType, an IPv4 header that lies.
                v.push((INSIDE, vec![1, 2, 3]));
                let mut f = tcp(CLIENT_MAC, GW_IN_MAC, syn_ack((c, cp), (srv, 80), 1, 0, "S"));
                f[12] = 0x88;
                f[13] = 0xb5;
                v.push((INSIDE, f.clone()));
                f[12] = 0x08;
                f[13] = 0x00;
                f[16] = 0xff;
                v.push((INSIDE, f));
                // A frame on an interface that does not exist.
                v.push((7, vec![0; 60]));
            }
        }
    }
    v
}

/// Recompute the IPv4 header checksum of an Ethernet + IPv4 frame.
fn fix_ip_checksum(mut f: Vec<u8>) -> Vec<u8> {
    f[24] = 0;
    f[25] = 0;
    let mut s = 0u32;
    for w in f[14..34].chunks(2) {
        s += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    let c = !(s as u16);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn batch_matches_frame_by_frame_on_a_synthetic_mix() {
    let mut config = lab_config(true);
    config.nat.ports = ftpgate::config::PortMode::Preserve;
    let frames = synthetic();
    for (bursts, preparse) in
        [(&[16][..], false), (&[32], false), (&[5, 1, 13, 32, 2], false), (&[16], true), (&[3, 32], true)]
    {
        let kinds = same_as_one_by_one(&config, &frames, bursts, preparse);
        assert!(kinds.iter().all(|&n| n > 10), "forwarded, dropped and consumed all seen: {kinds:?}");
    }
}
