//! A replay is a function of (capture, configuration, seed): two runs give
//! the same summary, the same event log line for line and the same output
//! capture byte for byte, with one worker or several. Hash tables with
//! per-process random seeds (the shared pinhole map) must not leak their
//! order into the output. The inputs interleave many recorded FTP sessions,
//! so pinholes opened by one worker are used by another, expire together,
//! and copies of a session collide on addresses and ports.

use std::path::{Path, PathBuf};
use std::process::Command;

use ftpgate::capture::CaptureReader;

mod common;
use common::{Capture, DEVICES};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// (interface name, timestamp ns, frame) of every frame of `path`.
fn frames_of(path: &Path) -> Vec<(String, u64, Vec<u8>)> {
    let mut r = CaptureReader::open(path).expect("readable capture");
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(m) = r.next_frame(&mut buf).expect("well-formed capture") {
        let name = m.iface.and_then(|i| r.interfaces()[i].name.clone()).unwrap_or_default();
        out.push((name, m.ts.0, buf.clone()));
    }
    out
}

/// Every `.in.pcapng` session of `pcaps/kernel` whose name starts with
/// `prefix`, `copies` times each, the k-th copy of the j-th session started
/// `j × 7 + k × 3` ms after the first: dozens of sessions overlapping.
fn interleaved(prefix: &str, copies: u64, out: &Path) -> usize {
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(repo("pcaps/kernel"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().to_string();
            n.starts_with(prefix) && n.ends_with(".in.pcapng")
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 3, "recorded sessions starting with {prefix:?} in pcaps/kernel");
    let mut all: Vec<(u64, usize, String, Vec<u8>)> = Vec::new();
    for (j, input) in inputs.iter().enumerate() {
        let frames = frames_of(input);
        let t0 = frames.first().map_or(0, |f| f.1);
        for k in 0..copies {
            let shift = (j as u64 * 7 + k * 3) * 1_000_000;
            for (name, ts, f) in &frames {
                all.push((ts - t0 + shift + 1_700_000_000_000_000_000, all.len(), name.clone(), f.clone()));
            }
        }
    }
    all.sort_by_key(|f| (f.0, f.1));
    let mut cap = Capture::new();
    for (ts, _, name, data) in &all {
        let iface =
            DEVICES.iter().position(|d| d == name).unwrap_or_else(|| panic!("recorded on {name:?}, not a lab device"));
        cap.recs.push((iface as u32, *ts, data.clone()));
    }
    cap.write_pcapng(out);
    all.len()
}

struct Run {
    status: String,
    summary: String,
    events: Vec<u8>,
    out: Vec<u8>,
}

fn replay(input: &Path, config: Option<&Path>, workers: u16, dir: &Path, tag: &str) -> Run {
    let events = dir.join(format!("ev-{workers}-{tag}.jsonl"));
    let out = dir.join(format!("out-{workers}-{tag}.pcapng"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftpgate"));
    cmd.args(["replay", "-q", "--workers", &workers.to_string()]);
    if let Some(c) = config {
        cmd.arg("-c").arg(c);
    }
    let run = cmd.arg("--events").arg(&events).arg("-o").arg(&out).arg(input).output().unwrap();
    Run {
        status: format!("{:?} {}", run.status.code(), String::from_utf8_lossy(&run.stderr)),
        summary: String::from_utf8_lossy(&run.stdout).into_owned(),
        events: std::fs::read(events).unwrap_or_default(),
        out: std::fs::read(out).unwrap_or_default(),
    }
}

/// Two runs agree, with 1 and 3 workers; returns the 3-worker event log.
fn same_twice(input: &Path, config: Option<&Path>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut three = String::new();
    for workers in [1, 3] {
        let a = replay(input, config, workers, dir.path(), "a");
        let b = replay(input, config, workers, dir.path(), "b");
        let what = format!("{} with {workers} worker(s)", input.display());
        assert_eq!(a.status, b.status, "{what}: exit differs");
        assert_eq!(a.summary, b.summary, "{what}: summaries differ");
        if a.events != b.events {
            let (la, lb) = (String::from_utf8_lossy(&a.events), String::from_utf8_lossy(&b.events));
            let first = la.lines().zip(lb.lines()).position(|(x, y)| x != y);
            panic!(
                "{what}: event logs differ (first at line {first:?} of {} / {})",
                la.lines().count(),
                lb.lines().count()
            );
        }
        assert!(a.out == b.out, "{what}: output captures differ ({} / {} bytes)", a.out.len(), b.out.len());
        if workers == 3 {
            three = String::from_utf8(b.events).unwrap();
        }
    }
    three
}

#[test]
fn interleaved_masqueraded_sessions_replay_the_same_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("masq.pcapng");
    let n = interleaved("proftpd", 6, &cap);
    assert!(n > 500, "a capture of some size ({n} frames)");
    let events = same_twice(&cap, Some(&repo("pcaps/kernel/masq.yaml")));
    // Only worth something if pinholes were opened, used and expired.
    for kind in ["pinhole_open", "pinhole_use", "pinhole_expire"] {
        assert!(events.contains(&format!("\"event\":\"{kind}\"")), "no {kind} event");
    }
}

#[test]
fn interleaved_published_sessions_replay_the_same_twice() {
    let dir = tempfile::tempdir().unwrap();
    let cap = dir.path().join("published.pcapng");
    interleaved("published", 6, &cap);
    let events = same_twice(&cap, Some(&repo("pcaps/kernel/published.yaml")));
    assert!(events.contains("\"event\":\"pinhole_use\""));
}

#[test]
fn public_captures_replay_the_same_twice() {
    let public = repo("../shared/pcaps/public");
    let mut caps = Vec::new();
    let mut stack = vec![public.clone()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                caps.push(p);
            }
        }
    }
    if caps.is_empty() {
        eprintln!("no public captures beside the repository ({}); skipped", public.display());
        return;
    }
    caps.sort();
    for cap in &caps {
        same_twice(cap, None);
    }
}
