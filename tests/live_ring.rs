//! The datapath backends on veth pairs in throwaway network namespaces.
//!
//! Needs root and iproute2 (`ip`); the GSO test also needs `ethtool`. Each
//! test prints why it skips otherwise. Every namespace is named `fgr…`, is
//! created by the test that uses it and deleted when that test ends, pass or
//! fail. Sockets are opened by a thread that has entered the namespace with
//! setns(2); they stay in that namespace afterwards.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use ftpgate::live::datapath::{
    open_datapath, Backend, Batch, Datapath, Fanout, Link, Offload, RingConfig, RingDatapath, GSO_ECN, GSO_TCPV4,
};
use ftpgate::wire::checksum;

#[path = "../benches/fixture/counting.rs"]
mod counting;

#[global_allocator]
static A: counting::Counting = counting::Counting;

const MAX_FRAME: usize = 1500 + 18;
const ETH_TEST: u16 = 0x88b5; // IEEE local experimental ethertype

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) not found".into());
    }
    None
}

macro_rules! need_root {
    () => {
        if let Some(r) = skip_reason() {
            eprintln!("skipped: {r}");
            return;
        }
    };
}

/// Namespaces of one test, deleted on drop (also when the test panics).
struct Lab {
    ns: Vec<String>,
}

impl Lab {
    /// `n` namespaces named fgr<tag><pid><i>, with IPv6 off so nothing but
    /// the test's own traffic (and ARP, avoided with static neighbours) flows.
    fn new(tag: &str, n: usize) -> Lab {
        let pid = std::process::id() % 100_000;
        let mut lab = Lab { ns: Vec::new() };
        for i in 0..n {
            let name = format!("fgr{tag}{pid}{i}");
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
            run("ip", &["netns", "add", &name]);
            lab.ns.push(name.clone());
            run("ip", &["netns", "exec", &name, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            run("ip", &["netns", "exec", &name, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
            run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        }
        lab
    }

    fn ns(&self, i: usize) -> &str {
        &self.ns[i]
    }

    /// A veth pair: `a` in namespace `i`, `b` in namespace `j`, both up with
    /// fixed MACs 02:00:00:00:<i>:<k>.
    fn veth(&self, i: usize, a: &str, j: usize, b: &str) {
        run("ip", &["link", "add", a, "netns", self.ns(i), "type", "veth", "peer", "name", b, "netns", self.ns(j)]);
        for (n, dev) in [(i, a), (j, b)] {
            run("ip", &["-n", self.ns(n), "link", "set", dev, "address", &mac_str(mac_of(n, dev)), "up"]);
        }
    }

    fn addr(&self, i: usize, dev: &str, cidr: &str) {
        run("ip", &["-n", self.ns(i), "addr", "add", cidr, "dev", dev]);
    }

    fn neigh(&self, i: usize, dev: &str, ip: &str, mac: [u8; 6]) {
        run("ip", &["-n", self.ns(i), "neigh", "replace", ip, "lladdr", &mac_str(mac), "dev", dev, "nud", "permanent"]);
    }

    fn exec(&self, i: usize, args: &[&str]) {
        let mut v = vec!["netns", "exec", self.ns(i)];
        v.extend_from_slice(args);
        run("ip", &v);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn mac_of(ns: usize, dev: &str) -> [u8; 6] {
    [0x02, 0, 0, 0, ns as u8, dev.bytes().map(u32::from).sum::<u32>() as u8]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Run `f` on a thread inside namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = File::open(format!("/var/run/netns/{ns}")).expect("namespace file");
            // SAFETY: setns on this thread only, with a namespace fd we hold open.
            assert_eq!(unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) }, 0, "setns");
            f()
        })
        .join()
        .expect("namespace thread")
    })
}

fn open(lab: &Lab, ns: usize, dev: &str, dp: &mut (dyn Datapath + Send), fanout: Option<&Fanout>) -> Link {
    in_ns(lab.ns(ns), || dp.open(dev, MAX_FRAME, fanout)).unwrap_or_else(|e| panic!("open {dev}: {e}"))
}

fn ring(vnet: bool) -> RingDatapath {
    RingDatapath { config: RingConfig { vnet_hdr: vnet, ..Default::default() } }
}

/// A plain AF_PACKET socket bound to `dev` (in the calling thread's
/// namespace), receiving `proto` (0: nothing), with a large receive buffer.
fn raw_socket(dev: &str, proto: u16) -> OwnedFd {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto.to_be())) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(dev).unwrap();
    // SAFETY: NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "no device {dev}");
    // SAFETY: zeroed sockaddr_ll is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: bind with a live sockaddr_ll.
    let r = unsafe {
        libc::bind(fd.as_raw_fd(), &sll as *const _ as *const libc::sockaddr, std::mem::size_of_val(&sll) as u32)
    };
    assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
    let big: libc::c_int = 8 << 20;
    // SAFETY: setsockopt with a live c_int.
    unsafe {
        libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &big as *const _ as *const _, 4)
    };
    fd
}

fn raw_send(fd: &OwnedFd, frame: &[u8]) {
    // SAFETY: send from a live slice.
    let r = unsafe { libc::send(fd.as_raw_fd(), frame.as_ptr() as *const _, frame.len(), 0) };
    assert_eq!(r, frame.len() as isize, "send: {}", std::io::Error::last_os_error());
}

/// The next frame on a raw socket, waiting until `deadline`.
fn raw_recv(fd: &OwnedFd, deadline: Instant) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 70_000];
    let left = deadline.saturating_duration_since(Instant::now());
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: poll on one live pollfd.
    if unsafe { libc::poll(&mut p, 1, left.as_millis() as i32) } <= 0 {
        return None;
    }
    // SAFETY: recv into a live buffer.
    let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr() as *mut _, buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

/// A test frame: `len` bytes, ethertype ETH_TEST, sequence number `seq` and
/// a pattern; with `vlan`, an 802.1Q tag (VID `vlan`) in front of the type.
fn test_frame(dst: [u8; 6], src: [u8; 6], seq: u32, len: usize, vlan: Option<u16>) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ETH_TEST.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        f.push((f.len() as u32 * 7 + seq) as u8);
    }
    f
}

fn is_test_frame(f: &[u8]) -> bool {
    f.len() >= 14
        && (f[12..14] == ETH_TEST.to_be_bytes()
            || (f[12..14] == [0x81, 0] && f.get(16..18) == Some(&ETH_TEST.to_be_bytes()[..])))
}

/// Receive until `want` test frames arrived or `limit` passed.
fn collect(link: &mut Link, want: usize, limit: Duration) -> (Vec<Vec<u8>>, Vec<Offload>, u32) {
    let deadline = Instant::now() + limit;
    let (mut got, mut offs, mut oversized) = (Vec::new(), Vec::new(), 0);
    let mut b = Batch::with_capacity(1 << 16);
    while got.len() < want && Instant::now() < deadline {
        b.clear();
        link.rx.recv_batch(&mut b, 64, Duration::from_millis(20)).unwrap();
        oversized += b.oversized;
        for (f, o) in b.iter_offloads() {
            if is_test_frame(f) {
                got.push(f.to_vec());
                offs.push(o);
            }
        }
    }
    (got, offs, oversized)
}

#[test]
fn frames_arrive_intact_and_in_order() {
    need_root!();
    let lab = Lab::new("rx", 2);
    lab.veth(0, "a0", 1, "b0");
    let (a, b) = (mac_of(0, "a0"), mac_of(1, "b0"));
    let sender = in_ns(lab.ns(0), || raw_socket("a0", 0));
    for (name, mut dp, vlan) in [
        ("ring+vnet", Box::new(ring(true)) as Box<dyn Datapath + Send>, true),
        ("ring", Box::new(ring(false)), true),
        // pnet has no way to learn a stripped VLAN tag: untagged frames only.
        ("pnet", Box::new(ftpgate::live::datapath::PnetDatapath), false),
    ] {
        let mut link = open(&lab, 1, "b0", dp.as_mut(), None);
        assert_eq!(link.mac, b, "{name}: the device's MAC");
        let sent: Vec<Vec<u8>> = (0..150u32)
            .map(|i| {
                let tag = (vlan && i % 5 == 0).then_some(100 + i as u16);
                // Lengths from a runt to a full 1500-byte MTU frame (plus tag).
                let len = [60, 61, 64, 100, 513, 1000, 1514][i as usize % 7] + if tag.is_some() { 4 } else { 0 };
                test_frame(b, a, i, len, tag)
            })
            .collect();
        for f in &sent {
            raw_send(&sender, f);
        }
        let (got, offs, oversized) = collect(&mut link, sent.len(), Duration::from_secs(5));
        assert_eq!(oversized, 0, "{name}");
        assert_eq!(got.len(), sent.len(), "{name}: every frame arrives");
        for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
            assert_eq!(g, s, "{name}: frame {i} intact, in order (VLAN tag put back)");
        }
        assert!(offs.iter().all(|o| *o == Offload::default()), "{name}: ordinary frames");
    }
}

#[test]
fn a_batch_goes_out_in_order_and_a_refused_frame_is_reported() {
    need_root!();
    let lab = Lab::new("tx", 2);
    lab.veth(0, "a0", 1, "b0");
    let (a, b) = (mac_of(0, "a0"), mac_of(1, "b0"));
    for (name, backend, vnet) in
        [("ring+vnet", Backend::Ring, true), ("ring", Backend::Ring, false), ("pnet", Backend::Pnet, false)]
    {
        let mut dp: Box<dyn Datapath + Send> = match backend {
            Backend::Ring => Box::new(ring(vnet)),
            Backend::Pnet => Box::new(ftpgate::live::datapath::PnetDatapath),
        };
        let mut link = open(&lab, 1, "b0", dp.as_mut(), None);
        let capture = in_ns(lab.ns(0), || raw_socket("a0", ETH_TEST));
        let mut batch = Batch::with_capacity(1 << 18);
        let mut sent = Vec::new();
        for i in 0..150u32 {
            let len = if i == 70 { MAX_FRAME + 1 } else { 60 + (i as usize * 37) % 1455 };
            let f = test_frame(a, b, i, len, None);
            batch.push(&f);
            if i != 70 {
                sent.push(f);
            }
        }
        let mut failed = Vec::new();
        link.tx.send_batch(&batch, &mut |i, e| failed.push((i, e.raw_os_error())));
        assert_eq!(failed, vec![(70, Some(libc::EMSGSIZE))], "{name}: only the oversized frame is refused");
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = Vec::new();
        while got.len() < sent.len() {
            match raw_recv(&capture, deadline) {
                Some(f) => got.push(f),
                None => break,
            }
        }
        assert_eq!(got.len(), sent.len(), "{name}: every other frame arrives");
        assert!(got == sent, "{name}: intact and in order");
        // The worker sends a batch per device per burst: that costs no
        // allocation (both backends once built a list of the frames per call).
        {
            let mut ok = Batch::with_capacity(1 << 16);
            for i in 0..TX_BURST {
                ok.push(&test_frame(a, b, 500 + i, 1000, None));
            }
            let mut refused = 0;
            let before = counting::allocs();
            link.tx.send_batch(&ok, &mut |_, _| refused += 1);
            assert_eq!(counting::allocs() - before, 0, "{name}: send_batch allocated");
            assert_eq!(refused, 0, "{name}");
            for _ in 0..TX_BURST {
                assert!(raw_recv(&capture, Instant::now() + Duration::from_secs(2)).is_some(), "{name}");
            }
        }
        // A single send goes through too.
        let one = test_frame(a, b, 999, 200, None);
        link.tx.send(&one).unwrap();
        assert_eq!(raw_recv(&capture, Instant::now() + Duration::from_secs(2)), Some(one), "{name}");
    }
}

/// Frames in the allocation check of a batch send: more than one sendmmsg call's worth.
const TX_BURST: u32 = 100;

/// IPv4 header checksum and TCP checksum of an untagged frame are correct.
fn tcp4_checksums_ok(f: &[u8]) -> bool {
    let ihl = usize::from(f[14] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let ip = &f[14..14 + ihl];
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let seg = &f[14 + ihl..14 + total];
    let field = u16::from_be_bytes([seg[16], seg[17]]);
    checksum::ipv4_header(ip) == u16::from_be_bytes([ip[10], ip[11]])
        && checksum::transport(src.into(), dst.into(), 6, seg, 16) == field
}

/// (seq, flags, payload) of an untagged IPv4 TCP frame.
fn tcp4_parts(f: &[u8]) -> (u32, u8, &[u8]) {
    let ihl = usize::from(f[14] & 15) * 4;
    let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
    let t = 14 + ihl;
    let thl = usize::from(f[t + 12] >> 4) * 4;
    (u32::from_be_bytes(f[t + 4..t + 8].try_into().unwrap()), f[t + 13], &f[t + thl..14 + total])
}

fn is_tcp4(f: &[u8]) -> bool {
    f.len() >= 54 && f[12..14] == [8, 0] && f[23] == 6
}

#[test]
fn gso_frames_arrive_whole_and_leave_segmented() {
    need_root!();
    if Command::new("ethtool").arg("--version").output().is_err() {
        eprintln!("skipped: `ethtool` not found");
        return;
    }
    // A (192.0.2.1, TSO on) sends bulk TCP to B (192.0.2.2); the ring on b0
    // sees it; the test sends one GSO frame out b1 (TSO and checksum offload
    // off, so the kernel cuts it and checksums the pieces itself) to C.
    let lab = Lab::new("gso", 3);
    lab.veth(0, "a0", 1, "b0");
    lab.veth(1, "b1", 2, "c0");
    lab.addr(0, "a0", "192.0.2.1/24");
    lab.addr(1, "b0", "192.0.2.2/24");
    lab.neigh(0, "a0", "192.0.2.2", mac_of(1, "b0"));
    lab.neigh(1, "b0", "192.0.2.1", mac_of(0, "a0"));
    lab.exec(0, &["ethtool", "-K", "a0", "tso", "on", "gso", "on", "tx", "on"]);
    lab.exec(1, &["ethtool", "-K", "b1", "tso", "off", "tx", "off"]);

    let mut dp = ring(true);
    let mut rx = open(&lab, 1, "b0", &mut dp, None);
    let mut out = open(&lab, 1, "b1", &mut dp, None);
    let capture = in_ns(lab.ns(2), || raw_socket("c0", libc::ETH_P_IP as u16));

    let listener = in_ns(lab.ns(1), || TcpListener::bind("192.0.2.2:5001")).unwrap();
    let mut client = in_ns(lab.ns(0), || {
        TcpStream::connect_timeout(&SocketAddr::from(([192, 0, 2, 2], 5001)), Duration::from_secs(2))
    })
    .unwrap();
    let (mut server, _) = listener.accept().unwrap();
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let data: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|s| {
        s.spawn(|| {
            client.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = client.write_all(&data);
        });
        s.spawn(|| {
            let mut buf = vec![0u8; 1 << 16];
            let mut n = 0;
            while n < data.len() {
                match server.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => n += k,
                }
            }
        });

        // All of the bulk data: GSO frames (larger than a ring slot, so read
        // from the socket's queue) mixed with ordinary ones, in order.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut b = Batch::with_capacity(1 << 20);
        let mut found = None;
        let (mut next_seq, mut seen, mut gso_frames) = (None::<u32>, 0usize, 0);
        while seen < data.len() && Instant::now() < deadline {
            b.clear();
            rx.rx.recv_batch(&mut b, 64, Duration::from_millis(20)).unwrap();
            assert_eq!(b.oversized, 0, "every frame fits a slot or comes through the queue");
            for (f, o) in b.iter_offloads().filter(|(f, _)| is_tcp4(f) && f[34..36] != 5001u16.to_be_bytes()) {
                let (seq, flags, p) = tcp4_parts(f);
                if flags & 0x02 != 0 {
                    next_seq = Some(seq.wrapping_add(1));
                    continue;
                }
                let Some(want) = next_seq else { continue };
                if p.is_empty() || (seq.wrapping_sub(want) as i32) < 0 {
                    continue; // a pure ACK or a retransmission
                }
                assert_eq!(seq, want, "frames in sequence (a gap: reordered or lost)");
                next_seq = Some(seq.wrapping_add(p.len() as u32));
                seen += p.len();
                if o.is_gso() {
                    gso_frames += 1;
                    if found.is_none() {
                        found = Some((f.to_vec(), o));
                    }
                }
            }
        }
        assert_eq!(seen, data.len(), "all the data, in order ({gso_frames} GSO frames)");
        let (frame, off) = found.expect("a GSO frame from a TSO sender");
        assert_eq!(off.gso_type & !GSO_ECN, GSO_TCPV4);
        assert!((500..=1460).contains(&off.gso_size), "gso_size {} is an MSS", off.gso_size);
        let (seq, _, payload) = tcp4_parts(&frame);
        assert!(payload.len() > usize::from(off.gso_size), "more than one segment's worth: {}", payload.len());
        assert!(frame.len() > MAX_FRAME, "larger than the MTU");
        assert!(tcp4_checksums_ok(&frame), "the partial checksum was completed correctly");
        assert!(payload.windows(2).all(|w| w[1] == ((u16::from(w[0]) + 1) % 251) as u8), "payload intact");

        // Out b1: the kernel cuts it into MTU-sized, checksum-valid segments.
        let mut batch = Batch::with_capacity(frame.len());
        batch.push_offload(&frame, off);
        let mut failed = Vec::new();
        out.tx.send_batch(&batch, &mut |i, e| failed.push((i, e.to_string())));
        assert!(failed.is_empty(), "{failed:?}");
        let want = payload.len().div_ceil(usize::from(off.gso_size));
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut segs = Vec::new();
        while segs.len() < want {
            match raw_recv(&capture, deadline) {
                Some(f) if is_tcp4(&f) => segs.push(f),
                Some(_) => {}
                None => break,
            }
        }
        assert_eq!(segs.len(), want, "one frame per gso_size bytes of payload");
        let mut joined = Vec::new();
        for (k, s) in segs.iter().enumerate() {
            assert!(s.len() <= 1514, "segment {k} fits the MTU: {}", s.len());
            assert!(tcp4_checksums_ok(s), "segment {k} has correct checksums");
            let (sseq, _, p) = tcp4_parts(s);
            assert_eq!(sseq, seq.wrapping_add(joined.len() as u32), "segment {k} sequence number");
            if k + 1 < want {
                assert_eq!(p.len(), usize::from(off.gso_size));
            }
            joined.extend_from_slice(p);
        }
        assert!(joined == payload, "the segments carry the GSO frame's payload");
    });
}

/// cBPF: for IPv4 UDP, return (destination port & 1); anything else 0.
/// Offsets are from the network header: the kernel runs fanout programs
/// after the Ethernet header is pulled.
fn udp_port_parity() -> Vec<libc::sock_filter> {
    let ins = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    vec![
        ins(0x28, 0, 0, (libc::SKF_AD_OFF + libc::SKF_AD_PROTOCOL) as u32), // ldh proto
        ins(0x15, 0, 6, 0x0800),                                            // jeq IPv4, else ret 0
        ins(0x30, 0, 0, 9),                                                 // ldb [9]
        ins(0x15, 0, 4, 17),                                                // jeq UDP, else ret 0
        ins(0xb1, 0, 0, 0),                                                 // ldxb 4*([0]&0xf)
        ins(0x48, 0, 0, 2),                                                 // ldh [x+2]
        ins(0x54, 0, 0, 1),                                                 // and #1
        ins(0x16, 0, 0, 0),                                                 // ret a
        ins(0x06, 0, 0, 0),                                                 // ret #0
    ]
}

/// UDP destination port of an untagged IPv4 UDP frame.
fn udp_dport(f: &[u8]) -> Option<u16> {
    if f.len() < 42 || f[12..14] != [8, 0] || f[23] != 17 {
        return None;
    }
    let t = 14 + usize::from(f[14] & 15) * 4;
    Some(u16::from_be_bytes([f[t + 2], f[t + 3]]))
}

#[test]
fn fanout_splits_frames_as_the_program_says() {
    need_root!();
    let lab = Lab::new("fan", 2);
    lab.veth(0, "a0", 1, "b0");
    lab.addr(0, "a0", "192.0.2.1/24");
    lab.addr(1, "b0", "192.0.2.2/24");
    lab.neigh(0, "a0", "192.0.2.2", mac_of(1, "b0"));
    let udp = in_ns(lab.ns(0), || UdpSocket::bind("192.0.2.1:0")).unwrap();
    for (name, group, backend) in [("ring", 0x4a01u16, Backend::Ring), ("pnet", 0x4a02, Backend::Pnet)] {
        let fanout = Fanout { group, program: udp_port_parity() };
        let mut dp = open_datapath(backend);
        let mut links: Vec<Link> = (0..2)
            .map(|_| {
                in_ns(lab.ns(1), || dp.open("b0", MAX_FRAME, Some(&fanout))).unwrap_or_else(|e| panic!("{name}: {e}"))
            })
            .collect();
        let ports: Vec<u16> = (40000..40040).collect();
        for p in &ports {
            udp.send_to(&p.to_be_bytes(), ("192.0.2.2", *p)).unwrap();
        }
        // The worker pattern: poll both sockets, then take from the ready
        // ones without blocking.
        let mut seen: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut b = Batch::with_capacity(1 << 16);
        while seen.len() < ports.len() && Instant::now() < deadline {
            let mut pfds: Vec<libc::pollfd> =
                links.iter().map(|l| libc::pollfd { fd: l.rx.raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
            // SAFETY: poll on live pollfds.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
            for (w, l) in links.iter_mut().enumerate() {
                if pfds[w].revents & libc::POLLIN == 0 {
                    continue;
                }
                b.clear();
                l.rx.recv_batch(&mut b, 64, Duration::ZERO).unwrap();
                for f in b.iter() {
                    if let Some(p) = udp_dport(f) {
                        seen.entry(p).or_default().push(w);
                    }
                }
            }
        }
        assert_eq!(seen.len(), ports.len(), "{name}: every datagram was received");
        for (p, ws) in &seen {
            assert_eq!(ws, &vec![usize::from(p % 2)], "{name}: port {p} goes to exactly worker {}", p % 2);
        }
    }
}

#[test]
fn zero_timeout_never_blocks() {
    need_root!();
    let lab = Lab::new("zt", 2);
    lab.veth(0, "a0", 1, "b0");
    let (a, b) = (mac_of(0, "a0"), mac_of(1, "b0"));
    let sender = in_ns(lab.ns(0), || raw_socket("a0", 0));
    for backend in [Backend::Ring, Backend::Pnet] {
        let mut dp = open_datapath(backend);
        let mut link = in_ns(lab.ns(1), || dp.open("b0", MAX_FRAME, None)).unwrap();
        let mut batch = Batch::with_capacity(1 << 16);
        let t = Instant::now();
        for _ in 0..200 {
            link.rx.recv_batch(&mut batch, 64, Duration::ZERO).unwrap();
        }
        assert!(t.elapsed() < Duration::from_millis(100), "{backend:?}: 200 idle calls took {:?}", t.elapsed());
        assert!(batch.is_empty());
        let t = Instant::now();
        link.rx.recv_batch(&mut batch, 64, Duration::from_millis(150)).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(140), "{backend:?}: a real timeout is waited out");
        let f = test_frame(b, a, 1, 100, None);
        raw_send(&sender, &f);
        let mut p = libc::pollfd { fd: link.rx.raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one live pollfd.
        assert_eq!(unsafe { libc::poll(&mut p, 1, 2000) }, 1, "{backend:?}: raw_fd polls readable");
        link.rx.recv_batch(&mut batch, 64, Duration::ZERO).unwrap();
        assert_eq!(batch.iter().collect::<Vec<_>>(), vec![&f[..]], "{backend:?}");
    }
}

#[test]
fn oversized_frames_are_counted_not_carried() {
    need_root!();
    let lab = Lab::new("big", 2);
    lab.veth(0, "a0", 1, "b0");
    for i in [0, 1] {
        run("ip", &["-n", lab.ns(i), "link", "set", ["a0", "b0"][i], "mtu", "9000"]);
    }
    lab.addr(0, "a0", "192.0.2.1/24");
    lab.addr(1, "b0", "192.0.2.2/24");
    lab.neigh(0, "a0", "192.0.2.2", mac_of(1, "b0"));
    let (a, b) = (mac_of(0, "a0"), mac_of(1, "b0"));
    let sender = in_ns(lab.ns(0), || raw_socket("a0", 0));
    for vnet in [true, false] {
        // Links opened for MTU 1500 on a device that carries 9000.
        let mut link = open(&lab, 1, "b0", &mut ring(vnet), None);
        let small = test_frame(b, a, 1, 1514, None);
        raw_send(&sender, &small);
        raw_send(&sender, &test_frame(b, a, 2, 4000, None));
        raw_send(&sender, &test_frame(b, a, 3, MAX_FRAME + 1, None));
        let last = test_frame(b, a, 4, 80, None);
        raw_send(&sender, &last);
        let (got, _, oversized) = collect(&mut link, 2, Duration::from_secs(3));
        assert_eq!(got, vec![small.clone(), last.clone()], "vnet {vnet}: the fitting frames, in order");
        assert_eq!(oversized, 2, "vnet {vnet}");
    }

    // UDP segmentation offload: one GSO skb of 4 x 1000-byte datagrams,
    // which the engine could not pass on: counted, not carried.
    let mut link = open(&lab, 1, "b0", &mut ring(true), None);
    let udp = in_ns(lab.ns(0), || UdpSocket::bind("192.0.2.1:0")).unwrap();
    let seg: libc::c_int = 1000;
    // SAFETY: setsockopt with a live c_int.
    let r =
        unsafe { libc::setsockopt(udp.as_raw_fd(), libc::SOL_UDP, libc::UDP_SEGMENT, &seg as *const _ as *const _, 4) };
    if r != 0 {
        eprintln!("UDP_SEGMENT unavailable: {}; UDP GSO part skipped", std::io::Error::last_os_error());
        return;
    }
    udp.send_to(&[0x55; 4000], "192.0.2.2:9").unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut b = Batch::with_capacity(1 << 16);
    let (mut oversized, mut udp_frames) = (0, 0);
    while oversized == 0 && Instant::now() < deadline {
        b.clear();
        link.rx.recv_batch(&mut b, 64, Duration::from_millis(20)).unwrap();
        oversized += b.oversized;
        udp_frames += b.iter().filter(|f| udp_dport(f) == Some(9)).count();
    }
    assert_eq!((oversized, udp_frames), (1, 0), "the UDP GSO frame is dropped and counted");
}

#[test]
fn a_full_ring_counts_what_it_lost() {
    need_root!();
    let lab = Lab::new("full", 2);
    lab.veth(0, "a0", 1, "b0");
    let (a, b) = (mac_of(0, "a0"), mac_of(1, "b0"));
    let sender = in_ns(lab.ns(0), || raw_socket("a0", 0));
    // One 1 MiB block: a few hundred MTU-sized slots.
    let mut dp = RingDatapath { config: RingConfig { rx_ring_bytes: Some(1 << 20), ..Default::default() } };
    let mut link = open(&lab, 1, "b0", &mut dp, None);
    assert_eq!(link.rx.take_drops(), 0);
    // Nobody reads while 2000 frames arrive: the ring fills, the rest is lost.
    for seq in 0..2000 {
        raw_send(&sender, &test_frame(b, a, seq, 100, None));
    }
    let (got, _, _) = collect(&mut link, 2000, Duration::from_millis(500));
    let lost = link.rx.take_drops();
    assert!(got.len() > 100 && got.len() < 2000, "the ring held part of the burst: {}", got.len());
    assert_eq!(got.len() as u64 + lost, 2000, "every frame was either read or counted as lost");
    let seqs: Vec<u32> = got.iter().map(|f| u32::from_be_bytes(f[14..18].try_into().unwrap())).collect();
    assert!(
        seqs.iter().enumerate().all(|(i, &s)| s == i as u32),
        "the frames that fitted are the first ones, in order"
    );
    assert_eq!(link.rx.take_drops(), 0, "the count resets when read");
}

#[test]
fn ring_errors_name_the_device_problem() {
    need_root!();
    let err = RingDatapath::default().open("fgr-nonexistent", MAX_FRAME, None).err().expect("no such device");
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    let lab = Lab::new("err", 1);
    lab.veth(0, "a0", 0, "b0");
    // The qdisc bypass is chosen for veth devices, asked in the right namespace.
    assert_eq!(in_ns(lab.ns(0), || ftpgate::live::datapath::ring::device_driver("a0")).as_deref(), Some("veth"));
    assert_eq!(in_ns(lab.ns(0), || ftpgate::live::datapath::ring::device_driver("fgr-none")), None);
    let bad = Fanout { group: 1, program: Vec::new() };
    let err =
        in_ns(lab.ns(0), || RingDatapath::default().open("a0", MAX_FRAME, Some(&bad))).err().expect("empty program");
    assert!(err.to_string().contains("fanout program"), "{err}");
}
