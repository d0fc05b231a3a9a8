//! Shared helpers for engine-level tests: configurations, frame builders, a
//! collecting sink, and an independent checksum check (etherparse).
#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use ftpgate::config::*;
use ftpgate::engine::{Engine, Sink, Verdict};
use ftpgate::event::Event;
use ftpgate::time::Nanos;

mod lab;
pub use lab::{ip, CLIENT_MAC, GW_IN_MAC, GW_OUT_MAC, INSIDE, OUTSIDE, SERVER_MAC};

/// The lab topology (`lab.rs`): inside 192.0.2.0/24 + 2001:db8:1::/64,
/// outside 198.51.100.0/24 + 2001:db8:2::/64; with `masquerade`, inside →
/// outside is masqueraded.
pub fn lab_config(masquerade: bool) -> Config {
    let mut c = lab::config(false);
    if !masquerade {
        c.nat.masquerade.clear();
    }
    c
}

/// The published-server layout: FTP server inside at 192.0.2.20, published on 198.51.100.1:21.
pub fn published_config() -> Config {
    lab::config(true)
}

#[derive(Default)]
pub struct Collect {
    pub frames: Vec<(usize, Vec<u8>)>,
    pub events: Vec<Event>,
}

impl Sink for Collect {
    fn transmit(&mut self, iface: usize, frame: &[u8]) {
        self.frames.push((iface, frame.to_vec()));
    }
    fn event(&mut self, ev: Event) {
        self.events.push(ev);
    }
}

impl Collect {
    pub fn events_json(&self) -> Vec<serde_json::Value> {
        self.events.iter().map(|e| serde_json::from_str(&e.to_json()).unwrap()).collect()
    }
    pub fn of_kind(&self, kind: &str) -> Vec<serde_json::Value> {
        self.events_json().into_iter().filter(|e| e["event"] == kind).collect()
    }
}

pub struct Tcp<'a> {
    pub src: (&'a str, u16),
    pub dst: (&'a str, u16),
    pub seq: u32,
    pub ack: u32,
    pub flags: &'a str,
    pub payload: &'a [u8],
}

/// An Ethernet/IP/TCP frame. `flags` is any of "S", "A", "F", "R", "P".
pub fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], t: Tcp<'_>) -> Vec<u8> {
    let (s, d) = (ip(t.src.0), ip(t.dst.0));
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut b = match (s, d) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64).tcp(t.src.1, t.dst.1, t.seq, 64240),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64).tcp(t.src.1, t.dst.1, t.seq, 64240),
        _ => panic!("mixed families"),
    };
    if t.flags.contains('S') {
        b = b.syn();
    }
    if t.flags.contains('A') {
        b = b.ack(t.ack);
    }
    if t.flags.contains('F') {
        b = b.fin();
    }
    if t.flags.contains('R') {
        b = b.rst();
    }
    if t.flags.contains('P') {
        b = b.psh();
    }
    let mut out = Vec::new();
    b.write(&mut out, t.payload).unwrap();
    out
}

pub fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], src: (&str, u16), dst: (&str, u16), payload: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let b = match (ip(src.0), ip(dst.0)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64).udp(src.1, dst.1),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64).udp(src.1, dst.1),
        _ => panic!("mixed families"),
    };
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

pub fn ping(src_mac: [u8; 6], dst_mac: [u8; 6], src: &str, dst: &str, id: u16, seq: u16, reply: bool) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(src_mac, dst_mac);
    let mut out = Vec::new();
    match (ip(src), ip(dst)) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let b = eth.ipv4(s.octets(), d.octets(), 64);
            let b = if reply { b.icmpv4_echo_reply(id, seq) } else { b.icmpv4_echo_request(id, seq) };
            b.write(&mut out, b"ping").unwrap();
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let b = eth.ipv6(s.octets(), d.octets(), 64);
            let b = if reply { b.icmpv6_echo_reply(id, seq) } else { b.icmpv6_echo_request(id, seq) };
            b.write(&mut out, b"ping").unwrap();
        }
        _ => panic!(),
    }
    out
}

/// Decoded view of an emitted frame, with every checksum verified by etherparse.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub ttl: u8,
    pub seq: u32,
    pub ack: u32,
    pub payload: Vec<u8>,
}

pub fn decode_verified(frame: &[u8]) -> Seen {
    let p = SlicedPacket::from_ethernet(frame).expect("emitted frame parses");
    let (src, dst, ttl) = match p.net.as_ref().expect("has IP") {
        NetSlice::Ipv4(v4) => {
            let h = v4.header().to_header();
            assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum");
            (IpAddr::V4(v4.header().source_addr()), IpAddr::V4(v4.header().destination_addr()), v4.header().ttl())
        }
        NetSlice::Ipv6(v6) => {
            (IpAddr::V6(v6.header().source_addr()), IpAddr::V6(v6.header().destination_addr()), v6.header().hop_limit())
        }
        _ => panic!("not IP"),
    };
    let mut seen = Seen { src, dst, sport: 0, dport: 0, ttl, seq: 0, ack: 0, payload: vec![] };
    match p.transport.as_ref().expect("has transport") {
        TransportSlice::Tcp(t) => {
            let h = t.to_header();
            let want = match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    h.calc_checksum_ipv4_raw(s.octets(), d.octets(), t.payload()).unwrap()
                }
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    h.calc_checksum_ipv6_raw(s.octets(), d.octets(), t.payload()).unwrap()
                }
                _ => unreachable!(),
            };
            assert_eq!(h.checksum, want, "TCP checksum");
            seen.sport = t.source_port();
            seen.dport = t.destination_port();
            seen.seq = t.sequence_number();
            seen.ack = t.acknowledgment_number();
            seen.payload = t.payload().to_vec();
        }
        TransportSlice::Udp(u) => {
            let h = u.to_header();
            if h.checksum != 0 {
                let want = match (src, dst) {
                    (IpAddr::V4(s), IpAddr::V4(d)) => {
                        h.calc_checksum_ipv4_raw(s.octets(), d.octets(), u.payload()).unwrap()
                    }
                    (IpAddr::V6(s), IpAddr::V6(d)) => {
                        h.calc_checksum_ipv6_raw(s.octets(), d.octets(), u.payload()).unwrap()
                    }
                    _ => unreachable!(),
                };
                assert_eq!(h.checksum, want, "UDP checksum");
            }
            seen.sport = u.source_port();
            seen.dport = u.destination_port();
            seen.payload = u.payload().to_vec();
        }
        TransportSlice::Icmpv4(i) => {
            let h = i.header();
            assert_eq!(h.checksum, h.icmp_type.calc_checksum(i.payload()), "ICMPv4 checksum");
            seen.payload = i.payload().to_vec();
        }
        TransportSlice::Icmpv6(i) => {
            let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) else { unreachable!() };
            let h = i.header();
            assert_eq!(
                h.checksum,
                h.icmp_type.calc_checksum(s.octets(), d.octets(), i.payload()).unwrap(),
                "ICMPv6 checksum"
            );
            seen.payload = i.payload().to_vec();
        }
        _ => panic!("unexpected transport"),
    }
    seen
}

/// Feed a TCP segment from the lab client, arriving on the inside.
pub fn from_client(e: &mut Engine, sink: &mut Collect, t: u64, seg: Tcp<'_>) -> (Verdict, Vec<u8>) {
    feed(e, sink, t, INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, seg))
}

/// Feed a TCP segment from the lab server, arriving on the outside.
pub fn from_server(e: &mut Engine, sink: &mut Collect, t: u64, seg: Tcp<'_>) -> (Verdict, Vec<u8>) {
    feed(e, sink, t, OUTSIDE, tcp(SERVER_MAC, GW_OUT_MAC, seg))
}

/// Feed a frame; return the verdict and (for Forward) the emitted frame.
pub fn feed(e: &mut Engine, sink: &mut Collect, t: u64, ingress: usize, frame: Vec<u8>) -> (Verdict, Vec<u8>) {
    let mut f = frame;
    let v = e.process(Nanos(t * 1_000_000), t, ingress, &mut f, sink);
    (v, f)
}

/// Both ends of an FTP control connection through the engine, each keeping
/// its own sequence numbers, so tests can check that what each end receives
/// is contiguous in its own view after the gateway's rewrites.
pub struct FtpSim {
    pub e: Engine,
    pub s: Collect,
    pub t: u64,
    pub client: (&'static str, u16),
    /// The server as the client addresses it.
    pub server_pub: (&'static str, u16),
    /// The server's real address.
    pub server: (&'static str, u16),
    /// The client as the server sees it (filled in from the SYN's translation).
    pub client_seen: (IpAddr, u16),
    pub client_side: usize,
    pub server_side: usize,
    pub c_seq: u32,
    pub s_seq: u32,
    /// Next byte each receiver expects, in its own view.
    pub server_rcv: u32,
    pub client_rcv: u32,
    /// Everything each receiver got, in order.
    pub server_got: Vec<u8>,
    pub client_got: Vec<u8>,
}

pub const C_ISN: u32 = 0xfffff000; // wraps during the test on purpose
pub const S_ISN: u32 = 0x10000000;

impl FtpSim {
    /// Masqueraded client 192.0.2.10 → server 198.51.100.20:21.
    pub fn masq(cfg: Config) -> FtpSim {
        Self::start(cfg, ("192.0.2.10", 40000), ("198.51.100.20", 21), ("198.51.100.20", 21), INSIDE, OUTSIDE)
    }

    /// Outside client 203.0.113.5 → published server 198.51.100.1:21 → 192.0.2.20:21.
    pub fn published(cfg: Config) -> FtpSim {
        Self::start(cfg, ("203.0.113.5", 50000), ("198.51.100.1", 21), ("192.0.2.20", 21), OUTSIDE, INSIDE)
    }

    pub fn start(
        cfg: Config,
        client: (&'static str, u16),
        server_pub: (&'static str, u16),
        server: (&'static str, u16),
        client_side: usize,
        server_side: usize,
    ) -> FtpSim {
        let mut sim = FtpSim {
            e: Engine::new(cfg, 99),
            s: Collect::default(),
            t: 0,
            client,
            server_pub,
            server,
            client_seen: (ip(client.0), client.1),
            client_side,
            server_side,
            c_seq: C_ISN,
            s_seq: S_ISN,
            server_rcv: 0,
            client_rcv: 0,
            server_got: vec![],
            client_got: vec![],
        };
        let (v, out) = sim.raw_client("S", C_ISN, 0, b"");
        assert_eq!(v, Verdict::Forward(server_side), "SYN passes");
        let o = decode_verified(&out);
        sim.client_seen = (o.src, o.sport);
        sim.c_seq = C_ISN.wrapping_add(1);
        sim.server_rcv = sim.c_seq;
        let (v, _) = sim.raw_server("SA", S_ISN, sim.c_seq, b"");
        assert_eq!(v, Verdict::Forward(client_side), "SYN-ACK passes");
        sim.s_seq = S_ISN.wrapping_add(1);
        sim.client_rcv = sim.s_seq;
        let (v, _) = sim.raw_client("A", sim.c_seq, sim.client_rcv, b"");
        assert_eq!(v, Verdict::Forward(server_side));
        sim
    }

    pub fn raw_client(&mut self, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> (Verdict, Vec<u8>) {
        self.t += 1;
        let f = tcp(CLIENT_MAC, GW_IN_MAC, Tcp { src: self.client, dst: self.server_pub, seq, ack, flags, payload });
        feed(&mut self.e, &mut self.s, self.t, self.client_side, f)
    }

    pub fn raw_server(&mut self, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> (Verdict, Vec<u8>) {
        self.t += 1;
        let dst = self.client_seen;
        let dst_s: &'static str = Box::leak(dst.0.to_string().into_boxed_str());
        let f = tcp(SERVER_MAC, GW_OUT_MAC, Tcp { src: self.server, dst: (dst_s, dst.1), seq, ack, flags, payload });
        feed(&mut self.e, &mut self.s, self.t, self.server_side, f)
    }

    /// The client sends `bytes` as one segment; returns the verdict and what
    /// the server received (checked contiguous in the server's view).
    pub fn client(&mut self, bytes: &[u8]) -> (Verdict, Option<Seen>) {
        let (v, out) = self.raw_client("PA", self.c_seq, self.client_rcv, bytes);
        self.c_seq = self.c_seq.wrapping_add(bytes.len() as u32);
        let seen = self.took(v, &out, true);
        (v, seen)
    }

    pub fn server(&mut self, bytes: &[u8]) -> (Verdict, Option<Seen>) {
        let (v, out) = self.raw_server("PA", self.s_seq, self.server_rcv, bytes);
        self.s_seq = self.s_seq.wrapping_add(bytes.len() as u32);
        let seen = self.took(v, &out, false);
        (v, seen)
    }

    /// Record a forwarded segment at its receiver, checking it starts where
    /// the receiver expects (or is an exact retransmission of what it has).
    pub fn took(&mut self, v: Verdict, out: &[u8], to_server: bool) -> Option<Seen> {
        if !matches!(v, Verdict::Forward(_)) {
            return None;
        }
        let o = decode_verified(out);
        let (rcv, got) = if to_server {
            (&mut self.server_rcv, &mut self.server_got)
        } else {
            (&mut self.client_rcv, &mut self.client_got)
        };
        if o.seq == *rcv {
            got.extend_from_slice(&o.payload);
            *rcv = rcv.wrapping_add(o.payload.len() as u32);
        } else {
            // A retransmission: it must repeat exactly what the receiver has.
            let back = rcv.wrapping_sub(o.seq) as usize;
            assert!(back <= got.len(), "segment at {} is not contiguous with {}", o.seq, *rcv);
            let from = got.len() - back;
            let overlap = o.payload.len().min(back);
            assert_eq!(&got[from..from + overlap], &o.payload[..overlap], "retransmission differs from the original");
            got.extend_from_slice(&o.payload[overlap..]);
            *rcv = rcv.wrapping_add((o.payload.len() - overlap) as u32);
        }
        Some(o)
    }

    pub fn greet(&mut self) {
        let (v, _) = self.server(b"220 ready\r\n");
        assert!(matches!(v, Verdict::Forward(_)));
    }
}

// ---------------------------------------------------------------------------
// Crafted captures replayed through the real `ftpgate replay` binary.
// ---------------------------------------------------------------------------

/// pcapng interface ids of crafted captures, named like the lab's devices so
/// that replay takes them as the ingress.
pub const IF_IN: u32 = 0;
pub const IF_OUT: u32 = 1;
pub const DEVICES: [&str; 2] = ["veth-gw-in", "veth-gw-out"];

/// A capture being built: frames with the interface they were seen on and a
/// timestamp (10 ms apart unless `wait` says otherwise).
pub struct Capture {
    pub recs: Vec<(u32, u64, Vec<u8>)>,
    pub now_ns: u64,
}

impl Default for Capture {
    fn default() -> Self {
        Capture { recs: Vec::new(), now_ns: 1_000_000_000_000 }
    }
}

impl Capture {
    pub fn new() -> Capture {
        Capture::default()
    }

    /// Append a frame seen on `iface`; returns its 1-based packet index
    /// (what the event log's `packet` field names).
    pub fn push(&mut self, iface: u32, frame: Vec<u8>) -> u64 {
        self.now_ns += 10_000_000;
        self.recs.push((iface, self.now_ns, frame));
        self.recs.len() as u64
    }

    pub fn wait(&mut self, d: Duration) {
        self.now_ns += d.as_nanos() as u64;
    }

    pub fn now_secs(&self) -> f64 {
        self.now_ns as f64 / 1e9
    }

    /// Write as pcapng with one Ethernet interface block per device name.
    pub fn write_pcapng(&self, path: &std::path::Path) {
        use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
        use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
        use std::borrow::Cow;
        let file = std::fs::File::create(path).expect("create capture");
        let mut w = pcap_file::pcapng::PcapNgWriter::new(std::io::BufWriter::new(file)).unwrap();
        for name in DEVICES {
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: pcap_file::DataLink::ETHERNET,
                snaplen: 0,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed(name)),
                    // pcap-file writes nanosecond counts; say so.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })
            .unwrap();
        }
        for (iface, ts, data) in &self.recs {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: *iface,
                timestamp: Duration::from_nanos(*ts),
                original_len: data.len() as u32,
                data: Cow::Borrowed(data),
                options: vec![],
            })
            .unwrap();
        }
        use std::io::Write;
        w.into_inner().flush().unwrap();
    }
}

/// One frame of a replay's output pcapng.
#[derive(Clone, Debug)]
pub struct OutFrame {
    /// The interface block's name (the gateway interface's device).
    pub iface: String,
    pub ts_ns: u128,
    pub frame: Vec<u8>,
}

/// What one `ftpgate replay` run produced.
pub struct Replayed {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub events: Vec<serde_json::Value>,
    pub out: Vec<OutFrame>,
}

impl Replayed {
    pub fn of_kind(&self, kind: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["event"] == kind).collect()
    }

    /// Events caused by input frame `packet` (1-based).
    pub fn at_packet(&self, packet: u64) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["packet"] == packet).collect()
    }

    pub fn drops(&self, reason: &str) -> Vec<&serde_json::Value> {
        self.events.iter().filter(|e| e["event"] == "drop" && e["reason"] == reason).collect()
    }

    /// The summary's closing `frames: ...` line.
    pub fn frames_line(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

    /// (in, out, dropped, generated) from the closing line.
    pub fn frame_counts(&self) -> (u64, u64, u64, u64) {
        let n: Vec<u64> = self
            .frames_line()
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(n.len(), 4, "closing line: {}", self.frames_line());
        (n[0], n[1], n[2], n[3])
    }

    /// Output frames sent on `device`, decoded with every checksum verified.
    pub fn sent_on(&self, device: &str) -> Vec<Seen> {
        self.out.iter().filter(|f| f.iface == device).map(|f| decode_verified(&f.frame)).collect()
    }

    /// Every output frame decoded (and checksum-verified), with its interface.
    pub fn decoded(&self) -> Vec<(String, Seen)> {
        self.out.iter().map(|f| (f.iface.clone(), decode_verified(&f.frame))).collect()
    }

    /// The TCP payload bytes that left on `device` for the flow `src → dst`, in output order.
    pub fn stream(&self, device: &str, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Vec<u8> {
        let mut v = Vec::new();
        for s in self.sent_on(device) {
            if (s.src, s.sport) == src && (s.dst, s.dport) == dst {
                v.extend_from_slice(&s.payload);
            }
        }
        v
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_ftpgate");

/// Read a pcapng the replay wrote: each enhanced packet with its interface's name.
pub fn read_pcapng_out(path: &std::path::Path) -> Vec<OutFrame> {
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
    use pcap_file::pcapng::{Block, PcapNgReader};
    let mut r = PcapNgReader::new(std::fs::File::open(path).expect("output pcapng exists")).expect("output is pcapng");
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        match b.expect("output block parses") {
            Block::InterfaceDescription(idb) => {
                let name = idb.options.iter().find_map(|o| match o {
                    InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                    _ => None,
                });
                names.push(name.unwrap_or_default());
            }
            Block::EnhancedPacket(p) => out.push(OutFrame {
                iface: names[p.interface_id as usize].clone(),
                ts_ns: p.timestamp.as_nanos(),
                frame: p.data.into_owned(),
            }),
            _ => {}
        }
    }
    out
}

/// Run `ftpgate replay [-c CONFIG] -o OUT --events EV INPUT` and collect everything.
pub fn replay_file(input: &std::path::Path, config: Option<&std::path::Path>) -> Replayed {
    let dir = tempfile::tempdir().unwrap();
    let (out, ev) = (dir.path().join("out.pcapng"), dir.path().join("events.jsonl"));
    let mut cmd = std::process::Command::new(BIN);
    cmd.arg("replay").arg("--quiet");
    if let Some(c) = config {
        cmd.arg("-c").arg(c);
    }
    cmd.arg("-o").arg(&out).arg("--events").arg(&ev).arg(input);
    let o = cmd.output().expect("run ftpgate");
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "ftpgate replay {} failed: {stderr}\n{stdout}", input.display());
    let events = std::fs::read_to_string(&ev)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("event line {l:?}: {e}")))
        .collect();
    Replayed { status: o.status, stdout, stderr, events, out: read_pcapng_out(&out) }
}

/// Write `cap` and replay it with `config_yaml` (None: the built-in default).
pub fn replay_capture(cap: &Capture, config_yaml: Option<&str>) -> Replayed {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcapng");
    cap.write_pcapng(&input);
    let cfg = config_yaml.map(|y| {
        let p = dir.path().join("gw.yaml");
        std::fs::write(&p, y).unwrap();
        p
    });
    replay_file(&input, cfg.as_deref())
}

/// The lab topology as YAML (what `lab_config` builds in code): devices
/// veth-gw-in/veth-gw-out, inside → outside allowed, masquerade when asked,
/// NAT ports preserved so that crafted captures can name the translated
/// ports in advance. `ftp_extra` is more `ftp:` keys, one per line, unindented.
pub fn lab_yaml(masquerade: bool, ftp_extra: &str) -> String {
    let mut y = String::from(
        "interfaces:\n  inside:\n    device: veth-gw-in\n    addresses: [192.0.2.1/24, \"2001:db8:1::1/64\"]\n  outside:\n    device: veth-gw-out\n    addresses: [198.51.100.1/24, \"2001:db8:2::1/64\"]\n",
    );
    y.push_str("nat:\n  ports: preserve\n");
    if masquerade {
        y.push_str("  masquerade:\n    - {from: inside, to: outside}\n");
    }
    y.push_str("ftp:\n  control_ports: [21]\n");
    for l in ftp_extra.lines().filter(|l| !l.trim().is_empty()) {
        y.push_str("  ");
        y.push_str(l.trim());
        y.push('\n');
    }
    y.push_str(
        "policy:\n  default: deny\n  rules:\n    - {name: inside-out, action: allow, from: inside, to: outside}\n",
    );
    y
}

/// The repository's rules file `name` (rules/NAME), with `nat.ports: preserve` added.
pub fn rules_yaml_preserve(name: &str) -> String {
    let text =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules").join(name)).unwrap();
    assert!(text.contains("\nnat:\n"), "rules/{name} has a nat: section");
    text.replacen("\nnat:\n", "\nnat:\n  ports: preserve\n", 1)
}

/// One TCP connection as its two ends put it on the wire, each end keeping
/// its own sequence numbers and acknowledging what it has received in its
/// own view. The gateway sits between `client_if` and `server_if`.
#[derive(Clone, Debug)]
pub struct Flow {
    pub client: (IpAddr, u16),
    /// Where the client sends (the server as the client sees it).
    pub server_pub: (IpAddr, u16),
    /// The server's real address, the source of its frames.
    pub server: (IpAddr, u16),
    /// The client as the server sees it, the destination of the server's frames.
    pub client_seen: (IpAddr, u16),
    pub client_if: u32,
    pub server_if: u32,
    /// Next sequence number each end sends.
    pub c_seq: u32,
    pub s_seq: u32,
    /// Next byte each end expects (its acknowledgement), in its own view.
    pub srv_rcv: u32,
    pub cli_rcv: u32,
}

fn gw_mac(iface: u32) -> [u8; 6] {
    if iface == IF_IN {
        GW_IN_MAC
    } else {
        GW_OUT_MAC
    }
}

impl Flow {
    pub fn new(
        client: (&str, u16),
        server_pub: (&str, u16),
        server: (&str, u16),
        client_seen: (&str, u16),
        client_if: u32,
    ) -> Flow {
        Flow {
            client: (ip(client.0), client.1),
            server_pub: (ip(server_pub.0), server_pub.1),
            server: (ip(server.0), server.1),
            client_seen: (ip(client_seen.0), client_seen.1),
            client_if,
            server_if: 1 - client_if,
            c_seq: C_ISN,
            s_seq: S_ISN,
            srv_rcv: 0,
            cli_rcv: 0,
        }
    }

    /// 192.0.2.10:cport → 198.51.100.20:21, masqueraded to 198.51.100.1:cport (ports preserved).
    pub fn masq(cport: u16) -> Flow {
        Flow::new(("192.0.2.10", cport), ("198.51.100.20", 21), ("198.51.100.20", 21), ("198.51.100.1", cport), IF_IN)
    }

    /// 192.0.2.10:cport → 198.51.100.20:21 with no NAT.
    pub fn direct(cport: u16) -> Flow {
        Flow::new(("192.0.2.10", cport), ("198.51.100.20", 21), ("198.51.100.20", 21), ("192.0.2.10", cport), IF_IN)
    }

    /// Outside client 198.51.100.10:cport → published 198.51.100.1:21 → server 192.0.2.20:21.
    pub fn published(cport: u16) -> Flow {
        Flow::new(("198.51.100.10", cport), ("198.51.100.1", 21), ("192.0.2.20", 21), ("198.51.100.10", cport), IF_OUT)
    }

    fn mk(&self, from_client: bool, flags: &str, seq: u32, ack: u32, payload: &[u8]) -> (u32, Vec<u8>) {
        let (src, dst, iface, smac) = if from_client {
            (self.client, self.server_pub, self.client_if, CLIENT_MAC)
        } else {
            (self.server, self.client_seen, self.server_if, SERVER_MAC)
        };
        let (s, d) = (src.0.to_string(), dst.0.to_string());
        let f = tcp(smac, gw_mac(iface), Tcp { src: (&s, src.1), dst: (&d, dst.1), seq, ack, flags, payload });
        (iface, f)
    }

    /// SYN, SYN-ACK, ACK.
    pub fn handshake(&mut self, cap: &mut Capture) {
        let (i, f) = self.mk(true, "S", C_ISN, 0, b"");
        cap.push(i, f);
        self.c_seq = C_ISN.wrapping_add(1);
        self.srv_rcv = self.c_seq;
        let (i, f) = self.mk(false, "SA", S_ISN, self.srv_rcv, b"");
        cap.push(i, f);
        self.s_seq = S_ISN.wrapping_add(1);
        self.cli_rcv = self.s_seq;
        let (i, f) = self.mk(true, "A", self.c_seq, self.cli_rcv, b"");
        cap.push(i, f);
    }

    /// The client sends `bytes`; the server receives them unchanged.
    pub fn c(&mut self, cap: &mut Capture, bytes: &[u8]) -> u64 {
        self.c_as(cap, bytes, bytes)
    }

    /// The client sends `bytes`; the server receives `server_gets` (a rewrite,
    /// or nothing when the gateway drops or holds them).
    pub fn c_as(&mut self, cap: &mut Capture, bytes: &[u8], server_gets: &[u8]) -> u64 {
        let (i, f) = self.mk(true, "PA", self.c_seq, self.cli_rcv, bytes);
        self.c_seq = self.c_seq.wrapping_add(bytes.len() as u32);
        self.srv_rcv = self.srv_rcv.wrapping_add(server_gets.len() as u32);
        cap.push(i, f)
    }

    /// A client segment at an explicit sequence number; no bookkeeping.
    pub fn c_at(&mut self, cap: &mut Capture, seq: u32, bytes: &[u8]) -> u64 {
        let (i, f) = self.mk(true, "PA", seq, self.cli_rcv, bytes);
        cap.push(i, f)
    }

    pub fn s(&mut self, cap: &mut Capture, bytes: &[u8]) -> u64 {
        self.s_as(cap, bytes, bytes)
    }

    pub fn s_as(&mut self, cap: &mut Capture, bytes: &[u8], client_gets: &[u8]) -> u64 {
        let (i, f) = self.mk(false, "PA", self.s_seq, self.srv_rcv, bytes);
        self.s_seq = self.s_seq.wrapping_add(bytes.len() as u32);
        self.cli_rcv = self.cli_rcv.wrapping_add(client_gets.len() as u32);
        cap.push(i, f)
    }

    /// The server sends `bytes` and the test cannot say in advance how long
    /// the client's copy will be (a gateway-written refusal): the client's
    /// later acknowledgements stay at what it had before, which is always valid.
    pub fn s_opaque(&mut self, cap: &mut Capture, bytes: &[u8]) -> u64 {
        self.s_as(cap, bytes, b"")
    }

    /// A frame of this flow with explicit flags, from either end; no bookkeeping.
    pub fn raw(
        &mut self,
        cap: &mut Capture,
        from_client: bool,
        flags: &str,
        seq: u32,
        ack: u32,
        payload: &[u8],
    ) -> u64 {
        let (i, f) = self.mk(from_client, flags, seq, ack, payload);
        cap.push(i, f)
    }
}

/// A SYN seen on `iface` (a data connection's first packet).
pub fn syn(cap: &mut Capture, iface: u32, src: (&str, u16), dst: (&str, u16)) -> u64 {
    let f = tcp(SERVER_MAC, gw_mac(iface), Tcp { src, dst, seq: 7, ack: 0, flags: "S", payload: b"" });
    cap.push(iface, f)
}

/// `lab_yaml` with the policy rules given (YAML flow mappings, one rule
/// per line) instead of "inside → outside, anything".
pub fn lab_yaml_rules(masquerade: bool, ftp_extra: &str, rules: &str) -> String {
    let y = lab_yaml(masquerade, ftp_extra);
    let at = y.find("  rules:\n").expect("lab_yaml has rules");
    let mut y = y[..at].to_string();
    y.push_str("  rules:\n");
    for l in rules.lines().filter(|l| !l.trim().is_empty()) {
        y.push_str("    - ");
        y.push_str(l.trim());
        y.push('\n');
    }
    y
}

/// TCP flags of an Ethernet frame as a string of "SAFRP" letters.
pub fn tcp_flags_of(frame: &[u8]) -> String {
    let p = SlicedPacket::from_ethernet(frame).expect("frame parses");
    let Some(TransportSlice::Tcp(t)) = p.transport else { return String::new() };
    let mut s = String::new();
    for (on, c) in [(t.syn(), 'S'), (t.ack(), 'A'), (t.fin(), 'F'), (t.rst(), 'R'), (t.psh(), 'P')] {
        if on {
            s.push(c);
        }
    }
    s
}

impl Replayed {
    /// The summary's "consumed by the gateway: N".
    pub fn consumed(&self) -> u64 {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("consumed by the gateway: "))
            .expect("summary has a consumed line")
            .trim()
            .parse()
            .unwrap()
    }

    /// Every input frame has exactly one fate, and every output frame decodes
    /// with correct checksums.
    pub fn assert_sane(&self) {
        let (i, o, d, g) = self.frame_counts();
        assert_eq!(i, o + d + self.consumed(), "frame accounting: {}", self.frames_line());
        assert_eq!(self.out.len() as u64, o + g, "output pcapng holds the forwarded and generated frames");
        for f in &self.out {
            assert!(DEVICES.contains(&f.iface.as_str()) || !f.iface.is_empty(), "named interface");
            if SlicedPacket::from_ethernet(&f.frame).is_ok_and(|p| p.net.is_some() && p.transport.is_some()) {
                decode_verified(&f.frame);
            }
        }
    }
}

impl FtpSim {
    /// A client segment at `seq` (a retransmission, or new bytes when
    /// `seq == c_seq`; the caller advances `c_seq`), recorded at the server.
    pub fn client_at(&mut self, seq: u32, bytes: &[u8]) -> (Verdict, Option<Seen>) {
        let (v, out) = self.raw_client("PA", seq, self.client_rcv, bytes);
        let seen = self.took(v, &out, true);
        (v, seen)
    }

    pub fn server_at(&mut self, seq: u32, bytes: &[u8]) -> (Verdict, Option<Seen>) {
        let (v, out) = self.raw_server("PA", seq, self.server_rcv, bytes);
        let seen = self.took(v, &out, false);
        (v, seen)
    }

    /// The client sends `segments` back to back; returns what the server got from each.
    pub fn client_segments(&mut self, segments: &[&[u8]]) -> Vec<(Verdict, Option<Seen>)> {
        segments
            .iter()
            .map(|s| {
                let r = self.client_at(self.c_seq, s);
                self.c_seq = self.c_seq.wrapping_add(s.len() as u32);
                r
            })
            .collect()
    }

    pub fn server_segments(&mut self, segments: &[&[u8]]) -> Vec<(Verdict, Option<Seen>)> {
        segments
            .iter()
            .map(|s| {
                let r = self.server_at(self.s_seq, s);
                self.s_seq = self.s_seq.wrapping_add(s.len() as u32);
                r
            })
            .collect()
    }
}
