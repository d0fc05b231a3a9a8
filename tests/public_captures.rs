//! Real public FTP captures (../shared/pcaps/public, described in its
//! INDEX.md) replayed through `ftpgate replay` with the built-in default:
//! no NAT, everything allowed, every FTP defence on. Attacks are refused
//! precisely; ordinary sessions pass untouched and their data connections
//! find their pinholes.

mod common;
use common::*;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};

fn public_dir() -> PathBuf {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps/public");
    if beside.is_dir() {
        return beside;
    }
    PathBuf::from("/work/shared/pcaps/public")
}

fn capture(rel: &str) -> PathBuf {
    let p = public_dir().join(rel);
    assert!(p.is_file(), "missing public capture {}", p.display());
    p
}

fn replay_default(rel: &str) -> Replayed {
    let r = replay_file(&capture(rel), None);
    let (i, o, d, _) = r.frame_counts();
    assert_eq!(i, o + d + r.consumed(), "{rel}: every frame has one fate");
    r
}

/// A TCP segment's identity and payload, without checksum checks (captured
/// frames often carry offloaded, unfinished checksums).
#[derive(Debug, PartialEq, Eq)]
struct Seg {
    src: (IpAddr, u16),
    dst: (IpAddr, u16),
    seq: u32,
    ack: u32,
    payload: Vec<u8>,
}

fn seg_of(frame: &[u8]) -> Option<Seg> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (s, d): (IpAddr, IpAddr) = match p.net? {
        NetSlice::Ipv4(v4) => (v4.header().source_addr().into(), v4.header().destination_addr().into()),
        NetSlice::Ipv6(v6) => (v6.header().source_addr().into(), v6.header().destination_addr().into()),
        _ => return None,
    };
    let TransportSlice::Tcp(t) = p.transport? else { return None };
    Some(Seg {
        src: (s, t.source_port()),
        dst: (d, t.destination_port()),
        seq: t.sequence_number(),
        ack: t.acknowledgment_number(),
        payload: t.payload().to_vec(),
    })
}

/// The TCP segments of a classic pcap with Ethernet frames.
fn input_segments(rel: &str) -> Vec<Seg> {
    let f = std::fs::File::open(capture(rel)).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(f).expect("a classic pcap");
    assert_eq!(r.header().datalink, pcap_file::DataLink::ETHERNET, "{rel}");
    let mut v = Vec::new();
    while let Some(p) = r.next_packet() {
        if let Some(s) = seg_of(&p.unwrap().data) {
            v.push(s);
        }
    }
    v
}

/// An ordinary session: every frame forwarded, nothing refused, the TCP
/// segments leaving exactly as they came (no NAT in the default), one
/// pinhole per data-connection announcement.
fn ordinary(rel: &str, pinholes: &[(&str, u16)], used: usize) -> Replayed {
    let r = replay_default(rel);
    let (i, o, d, g) = r.frame_counts();
    assert_eq!((o, d, g), (i, 0, 0), "{rel}: {}", r.frames_line());
    assert!(r.of_kind("drop").is_empty() && r.of_kind("reset").is_empty(), "{rel}: {:?}", r.of_kind("drop"));
    assert!(r.of_kind("alg_rewrite").is_empty(), "{rel}: nothing to rewrite without NAT");
    let got: Vec<(String, u64)> = r
        .of_kind("pinhole_open")
        .iter()
        .map(|p| (p["address"].as_str().unwrap().to_string(), p["port"].as_u64().unwrap()))
        .collect();
    let want: Vec<(String, u64)> = pinholes.iter().map(|(a, p)| (a.to_string(), *p as u64)).collect();
    assert_eq!(got, want, "{rel}: pinholes");
    assert_eq!(r.of_kind("pinhole_use").len(), used, "{rel}: data connections through their pinholes");
    let out: Vec<Seg> = r.out.iter().filter_map(|f| seg_of(&f.frame)).collect();
    assert_eq!(out, input_segments(rel), "{rel}: TCP leaves as it came");
    r
}

#[test]
fn ftp_bounce_blocks_only_the_bouncing_session() {
    let r = replay_default("suricata-verify/ftp-bounce.pcap");
    let bouncer = "1.1.1.2:58316→2.2.2.1:21";
    let honest = "1.1.1.2:33112→2.2.2.1:21";
    let resets = r.of_kind("reset");
    assert_eq!(resets.len(), 1, "{resets:?}");
    assert_eq!((resets[0]["session"].as_str(), resets[0]["reason"].as_str()), (Some(bouncer), Some("bounce")));
    // The refusal names the PORT 2,2,2,3,0,80 of frame 27.
    let first = r.drops("bounce").into_iter().next().expect("a bounce drop");
    assert_eq!(first["packet"], 27);
    assert!(first["detail"].as_str().unwrap().contains("2.2.2.3"), "{first}");
    // Every drop concerns the bouncing session; the honest one is untouched.
    for d in r.of_kind("drop") {
        assert_eq!(d["session"], bouncer, "{d}");
    }
    let pins = r.of_kind("pinhole_open");
    assert_eq!(pins.len(), 1);
    assert_eq!(pins[0]["session"], honest);
    assert_eq!(
        (pins[0]["address"].as_str(), pins[0]["port"].as_u64(), pins[0]["peer"].as_str()),
        (Some("1.1.1.2"), Some(59549), Some("2.2.2.1"))
    );
    // The honest session completes: its QUIT's 221 reaches the client.
    let honest_client = (ip("1.1.1.2"), 33112);
    let to_honest: Vec<u8> = r
        .out
        .iter()
        .filter_map(|f| seg_of(&f.frame))
        .filter(|s| s.dst == honest_client)
        .flat_map(|s| s.payload)
        .collect();
    assert!(String::from_utf8_lossy(&to_honest).contains("221"), "{:?}", String::from_utf8_lossy(&to_honest));
    // And the bouncer never got its PORT to the server; both of its ends got an RST.
    let to_server: Vec<u8> = r
        .out
        .iter()
        .filter_map(|f| seg_of(&f.frame))
        .filter(|s| s.src == (ip("1.1.1.2"), 58316))
        .flat_map(|s| s.payload)
        .collect();
    assert!(!String::from_utf8_lossy(&to_server).contains("PORT 2,2,2,3"));
    let rsts: Vec<Seg> =
        r.out.iter().filter(|f| tcp_flags_of(&f.frame).contains('R')).filter_map(|f| seg_of(&f.frame)).collect();
    assert_eq!(rsts.len(), 2);
    assert!(rsts.iter().any(|s| s.dst == (ip("1.1.1.2"), 58316)) && rsts.iter().any(|s| s.dst == (ip("2.2.2.1"), 21)));
    assert_eq!(r.frame_counts().3, 2);
}

#[test]
fn many_third_party_ports_open_nothing() {
    let r = replay_default("zeek/ftp-many-port-expected.pcap");
    assert!(r.of_kind("pinhole_open").is_empty(), "none of the 500 PORTs to 10.0.0.200 opens a pinhole");
    let bounces = r.drops("bounce");
    assert!(!bounces.is_empty());
    assert!(bounces[0]["detail"].as_str().unwrap().contains("10.0.0.200"), "{}", bounces[0]);
    assert_eq!(r.of_kind("reset").len(), 1, "the first bounce resets the session; the rest is refused quietly");
}

#[test]
fn auth_tls_is_reported_and_opens_nothing() {
    let r = replay_default("zeek/ftp-auth-tls.pcap");
    let enc = r.of_kind("ftp_encrypted");
    assert_eq!(enc.len(), 1);
    assert!(enc[0]["line"].as_str().unwrap().starts_with("AUTH TLS"), "{}", enc[0]);
    assert!(r.of_kind("pinhole_open").is_empty());
    let (i, o, d, _) = r.frame_counts();
    assert_eq!((o, d), (i, 0), "the encrypted session itself passes");
    // Nothing after the encryption point is parsed as FTP.
    let at = enc[0]["packet"].as_u64().unwrap();
    assert!(r
        .of_kind("ftp_command")
        .iter()
        .chain(r.of_kind("ftp_reply").iter())
        .all(|e| e["packet"].as_u64().unwrap() <= at));
}

#[test]
fn cross_family_eprt_is_a_bounce() {
    let r = replay_default("suricata-verify/ftp-active-dynamic_port-02.pcap");
    assert!(r.of_kind("pinhole_open").is_empty());
    let b = r.drops("bounce");
    assert!(!b.is_empty());
    assert_eq!(b[0]["packet"], 14);
    assert!(b[0]["detail"].as_str().unwrap().contains("2601:191:8500:2e00"), "{}", b[0]);
    assert_eq!(r.of_kind("reset").len(), 1);
}

#[test]
fn passive_download_passes_and_uses_its_pinholes() {
    ordinary(
        "suricata-verify/ftp-download-passive.pcap",
        &[("172.23.0.2", 82 * 256 + 9), ("172.23.0.2", 82 * 256 + 16), ("172.23.0.2", 82 * 256 + 16)],
        3,
    );
}

#[test]
fn active_download_passes_and_uses_its_pinholes() {
    let r = ordinary(
        "suricata-verify/ftp-download-active.pcap",
        &[("172.23.0.3", 174 * 256 + 127), ("172.23.0.3", 170 * 256 + 65), ("172.23.0.3", 169 * 256 + 175)],
        3,
    );
    for p in r.of_kind("pinhole_open") {
        assert_eq!(p["peer"], "172.23.0.2", "only the server may connect");
    }
}

#[test]
fn ipv6_epsv_session_opens_its_pinhole() {
    // The data connection is not in the capture: the pinhole waits and expires.
    let r = ordinary("zeek/ipv6-retr-samba.pcap", &[("2001:6f8:200:1::5:33", 63282)], 0);
    assert_eq!(r.of_kind("pinhole_open")[0]["peer"], "2001:470:1f05:17a6:213:72ff:fe0d:a566");
}

#[test]
fn epsv_over_ipv4_opens_four_pinholes() {
    ordinary(
        "suricata-verify/ftp-epsv.pcap",
        &[("192.168.1.231", 58612), ("192.168.1.231", 37100), ("192.168.1.231", 36986), ("192.168.1.231", 35656)],
        0,
    );
}

#[test]
fn fourteen_data_connections_each_through_its_pinhole() {
    let r = replay_default("suricata-verify/ruletype-firewall-116-ftp-all-data-ipv4.pcap");
    let (i, o, d, _) = r.frame_counts();
    assert_eq!((o, d), (i, 0));
    assert_eq!(r.of_kind("pinhole_open").len(), 14);
    assert_eq!(r.of_kind("pinhole_use").len(), 14);
    assert!(r.of_kind("drop").is_empty());
}
