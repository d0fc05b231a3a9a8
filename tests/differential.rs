//! The differential test against the Linux kernel's FTP helper.
//!
//! For every session recorded in the lab with the kernel as the gateway
//! (`pcaps/kernel/NAME.in.pcapng`: what entered the gateway on each side;
//! `NAME.out.pcapng`: what the kernel sent), `ftpgate replay` of the input
//! with the equivalent configuration (`masq.yaml` / `published.yaml`, with
//! `ports: preserve` as Linux) must send the same packets at L3 on each
//! interface: addresses, ports, TTL, sequence and acknowledgement numbers,
//! payload and checksums. Deliberate differences are listed per case below
//! and explained in docs/lab.md; anything else fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use pcap_file::pcapng::{Block, PcapNgReader};

/// Packets per interface name, as L3 bytes (IP header to the end of the IP packet).
fn l3_by_interface(path: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = PcapNgReader::new(f).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut names: Vec<String> = Vec::new();
    let mut out: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    while let Some(block) = r.next_block() {
        match block.unwrap() {
            Block::InterfaceDescription(idb) => {
                let name = idb
                    .options
                    .iter()
                    .find_map(|o| match o {
                        pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfName(n) => {
                            Some(n.to_string())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| format!("if{}", names.len()));
                names.push(name);
            }
            Block::EnhancedPacket(epb) => {
                let name = names[epb.interface_id as usize].clone();
                if let Some(l3) = l3(&epb.data) {
                    out.entry(name).or_default().push(l3);
                }
            }
            _ => {}
        }
    }
    out
}

fn l3(frame: &[u8]) -> Option<Vec<u8>> {
    let mut off = 12;
    let mut et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    if et == 0x8100 {
        off += 4;
        et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    let ip = &frame[off + 2..];
    let len = match et {
        0x0800 => u16::from_be_bytes([*ip.get(2)?, *ip.get(3)?]) as usize,
        0x86dd => 40 + u16::from_be_bytes([*ip.get(4)?, *ip.get(5)?]) as usize,
        _ => return None, // ARP and neighbour traffic are link business, not forwarding
    };
    // Neighbour discovery and router solicitations are not forwarded traffic either.
    if et == 0x86dd && ip.get(6) == Some(&58) && matches!(ip.get(40), Some(133..=137)) {
        return None;
    }
    Some(ip.get(..len)?.to_vec())
}

fn describe(p: &[u8]) -> String {
    match etherparse::SlicedPacket::from_ip(p) {
        Ok(s) => {
            let (src, dst) = match &s.net {
                Some(etherparse::NetSlice::Ipv4(v)) => {
                    (v.header().source_addr().to_string(), v.header().destination_addr().to_string())
                }
                Some(etherparse::NetSlice::Ipv6(v)) => {
                    (v.header().source_addr().to_string(), v.header().destination_addr().to_string())
                }
                _ => ("?".into(), "?".into()),
            };
            match &s.transport {
                Some(etherparse::TransportSlice::Tcp(t)) => format!(
                    "{src}:{} -> {dst}:{} seq {} ack {} {:?}",
                    t.source_port(),
                    t.destination_port(),
                    t.sequence_number(),
                    t.acknowledgment_number(),
                    String::from_utf8_lossy(t.payload())
                ),
                _ => format!("{src} -> {dst}"),
            }
        }
        Err(e) => format!("unparsable: {e}"),
    }
}

/// A packet of the FTP control connection (TCP port 21 either way).
fn is_control(p: &[u8]) -> bool {
    match etherparse::SlicedPacket::from_ip(p) {
        Ok(s) => {
            matches!(&s.transport, Some(etherparse::TransportSlice::Tcp(t)) if t.source_port() == 21 || t.destination_port() == 21)
        }
        Err(_) => false,
    }
}

/// Cases where ftpgate deliberately differs from the kernel, and how.
fn deliberate(name: &str) -> Option<&'static str> {
    // The kernel writes an IPv6 EPRT address fully expanded
    // (2001:0db8:0002:0000:...), and rewrites the line even when the address
    // does not change (published server: the outside client's own address).
    // ftpgate writes RFC 5952 (2001:db8:2::1) and only when something
    // changes. Servers accept both. The lines differ in length, so the rest
    // of that control connection's sequence numbers differ too; the data
    // connections must still be identical.
    if name.contains("eprt-v6") {
        return Some("IPv6 EPRT: RFC 5952 form, rewritten only when the address changes");
    }
    None
}

/// The recordings: the committed ones, or a fresh set the lab just made
/// (`FTPGATE_DIFF_DIR`, see tests/lab/differential.sh).
fn kernel_dir() -> PathBuf {
    match std::env::var_os("FTPGATE_DIFF_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("pcaps/kernel"),
    }
}

#[test]
fn ftpgate_matches_the_kernel_on_every_recorded_session() {
    let dir = kernel_dir();
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("pcaps/kernel exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.pcapng"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 10, "expected the recorded sessions in {}", dir.display());
    let tmp = tempfile::tempdir().unwrap();
    let mut report = Vec::new();
    let mut failures = Vec::new();
    // One worker, and three: the split among workers (dispatch) must not
    // change what the gateway sends.
    for (input, workers) in inputs.iter().flat_map(|i| [(i, "1"), (i, "3")]) {
        let name = input.file_name().unwrap().to_string_lossy().trim_end_matches(".in.pcapng").to_string();
        let config = dir.join(if name.starts_with("published") { "published.yaml" } else { "masq.yaml" });
        let base = name.clone();
        let name = format!("{name} ({workers} worker{})", if workers == "1" { "" } else { "s" });
        let out = tmp.path().join(format!("{base}.w{workers}.ftpgate.pcapng"));
        let run = Command::new(env!("CARGO_BIN_EXE_ftpgate"))
            .args(["replay", "-q", "--workers", workers, "-c"])
            .arg(&config)
            .arg("-o")
            .arg(&out)
            .arg(input)
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: replay failed: {}", String::from_utf8_lossy(&run.stderr));
        let ours = l3_by_interface(&out);
        let kernel = l3_by_interface(&dir.join(format!("{base}.out.pcapng")));
        let mut diffs = Vec::new();
        let mut outside_control = 0;
        for iface in kernel.keys().chain(ours.keys()).collect::<std::collections::BTreeSet<_>>() {
            let (k, o) = (kernel.get(iface).cloned().unwrap_or_default(), ours.get(iface).cloned().unwrap_or_default());
            if k.len() != o.len() {
                diffs.push(format!("{iface}: kernel sent {} packets, ftpgate {}", k.len(), o.len()));
            }
            for (i, (a, b)) in k.iter().zip(&o).enumerate() {
                if a != b {
                    if !is_control(a) || !is_control(b) {
                        outside_control += 1;
                    }
                    diffs.push(format!("{iface} #{}: kernel {} | ftpgate {}", i + 1, describe(a), describe(b)));
                }
            }
        }
        match (diffs.is_empty(), deliberate(&name)) {
            (true, _) => report.push(format!("{name}: identical")),
            (false, Some(why)) if outside_control == 0 && diffs.iter().all(|d| d.contains('#')) => {
                report.push(format!("{name}: deliberate difference: {why} ({} packets differ)", diffs.len()))
            }
            (false, _) => {
                report.push(format!("{name}: DIFFERENT"));
                failures.push(format!("{name}:\n  {}", diffs.iter().take(6).cloned().collect::<Vec<_>>().join("\n  ")));
            }
        }
    }
    println!("{}", report.join("\n"));
    assert!(failures.is_empty(), "differences from the kernel:\n{}", failures.join("\n"));
}
