//! Builds a large replay capture for bench/run.sh from a few real FTP
//! sessions recorded in the lab (`lab.sh record ... --lan-view`).
//!
//!     cargo run --release --example bigcap -- OUT.pcap FRAMES SPACING_US TEMPLATE.pcapng...
//!
//! Each template is one session seen on the inside link (client ↔ server,
//! both directions). It is cloned until about FRAMES frames are written: clone
//! g uses template g % T and starts SPACING_US microseconds after clone g-1,
//! so sessions overlap as they would on a busy link. A clone gets its own
//! client and server addresses and shifted client ports, so no TCP
//! connection of the capture shares its 4-tuple with another:
//!
//! - the client's and server's last address component (IPv4 octet, IPv6
//!   group) is taken from values of the same printed width as the original,
//!   because those addresses are written out in PORT/EPRT/227 lines, and a
//!   rewrite of the same length keeps every sequence number valid;
//! - the client's data port of an active session (PORT/EPRT) moves within
//!   the values of the same printed width for the same reason; other client
//!   ports move freely;
//! - the client-address pools of the templates are disjoint.
//!
//! IPv4 header and TCP checksums are recomputed for every frame, so the
//! output is as valid as the recording (record with offloads off). Output is
//! classic pcap (microseconds, Ethernet), readable by every tool compared.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::exit;

use ftpgate::capture::CaptureReader;
use ftpgate::wire::checksum;
use ftpgate::wire::parse::{parse_into, Parsed};
use ftpgate::wire::{tcp_flags, Meta, PROTO_TCP};

/// One frame of a template, with what cloning needs to know about it.
struct TFrame {
    rel_ns: u64,
    bytes: Vec<u8>,
    /// TCP over IP: offsets of the addresses and ports.
    tcp: Option<TcpAt>,
}

struct TcpAt {
    l3: usize,
    v6: bool,
    l4: usize,
    payload: usize,
    payload_len: usize,
    from_client: bool,
}

struct Template {
    name: String,
    frames: Vec<TFrame>,
    client: IpAddr,
    server: IpAddr,
    /// The client's data ports named in PORT/EPRT (active sessions).
    active_ports: Vec<u16>,
    /// Values for the last address component of this template's clients.
    client_pool: Vec<u16>,
    server_pool: Vec<u16>,
}

fn die(msg: String) -> ! {
    eprintln!("bigcap: {msg}");
    exit(1)
}

fn last_component(a: IpAddr) -> u16 {
    match a {
        IpAddr::V4(v) => v.octets()[3] as u16,
        IpAddr::V6(v) => v.segments()[7],
    }
}

fn with_last(a: IpAddr, x: u16) -> IpAddr {
    match a {
        IpAddr::V4(v) => {
            let mut o = v.octets();
            o[3] = x as u8;
            IpAddr::V4(Ipv4Addr::from(o))
        }
        IpAddr::V6(v) => {
            let mut s = v.segments();
            s[7] = x;
            IpAddr::V6(Ipv6Addr::from(s))
        }
    }
}

/// Values printed with as many digits as `x` (decimal for IPv4 octets,
/// lowercase hex for IPv6 groups), leaving out 0 and the broadcast octet.
fn same_width_pool(x: u16, v6: bool) -> Vec<u16> {
    let width = |v: u16| if v6 { format!("{v:x}").len() } else { v.to_string().len() };
    let w = width(x);
    let max: u32 = if v6 { 0xffff } else { 254 };
    (1..=max).map(|v| v as u16).filter(|&v| width(v) == w).collect()
}

/// The address as an FTP command or reply prints it.
fn ftp_text(a: IpAddr) -> String {
    match a {
        IpAddr::V4(v) => v.to_string().replace('.', ","),
        IpAddr::V6(v) => v.to_string(),
    }
}

fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn load(path: &Path) -> Template {
    let mut r = CaptureReader::open(path).unwrap_or_else(|e| die(format!("{}: {e}", path.display())));
    let mut buf = Vec::new();
    let mut raw = Vec::new();
    while let Some(m) = r.next_frame(&mut buf).unwrap_or_else(|e| die(format!("{}: {e}", path.display()))) {
        if m.unsupported.is_some() {
            continue;
        }
        raw.push((m.ts.0, buf.clone()));
    }
    if raw.is_empty() {
        die(format!("{}: no frames", path.display()));
    }
    let t0 = raw[0].0;
    let mut client = None;
    let mut frames = Vec::with_capacity(raw.len());
    let mut metas = Vec::with_capacity(raw.len());
    for (ts, bytes) in raw {
        let mut m = Meta::EMPTY;
        let ok = matches!(parse_into(&bytes, &mut m), Parsed::Ip)
            && m.proto == PROTO_TCP
            && m.tcp.is_some()
            && m.frag.is_none();
        if ok && client.is_none() {
            let t = m.tcp.unwrap();
            if t.flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN {
                client = Some((m.src, m.dst));
            }
        }
        metas.push(ok.then_some(m));
        frames.push(TFrame { rel_ns: ts.saturating_sub(t0), bytes, tcp: None });
    }
    let (client, server) = client.unwrap_or_else(|| die(format!("{}: no SYN opens a session", path.display())));
    let mut active_ports = Vec::new();
    for (f, m) in frames.iter_mut().zip(metas) {
        let Some(m) = m else { continue };
        let t = m.tcp.unwrap();
        let from_client = m.src == client;
        if !from_client && m.src != server {
            die(format!("{}: a frame from {} is neither client nor server", path.display(), m.src));
        }
        let pl = &f.bytes[t.payload..t.payload + t.payload_len];
        if from_client && (pl.starts_with(b"PORT ") || pl.starts_with(b"EPRT ")) {
            let line = String::from_utf8_lossy(pl);
            let arg = line[5..].trim_end();
            let port = if pl.starts_with(b"PORT ") {
                let n: Vec<u16> = arg.split(',').filter_map(|x| x.parse().ok()).collect();
                (n.len() == 6).then(|| n[4] * 256 + n[5])
            } else {
                arg.split('|').nth(3).and_then(|p| p.parse().ok())
            };
            active_ports.push(port.unwrap_or_else(|| die(format!("{}: cannot read '{arg}'", path.display()))));
        }
        f.tcp =
            Some(TcpAt { l3: m.l3, v6: m.v6, l4: m.l4, payload: t.payload, payload_len: t.payload_len, from_client });
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Template {
        name,
        frames,
        client,
        server,
        active_ports,
        client_pool: same_width_pool(last_component(client), client.is_ipv6()),
        server_pool: same_width_pool(last_component(server), server.is_ipv6()),
    }
}

/// What clone `j` of a template changes.
struct CloneMap {
    client: IpAddr,
    server: IpAddr,
    /// Added to client ports (mod the ephemeral range), except active data ports.
    shift: u32,
    active: Vec<(u16, u16)>,
}

fn clone_map(t: &Template, j: u64) -> CloneMap {
    let nc = t.client_pool.len() as u64;
    let ns = t.server_pool.len() as u64;
    let ci = j % nc;
    let si = (j / nc) % ns;
    let round = j / (nc * ns);
    let active = t
        .active_ports
        .iter()
        .map(|&p| {
            // Same printed width: PORT prints p1,p2 (p1 kept, p2 moves), EPRT the decimal port.
            let new = if t.client.is_ipv4() {
                let (p1, p2) = (p >> 8, p & 0xff);
                let pool: Vec<u16> = (0..=255u16).filter(|v| v.to_string().len() == p2.to_string().len()).collect();
                let i = pool.iter().position(|&v| v == p2).unwrap() as u64;
                p1 << 8 | pool[((i + round) % pool.len() as u64) as usize]
            } else {
                let w = p.to_string().len() as u32;
                let lo = 10u32.pow(w - 1).max(1024);
                let hi = (10u32.pow(w) - 1).min(65535);
                (lo + (p as u32 - lo + round as u32) % (hi - lo + 1)) as u16
            };
            (p, new)
        })
        .collect();
    CloneMap {
        client: with_last(t.client, t.client_pool[ci as usize]),
        server: with_last(t.server, t.server_pool[si as usize]),
        shift: (round % 64512) as u32,
        active,
    }
}

fn map_client_port(c: &CloneMap, p: u16) -> u16 {
    if let Some(&(_, new)) = c.active.iter().find(|(old, _)| *old == p) {
        return new;
    }
    if p < 1024 {
        return p;
    }
    (1024 + (p as u32 - 1024 + c.shift) % 64512) as u16
}

fn write_addr(b: &mut [u8], at: usize, a: IpAddr) {
    match a {
        IpAddr::V4(v) => b[at..at + 4].copy_from_slice(&v.octets()),
        IpAddr::V6(v) => b[at..at + 16].copy_from_slice(&v.octets()),
    }
}

/// Rewrites one template frame for a clone into `out`.
fn emit(t: &Template, f: &TFrame, c: &CloneMap, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&f.bytes);
    let Some(a) = &f.tcp else { return };
    let (src_off, dst_off) = if a.v6 { (a.l3 + 8, a.l3 + 24) } else { (a.l3 + 12, a.l3 + 16) };
    let (src, dst) = if a.from_client { (c.client, c.server) } else { (c.server, c.client) };
    write_addr(out, src_off, src);
    write_addr(out, dst_off, dst);
    let cport_at = if a.from_client { a.l4 } else { a.l4 + 2 };
    let cp = map_client_port(c, rd16(out, cport_at));
    out[cport_at..cport_at + 2].copy_from_slice(&cp.to_be_bytes());

    // Addresses and the active data port as FTP prints them; same length by construction.
    if a.payload_len > 0 {
        let pl = a.payload..a.payload + a.payload_len;
        if a.from_client && (out[pl.clone()].starts_with(b"PORT ") || out[pl.clone()].starts_with(b"EPRT ")) {
            let line = String::from_utf8_lossy(&out[pl.clone()]).into_owned();
            let arg = line[5..].trim_end();
            let old_p = if line.starts_with("PORT ") {
                let n: Vec<u16> = arg.split(',').filter_map(|x| x.parse().ok()).collect();
                n[4] * 256 + n[5]
            } else {
                arg.split('|').nth(3).and_then(|p| p.parse().ok()).unwrap()
            };
            let new_p = map_client_port(c, old_p);
            let (old, new) = if line.starts_with("PORT ") {
                (
                    format!("PORT {},{},{}", ftp_text(t.client), old_p >> 8, old_p & 0xff),
                    format!("PORT {},{},{}", ftp_text(c.client), new_p >> 8, new_p & 0xff),
                )
            } else {
                let v = if c.client.is_ipv6() { 2 } else { 1 };
                (
                    format!("EPRT |{v}|{}|{old_p}|", ftp_text(t.client)),
                    format!("EPRT |{v}|{}|{new_p}|", ftp_text(c.client)),
                )
            };
            replace_same(&mut out[pl.clone()], old.as_bytes(), new.as_bytes(), &t.name);
        } else if !a.from_client && out[pl.clone()].starts_with(b"227 ") {
            let (old, new) = (format!("({},", ftp_text(t.server)), format!("({},", ftp_text(c.server)));
            replace_same(&mut out[pl.clone()], old.as_bytes(), new.as_bytes(), &t.name);
        }
    }

    if !a.v6 {
        out[a.l3 + 10] = 0;
        out[a.l3 + 11] = 0;
        let ihl = (out[a.l3] & 0x0f) as usize * 4;
        let cs = checksum::ipv4_header(&out[a.l3..a.l3 + ihl]);
        out[a.l3 + 10..a.l3 + 12].copy_from_slice(&cs.to_be_bytes());
    }
    let seg_end = a.payload + a.payload_len;
    let cs = checksum::transport(src, dst, PROTO_TCP, &out[a.l4..seg_end], 16);
    out[a.l4 + 16..a.l4 + 18].copy_from_slice(&cs.to_be_bytes());
}

fn replace_same(buf: &mut [u8], old: &[u8], new: &[u8], name: &str) {
    assert_eq!(old.len(), new.len());
    match find(buf, old) {
        Some(i) => buf[i..i + old.len()].copy_from_slice(new),
        None => die(format!(
            "{name}: expected '{}' in '{}'",
            String::from_utf8_lossy(old),
            String::from_utf8_lossy(buf).trim_end()
        )),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        die("usage: bigcap OUT.pcap FRAMES SPACING_US TEMPLATE.pcapng...".into());
    }
    let out_path = &args[1];
    let want: u64 = args[2].parse().unwrap_or_else(|_| die(format!("FRAMES '{}' is not a number", args[2])));
    let spacing_ns: u64 =
        args[3].parse::<u64>().unwrap_or_else(|_| die(format!("SPACING_US '{}' is not a number", args[3]))) * 1000;
    let mut templates: Vec<Template> = args[4..].iter().map(|p| load(Path::new(p))).collect();

    // Disjoint client pools: templates of the same family share the values in turn.
    let mut by_family: HashMap<bool, Vec<usize>> = HashMap::new();
    for (i, t) in templates.iter().enumerate() {
        by_family.entry(t.client.is_ipv6()).or_default().push(i);
    }
    for ids in by_family.values() {
        for (k, &i) in ids.iter().enumerate() {
            let pool: Vec<u16> = templates[i].client_pool.iter().copied().skip(k).step_by(ids.len()).collect();
            if pool.is_empty() {
                die(format!("{}: no client addresses left", templates[i].name));
            }
            templates[i].client_pool = pool;
        }
    }
    for t in &templates {
        eprintln!(
            "bigcap: template {}: {} frames, client {} server {}{}, {} client x {} server addresses",
            t.name,
            t.frames.len(),
            t.client,
            t.server,
            if t.active_ports.is_empty() { String::new() } else { format!(", active data ports {:?}", t.active_ports) },
            t.client_pool.len(),
            t.server_pool.len()
        );
    }

    // How many clones make about `want` frames (whole sessions only).
    let nt = templates.len() as u64;
    let mut clones = 0u64;
    let mut planned = 0u64;
    while planned < want {
        planned += templates[(clones % nt) as usize].frames.len() as u64;
        clones += 1;
    }

    let file = File::create(out_path).unwrap_or_else(|e| die(format!("{out_path}: {e}")));
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut hdr = Vec::with_capacity(24);
    hdr.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    hdr.extend_from_slice(&2u16.to_le_bytes());
    hdr.extend_from_slice(&4u16.to_le_bytes());
    hdr.extend_from_slice(&0i32.to_le_bytes());
    hdr.extend_from_slice(&0u32.to_le_bytes());
    hdr.extend_from_slice(&65535u32.to_le_bytes());
    hdr.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    w.write_all(&hdr).unwrap_or_else(|e| die(format!("{out_path}: {e}")));

    const BASE_NS: u64 = 1_767_225_600 * 1_000_000_000; // 2026-01-01 UTC
    let mut heap: BinaryHeap<Reverse<(u64, u64, usize)>> = BinaryHeap::new();
    let mut maps: HashMap<u64, CloneMap> = HashMap::new();
    let mut next_clone = 0u64;
    let mut buf = Vec::with_capacity(2048);
    let mut written = 0u64;
    loop {
        let start = next_clone * spacing_ns;
        let take_new = next_clone < clones && heap.peek().is_none_or(|Reverse((ts, _, _))| start <= *ts);
        if take_new {
            let t = &templates[(next_clone % nt) as usize];
            maps.insert(next_clone, clone_map(t, next_clone / nt));
            heap.push(Reverse((start + t.frames[0].rel_ns, next_clone, 0)));
            next_clone += 1;
            continue;
        }
        let Some(Reverse((ts, g, i))) = heap.pop() else { break };
        let t = &templates[(g % nt) as usize];
        let c = &maps[&g];
        emit(t, &t.frames[i], c, &mut buf);
        let abs = BASE_NS + ts;
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&((abs / 1_000_000_000) as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&(((abs % 1_000_000_000) / 1000) as u32).to_le_bytes());
        rec[8..12].copy_from_slice(&(buf.len() as u32).to_le_bytes());
        rec[12..16].copy_from_slice(&(buf.len() as u32).to_le_bytes());
        w.write_all(&rec).and_then(|_| w.write_all(&buf)).unwrap_or_else(|e| die(format!("{out_path}: {e}")));
        written += 1;
        if i + 1 < t.frames.len() {
            heap.push(Reverse((start_of(g, spacing_ns) + t.frames[i + 1].rel_ns, g, i + 1)));
        } else {
            maps.remove(&g);
        }
    }
    w.flush().unwrap_or_else(|e| die(format!("{out_path}: {e}")));
    let last = templates.iter().map(|t| t.frames.last().unwrap().rel_ns).max().unwrap_or(0);
    println!(
        "frames {written} sessions {clones} span_s {:.1}",
        ((clones.saturating_sub(1)) * spacing_ns + last) as f64 / 1e9
    );
}

fn start_of(g: u64, spacing_ns: u64) -> u64 {
    g * spacing_ns
}
