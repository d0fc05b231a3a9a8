//! The `ftpgate` binary as users run it: exit codes, one-line errors, the
//! summary's accounting over every public capture.
//!
//! Tests that replay through the configuration (built-in default or a file)
//! need `config::load`/`builtin_default`; the library-level sweep at the end
//! builds its configuration in code and needs neither.

use std::fs::{self, File};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};

const BIN: &str = env!("CARGO_BIN_EXE_ftpgate");

fn ftpgate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run ftpgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Shared test data: $FTPGATE_SHARED, else `../shared` beside the crate, else /work/shared.
fn shared_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FTPGATE_SHARED") {
        return PathBuf::from(d);
    }
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared")
}

fn public_captures() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if matches!(p.extension().and_then(|x| x.to_str()), Some("pcap" | "pcapng" | "cap")) {
                out.push(p);
            }
        }
    }
    let root = shared_dir().join("pcaps/public");
    let mut v = Vec::new();
    walk(&root, &mut v);
    v.sort();
    assert!(!v.is_empty(), "no captures under {} (set FTPGATE_SHARED)", root.display());
    v
}

/// Frame count read by pcap-file alone, not by our reader.
fn independent_count(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    if bytes.starts_with(&[0x0A, 0x0D, 0x0D, 0x0A]) {
        let mut r = PcapNgReader::new(Cursor::new(bytes)).unwrap();
        let mut n = 0;
        while let Some(b) = r.next_block() {
            if matches!(b.unwrap(), Block::EnhancedPacket(_) | Block::SimplePacket(_) | Block::Packet(_)) {
                n += 1;
            }
        }
        n
    } else {
        let mut r = PcapReader::new(Cursor::new(bytes)).unwrap();
        let mut n = 0;
        while let Some(p) = r.next_raw_packet() {
            p.unwrap();
            n += 1;
        }
        n
    }
}

/// (in, out, dropped, generated) from `frames: N in, N out, N dropped, N gateway-generated`.
fn parse_frames_line(line: &str) -> (u64, u64, u64, u64) {
    let rest = line.strip_prefix("frames: ").unwrap_or_else(|| panic!("not a frames line: {line:?}"));
    let parts: Vec<&str> = rest.split(", ").collect();
    assert_eq!(parts.len(), 4, "{line:?}");
    let num = |s: &str, suffix: &str| -> u64 {
        s.strip_suffix(suffix).unwrap_or_else(|| panic!("{s:?} in {line:?}")).parse().unwrap()
    };
    (num(parts[0], " in"), num(parts[1], " out"), num(parts[2], " dropped"), num(parts[3], " gateway-generated"))
}

fn consumed_line(line: &str) -> u64 {
    line.strip_prefix("consumed by the gateway: ").unwrap_or_else(|| panic!("{line:?}")).parse().unwrap()
}

fn pcap_with(records: &[&[u8]]) -> Vec<u8> {
    let mut f = vec![0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 1, 0, 0, 0];
    for (i, d) in records.iter().enumerate() {
        for v in [1000 + i as u32, 0, d.len() as u32, d.len() as u32] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(d);
    }
    f
}

fn tcp_frame() -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 10], [198, 51, 100, 20], 64)
        .tcp(40000, 21, 1, 65535)
        .write(&mut v, b"USER anonymous\r\n")
        .unwrap();
    v
}

fn assert_one_line_naming(out: &Output, file: &Path, cause: &str) {
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("ftpgate: "), "{err:?}");
    assert!(err.contains(&file.display().to_string()), "names the file: {err:?}");
    assert!(err.contains(cause), "says {cause:?}: {err:?}");
    assert!(out.stdout.is_empty(), "no summary: {:?}", text(&out.stdout));
}

#[test]
fn not_a_capture_exits_2_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    fs::write(&notes, "Hello, these are notes\n").unwrap();
    let out = ftpgate(&["replay", notes.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_naming(&out, &notes, "not a pcap or pcapng file (magic 0x6c6c6548)");
}

#[test]
fn missing_capture_exits_2() {
    let out = ftpgate(&["replay", "/nonexistent/x.pcap"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_naming(&out, Path::new("/nonexistent/x.pcap"), "No such file");
}

#[test]
fn corrupt_pcap_header_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let short = dir.path().join("short.pcap");
    fs::write(&short, &pcap_with(&[])[..12]).unwrap();
    let out = ftpgate(&["replay", "-q", short.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_naming(&out, &short, "truncated pcap file header");

    let bad = dir.path().join("bad-version.pcap");
    let mut b = pcap_with(&[&tcp_frame()]);
    b[4] = 9;
    fs::write(&bad, b).unwrap();
    let out = ftpgate(&["replay", "-q", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_naming(&out, &bad, "corrupt pcap header (version 9.4)");

    let ng = dir.path().join("bad.pcapng");
    fs::write(&ng, [0x0A, 0x0D, 0x0D, 0x0A, 28, 0, 0, 0, 9, 9, 9, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
        .unwrap();
    let out = ftpgate(&["replay", "-q", ng.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_naming(&out, &ng, "pcapng section header");
}

#[test]
fn truncated_last_record_warns_and_counts_complete_frames() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcap");
    let f = tcp_frame();
    let mut b = pcap_with(&[&f, &f, &f]);
    b.truncate(b.len() - 7);
    fs::write(&cut, b).unwrap();
    let out = ftpgate(&["replay", "-q", cut.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let warnings: Vec<_> = stderr.lines().filter(|l| l.contains("warning")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("cut.pcap") && warnings[0].contains("truncated"), "{stderr}");
    let stdout = text(&out.stdout);
    let lines: Vec<_> = stdout.lines().collect();
    let (fin, fout, dropped, _) = parse_frames_line(lines[lines.len() - 1]);
    assert_eq!(fin, 2);
    assert_eq!(fin, fout + dropped + consumed_line(lines[lines.len() - 2]));
}

#[test]
fn summary_names_input_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("one.pcap");
    fs::write(&p, pcap_with(&[&tcp_frame()])).unwrap();
    let out = ftpgate(&["replay", "-q", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&p.display().to_string()), "{stdout}");
    assert!(stdout.contains("built-in default"), "{stdout}");
    assert!(stdout.lines().last().unwrap().starts_with("frames: 1 in, "), "{stdout}");
}

#[test]
fn every_public_capture_replays_and_balances() {
    let dir = tempfile::tempdir().unwrap();
    for cap in public_captures() {
        let out_path = dir.path().join("out.pcapng");
        let ev_path = dir.path().join("ev.jsonl");
        let out = ftpgate(&[
            "replay",
            "--quiet",
            "-o",
            out_path.to_str().unwrap(),
            "--events",
            ev_path.to_str().unwrap(),
            cap.to_str().unwrap(),
        ]);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{}: {stderr}", cap.display());
        let lines: Vec<_> = stdout.lines().collect();
        assert!(lines.len() >= 2, "{}: {stdout}", cap.display());
        let (fin, fout, dropped, generated) = parse_frames_line(lines[lines.len() - 1]);
        let consumed = consumed_line(lines[lines.len() - 2]);
        assert_eq!(fin, independent_count(&cap), "{}", cap.display());
        assert_eq!(fin, fout + dropped + consumed, "{}", cap.display());

        // The output holds exactly the forwarded and gateway-generated frames.
        let mut r = PcapNgReader::new(File::open(&out_path).unwrap()).unwrap();
        let mut written = 0;
        while let Some(b) = r.next_block() {
            if matches!(b.unwrap(), Block::EnhancedPacket(_)) {
                written += 1;
            }
        }
        assert_eq!(written, fout + generated, "{}", cap.display());
        // Every event line is JSON with a packet index within the capture.
        for line in fs::read_to_string(&ev_path).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(p) = v["packet"].as_u64() {
                assert!((1..=fin).contains(&p), "{}: {line}", cap.display());
            }
        }
    }
}

#[test]
fn check_missing_file_exits_2() {
    let out = ftpgate(&["check", "-c", "/nonexistent/gw.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert_one_line_naming(&out, Path::new("/nonexistent/gw.yaml"), "No such file");
}

#[test]
fn check_reports_each_problem_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.yaml");
    fs::write(&p, "interfaces:\n  inside:\n    adresses: [192.0.2.1/24]\nftp:\n  active: sometimes\n").unwrap();
    let out = ftpgate(&["check", "-c", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.is_empty());
    for line in stdout.lines() {
        // FILE:LINE:COLUMN: message (path)
        let rest = line.strip_prefix(&format!("{}:", p.display())).unwrap_or_else(|| panic!("{line:?}"));
        let mut it = rest.splitn(3, ':');
        let l: usize = it.next().unwrap().parse().unwrap_or_else(|_| panic!("{line:?}"));
        let c: usize = it.next().unwrap().parse().unwrap_or_else(|_| panic!("{line:?}"));
        assert!(l >= 1 && c >= 1);
        assert!(line.ends_with(')'), "{line:?}");
    }
}

#[test]
fn check_default_rules_ok() {
    let out = ftpgate(&["check", "-c", "rules/default.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout), "rules/default.yaml: ok\n");
}

#[test]
fn live_commands_fail_with_one_line_reasons() {
    // rules/default.yaml names no devices, and nothing listens on the admin
    // socket given here; tests/live_cli.rs covers the live commands further.
    for args in [&["run", "-c", "rules/default.yaml"][..], &["sessions", "--admin", "unix:/nonexistent/ftpgate.sock"]] {
        let out = ftpgate(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.lines().count() >= 1 && err.lines().all(|l| l.starts_with("ftpgate: ")), "{err}");
    }
}

#[test]
fn help_teaches_with_examples_and_version_prints() {
    for sub in ["replay", "check", "run", "sessions"] {
        let out = ftpgate(&[sub, "--help"]);
        assert_eq!(out.status.code(), Some(0));
        let help = text(&out.stdout);
        assert!(help.contains("Examples:"), "{sub}: {help}");
        assert!(help.contains(&format!("ftpgate {sub}")), "{sub}: {help}");
    }
    let out = ftpgate(&["help", "replay"]);
    assert!(text(&out.stdout).contains("--events"));
    let out = ftpgate(&["--version"]);
    assert_eq!(text(&out.stdout), format!("ftpgate {}\n", env!("CARGO_PKG_VERSION")));
    let out = ftpgate(&["replay"]);
    assert_eq!(out.status.code(), Some(2), "usage error");
}

/// The same sweep through the library with a configuration built in code:
/// it exercises the capture reader on every public file whatever state the
/// YAML loader is in.
#[test]
fn library_replay_of_every_public_capture_balances() {
    use ftpgate::capture::CaptureReader;
    use ftpgate::engine::Engine;
    use ftpgate::replay::{run_with, Options};

    for cap in public_captures() {
        let reader = CaptureReader::open(&cap).unwrap_or_else(|e| panic!("{e}"));
        let opts = Options { quiet: true, ..Options::new(&cap) };
        let s = run_with(reader, vec![Engine::new(config_in_code(), 1)], "in code", &opts)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.frames_in, independent_count(&cap), "{}", cap.display());
        assert_eq!(s.frames_in, s.frames_out + s.dropped + s.consumed, "{}", cap.display());
        assert!(s.warnings.is_empty(), "{}: {:?}", cap.display(), s.warnings);
        let ifaces: u64 = s.interfaces.iter().map(|i| i.frames_in).sum();
        assert_eq!(ifaces + s.no_interface, s.frames_in, "{}", cap.display());
    }
}

fn config_in_code() -> ftpgate::config::Config {
    use ftpgate::config::*;
    let iface = |name: &str, addr: &str| Interface {
        name: name.into(),
        device: None,
        addresses: vec![addr.parse().unwrap()],
        gateway: None,
        routes: vec![],
        mac: None,
        mtu: 1500,
    };
    Config {
        interfaces: vec![iface("inside", "192.168.0.1/16"), iface("outside", "198.51.100.1/24")],
        nat: Nat { masquerade: vec![], forward: vec![], ports: PortMode::Random },
        ftp: Ftp::default(),
        policy: Policy { default: Action::Allow, rules: vec![], pickup: false },
        limits: Limits { max_connections: 100_000, max_connections_per_source: 10_000 },
        timeouts: Timeouts::default(),
    }
}
