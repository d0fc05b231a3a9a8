//! Seed corpora for the fuzz targets, generated from captures at run time
//! (the captures are read in place, never copied into the repository):
//! the repository's pcaps/ and, when present, the shared public captures
//! ($FTPGATE_SHARED/pcaps/public, ../shared/pcaps/public or /work/shared/pcaps/public).
//!
//!   cargo run --manifest-path fuzz/Cargo.toml --features seedgen --bin seeds -- <repo> <out>
//!
//! writes <out>/<target>/<name> for each target:
//! - ftp_parse: every distinct FTP control line seen, plus hand-written ones;
//! - line_stream: each control direction's segments as a LineStream program;
//! - wire: frames (first few of each capture) with a short setter program;
//! - config: the repository's example and test configurations;
//! - engine: per capture, its control dialogue replayed through the
//!   harness's templated flows (so the lab addresses apply), and its first
//!   frames as raw frames.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use ftpgate::capture::CaptureReader;
use ftpgate::wire::{parse_frame, FrameKind};

fn captures(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let mut entries: Vec<_> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            captures(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("pcap" | "pcapng" | "cap")) {
            out.push(p);
        }
    }
}

/// (is from the client, payload) of each FTP control segment, and the first frames.
struct Read {
    control: Vec<(bool, Vec<u8>)>,
    frames: Vec<Vec<u8>>,
}

fn read(path: &Path) -> Option<Read> {
    let mut r = CaptureReader::open(path).ok()?;
    let mut buf = Vec::new();
    let mut out = Read { control: Vec::new(), frames: Vec::new() };
    let mut n = 0;
    while let Ok(Some(meta)) = r.next_frame(&mut buf) {
        n += 1;
        if n > 5000 {
            break;
        }
        if meta.unsupported.is_some() {
            continue;
        }
        if out.frames.len() < 40 {
            out.frames.push(buf.clone());
        }
        if let FrameKind::Ip(m) = parse_frame(&buf) {
            if let Some(t) = m.tcp {
                let end = (t.payload + t.payload_len).min(buf.len());
                if t.payload_len > 0 && (m.dport == 21 || m.sport == 21) && t.payload < end {
                    out.control.push((m.dport == 21, buf[t.payload..end].to_vec()));
                }
            }
        }
    }
    Some(out)
}

fn write(dir: &Path, name: &str, data: &[u8]) {
    let _ = fs::write(dir.join(name), data);
}

/// An engine program: configuration bytes, then the dialogue on flow `fi`.
fn engine_dialogue(control: &[(bool, Vec<u8>)], fi: u8, cfg: [u8; 2]) -> Vec<u8> {
    let mut p = cfg.to_vec();
    // Client SYN, server SYN-ACK, client ACK (no payload).
    p.extend_from_slice(&[0, fi, 0, 0]);
    p.extend_from_slice(&[2, fi, 0, 0]);
    p.extend_from_slice(&[0, fi, 5, 0, 0]);
    for (from_client, data) in control.iter().take(400) {
        for chunk in data.chunks(255) {
            p.extend_from_slice(&[if *from_client { 0 } else { 2 }, fi, 1, 0, 7, chunk.len() as u8]);
            p.extend_from_slice(chunk);
        }
        let text = String::from_utf8_lossy(data);
        if text.starts_with("PORT") || text.starts_with("EPRT") || text.starts_with("227") || text.starts_with("229") {
            // A data connection from the announced peer, then from a stranger.
            p.extend_from_slice(&[4, 0, 1, 0, 0, 0, 0, 1]);
            p.extend_from_slice(&[4, 0, 1, 1, 0, 0, 0, 1]);
        }
    }
    // FIN from both ends, then a long tick.
    p.extend_from_slice(&[0, fi, 6, 0, 0]);
    p.extend_from_slice(&[2, fi, 6, 0, 0]);
    p.extend_from_slice(&[7, 0xff, 0xff]);
    p
}

fn line_stream_program(control: &[(bool, Vec<u8>)], client: bool) -> Vec<u8> {
    let mut p = vec![0xff, 0xff, 0xf0, 0x00, 200, 0x02, 0x00];
    for (_, data) in control.iter().filter(|(c, _)| *c == client).take(300) {
        for chunk in data.chunks(95) {
            p.extend_from_slice(&[0, 0, 0, chunk.len() as u8]);
            p.extend_from_slice(chunk);
        }
    }
    p
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (repo, out) = match args.as_slice() {
        [_, repo, out] => (PathBuf::from(repo), PathBuf::from(out)),
        _ => {
            eprintln!("usage: seeds <repo> <out>");
            std::process::exit(2);
        }
    };
    let dirs: Vec<PathBuf> =
        ["ftp_parse", "line_stream", "wire", "config", "engine"].iter().map(|t| out.join(t)).collect();
    for d in &dirs {
        fs::create_dir_all(d).expect("create corpus directory");
    }
    let [parse_dir, stream_dir, wire_dir, config_dir, engine_dir] = &dirs[..] else { unreachable!() };

    let mut files = Vec::new();
    captures(&repo.join("pcaps"), &mut files);
    // As tests/cli.rs: $FTPGATE_SHARED, else ../shared beside the crate, else /work/shared.
    let shared = std::env::var_os("FTPGATE_SHARED")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .or_else(|| Some(repo.join("../shared")).filter(|p| p.is_dir()))
        .unwrap_or_else(|| PathBuf::from("/work/shared"));
    let public = shared.join("pcaps/public");
    if public.is_dir() {
        captures(&public, &mut files);
    } else {
        eprintln!("seeds: {} not found; seeding from pcaps/ only", public.display());
    }

    let mut lines = BTreeSet::new();
    for l in [
        &b"PORT 192,0,2,10,156,64"[..],
        b"EPRT |1|192.0.2.10|40000|",
        b"EPRT |2|2001:db8:1::10|40000|",
        b"EPRT !2!::ffff:1.2.3.4!1!",
        b"EPSV ALL",
        b"227 Entering Passive Mode (198,51,100,20,195,80).",
        b"227 =198,51,100,20,195,80",
        b"229 Entering Extended Passive Mode (|||50000|)",
        b"230-multi",
        b"PORT 300,1,1,1,1,1",
    ] {
        lines.insert(l.to_vec());
    }
    let mut n_engine = 0;
    let mut n_wire = 0;
    for (i, f) in files.iter().enumerate() {
        let Some(r) = read(f) else {
            eprintln!("seeds: cannot read {}", f.display());
            continue;
        };
        let stem = format!("{i:03}-{}", f.file_stem().and_then(|s| s.to_str()).unwrap_or("cap"));
        for (_, data) in &r.control {
            for l in data.split(|&b| b == b'\n') {
                let l = l.strip_suffix(b"\r").unwrap_or(l);
                if !l.is_empty() && l.len() < 512 && lines.len() < 4000 {
                    lines.insert(l.to_vec());
                }
            }
        }
        if !r.control.is_empty() {
            // Masqueraded client (flow 0), and the published server (flow 3), varied configs.
            write(engine_dir, &format!("{stem}-masq"), &engine_dialogue(&r.control, 0, [0, 0]));
            write(engine_dir, &format!("{stem}-pub"), &engine_dialogue(&r.control, 3, [0x10, 0x00]));
            write(stream_dir, &format!("{stem}-c"), &line_stream_program(&r.control, true));
            write(stream_dir, &format!("{stem}-s"), &line_stream_program(&r.control, false));
            n_engine += 2;
        }
        // Raw frames as the engine sees them (ingress by a coin: both sides).
        let mut raw = vec![0x04, 0x00];
        for (k, fr) in r.frames.iter().enumerate() {
            let len = fr.len().min(1599);
            raw.extend_from_slice(&[5, (k % 2) as u8]);
            raw.extend_from_slice(&(len as u16).to_be_bytes());
            raw.extend_from_slice(&fr[..len]);
        }
        write(engine_dir, &format!("{stem}-raw"), &raw);
        n_engine += 1;
        for (k, fr) in r.frames.iter().take(6).enumerate() {
            let len = fr.len().min(2047);
            let mut w = (len as u16).to_be_bytes().to_vec();
            w.extend_from_slice(&fr[..len]);
            // dec_ttl, ports, seq/ack, a SACK map, a payload splice.
            w.extend_from_slice(&[
                1, 4, 0x9c, 0x40, 5, 0, 21, 6, 1, 2, 3, 4, 7, 5, 6, 7, 8, 8, 0, 0, 1, 0, 13, 0, 0, 0, 0, 4, b'N', b'O',
                b'O', b'P',
            ]);
            write(wire_dir, &format!("{stem}-{k}"), &w);
            n_wire += 1;
        }
    }
    for (k, l) in lines.iter().enumerate() {
        write(parse_dir, &format!("line-{k:04}"), l);
    }
    let mut n_config = 0;
    for d in ["rules", "tests/data/config"] {
        let mut files = Vec::new();
        if let Ok(rd) = fs::read_dir(repo.join(d)) {
            files.extend(rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|e| e == "yaml")));
        }
        files.sort();
        for p in files {
            if let Ok(text) = fs::read(&p) {
                let name = p.file_name().and_then(|s| s.to_str()).unwrap_or("c.yaml").to_string();
                write(config_dir, &name, &text);
                n_config += 1;
            }
        }
    }
    println!(
        "seeds: {} captures -> engine {n_engine}, wire {n_wire}, ftp_parse {}, line_stream {}, config {n_config}",
        files.len(),
        lines.len(),
        2 * n_engine / 3
    );
}
