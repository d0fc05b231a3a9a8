//! PACKET_MMAP datapath: a TPACKET_V2 receive ring per device and socket,
//! virtio-net headers (PACKET_VNET_HDR) so offloaded traffic is usable, and
//! sendmmsg(2) for transmission.
//!
//! Why TPACKET_V2 and not V3 for receiving: V3 packs frames into blocks and
//! hands a block to userspace only when it is full or its retire timer (at
//! least a millisecond) fires. A gateway holding every quiet-link frame for a
//! millisecond adds that to every round trip; V2 hands over each frame as
//! soon as it is written. The price is a fixed slot per frame; slots are
//! sized for the MTU, and the rare larger frame (a GSO super-frame) reaches
//! us through the socket's ordinary queue, flagged in its slot
//! (TP_STATUS_COPY); see `RingConfig`.
//!
//! Why sendmmsg rather than a TPACKET_V2 TX ring: measured on a veth pair
//! between two namespaces (100 000 frames of 64 and 1514 bytes, batches of
//! 64, vnet header on and off, qdisc bypass on and off, median of 5, thread
//! CPU time), the TX ring cost 5-22% more CPU per frame than sendmmsg in 7 of
//! the 8 combinations (about 2.2-3.2 us per frame either way: the veth
//! receive path dominates, not the copy the ring saves). The ring also pins a
//! fixed mapping per socket and reports errors per kick, not per frame; with
//! sendmmsg every refused frame is reported by index, as `LinkTx` promises.
//! In the same runs PACKET_QDISC_BYPASS saved 4-20% per frame; see
//! `RingConfig::qdisc_bypass` for why it is still off with GSO.
//!
//! With vnet headers (the default), every received frame comes with a
//! virtio_net_hdr: a frame whose L4 checksum the kernel left partial
//! (NEEDS_CSUM, i.e. checksum offload on the sender) is completed here, and
//! a TCP GSO super-frame is passed on whole with its `Offload`, so the engine
//! always sees complete, correct checksums. On transmission a TCP GSO frame
//! goes out with a vnet header asking the kernel to segment it.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::{
    poll_ms, setsockopt, Batch, Datapath, Fanout, Link, LinkRx, LinkTx, Offload, GSO_ECN, GSO_NONE, GSO_TCPV4,
    GSO_TCPV6,
};
use crate::wire::checksum;

/// Size of struct virtio_net_hdr (without num_buffers).
pub const VNET_HDR_LEN: usize = 10;
/// virtio_net_hdr flags.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
pub const VNET_F_DATA_VALID: u8 = 2;

/// struct virtio_net_hdr. Packet sockets use the host's byte order for the
/// 16-bit fields (the "legacy" virtio layout on a little-endian host).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn decode(b: &[u8]) -> Option<VnetHdr> {
        let b = b.get(..VNET_HDR_LEN)?;
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        })
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Where the transport header of an Ethernet frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4 {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the transport header.
    pub start: usize,
    /// End of the IP packet (frames may carry padding after it).
    pub end: usize,
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
}

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

/// Find the transport header of an unfragmented IPv4 or IPv6 packet behind
/// an Ethernet header and up to two VLAN tags. IPv6 extension headers
/// (hop-by-hop, routing, destination options) are skipped; a fragment or
/// anything malformed gives None.
pub fn locate_l4(f: &[u8]) -> Option<L4> {
    let mut off = 12;
    let mut et = be16(f, off)?;
    for _ in 0..2 {
        if et != 0x8100 && et != 0x88a8 {
            break;
        }
        off += 4;
        et = be16(f, off)?;
    }
    let l3 = off + 2;
    match et {
        0x0800 => {
            let h = f.get(l3..l3 + 20)?;
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let total = usize::from(be16(h, 2)?);
            if h[0] >> 4 != 4 || ihl < 20 || total < ihl || l3 + total > f.len() || be16(h, 6)? & 0x3fff != 0 {
                return None;
            }
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            Some(L4 { l3, start: l3 + ihl, end: l3 + total, proto: h[9], src: src.into(), dst: dst.into() })
        }
        0x86dd => {
            let h = f.get(l3..l3 + 40)?;
            let plen = usize::from(be16(h, 4)?);
            let end = l3 + 40 + plen;
            // A zero payload length is a jumbogram (or BIG TCP): not ours to handle.
            if h[0] >> 4 != 6 || plen == 0 || end > f.len() {
                return None;
            }
            let mut nh = h[6];
            let mut at = l3 + 40;
            for _ in 0..8 {
                if !matches!(nh, 0 | 43 | 60) {
                    break;
                }
                let e = f.get(at..at + 2)?;
                nh = e[0];
                at += (usize::from(e[1]) + 1) * 8;
            }
            if matches!(nh, 0 | 43 | 60 | 44) || at > end {
                return None;
            }
            let src: [u8; 16] = h[8..24].try_into().ok()?;
            let dst: [u8; 16] = h[24..40].try_into().ok()?;
            Some(L4 { l3, start: at, end, proto: nh, src: Ipv6Addr::from(src).into(), dst: Ipv6Addr::from(dst).into() })
        }
        _ => None,
    }
}

/// Complete a partial checksum the way the kernel does for CHECKSUM_PARTIAL:
/// the field at `start + offset` already holds the pseudo-header sum, so the
/// checksum is the complement of the sum from `start` to the end of the
/// frame. Only TCP (offset 16) and UDP (offset 6) are Internet checksums;
/// anything else (SCTP's CRC32c) is refused.
pub fn complete_partial(frame: &mut [u8], start: usize, offset: usize) -> bool {
    let at = start + offset;
    if !(offset == 16 || offset == 6) || start < 14 || at + 2 > frame.len() {
        return false;
    }
    let mut c = !checksum::fold(checksum::sum(&frame[start..], 0));
    if offset == 6 && c == 0 {
        c = 0xffff; // RFC 768: a computed zero is sent as all ones
    }
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// Complete the TCP or UDP checksum of a frame from its IP header, for a
/// frame the kernel flagged TP_STATUS_CSUMNOTREADY without a vnet header
/// to say where the checksum starts.
pub fn complete_from_headers(frame: &mut [u8]) -> bool {
    let Some(l) = locate_l4(frame) else { return false };
    let offset = match l.proto {
        crate::wire::PROTO_TCP => 16,
        crate::wire::PROTO_UDP => 6,
        _ => return false,
    };
    if l.start + offset + 2 > l.end {
        return false;
    }
    let c = checksum::transport(l.src, l.dst, l.proto, &frame[l.start..l.end], offset);
    frame[l.start + offset..l.start + offset + 2].copy_from_slice(&c.to_be_bytes());
    true
}

/// What a TCP GSO frame needs to go out: its vnet header, and the value its
/// TCP checksum field must hold instead of the full checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GsoTx {
    pub hdr: VnetHdr,
    /// Offset of the TCP checksum field in the frame.
    pub csum_at: usize,
    /// The folded pseudo-header sum, not complemented: what the kernel's own
    /// TCP stack leaves in a CHECKSUM_PARTIAL segment (the tests check that
    /// the kernel's segments then carry correct checksums).
    pub partial: u16,
    /// The frame's length without any padding after the IP packet.
    pub len: usize,
}

fn invalid(msg: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The vnet header for sending `frame` as a TCP GSO frame, or None when its
/// payload fits one segment (it then goes out as an ordinary frame). The
/// segment size is lowered where needed so each segment's IP packet fits
/// `mtu` (the frame may have arrived on a link with a larger MTU).
pub fn gso_tx(frame: &[u8], o: Offload, mtu: usize) -> io::Result<Option<GsoTx>> {
    let l = locate_l4(frame).ok_or_else(|| invalid("GSO frame without an unfragmented IP packet"))?;
    let family_ok = match o.gso_type & !GSO_ECN {
        GSO_TCPV4 => l.src.is_ipv4(),
        GSO_TCPV6 => l.src.is_ipv6(),
        _ => return Err(invalid("only TCP GSO frames can be sent")),
    };
    if !family_ok || l.proto != crate::wire::PROTO_TCP {
        return Err(invalid("GSO type does not match the packet"));
    }
    let thl = usize::from(frame.get(l.start + 12).copied().unwrap_or(0) >> 4) * 4;
    if thl < 20 || l.start + thl > l.end {
        return Err(invalid("GSO frame with a bad TCP header"));
    }
    let headers = l.start + thl - l.l3;
    let gso_size = usize::from(o.gso_size).min(mtu.saturating_sub(headers));
    if gso_size == 0 {
        return Err(invalid("GSO frame with a zero segment size, or headers filling the MTU"));
    }
    if l.end - l.start - thl <= gso_size {
        return Ok(None);
    }
    let partial = checksum::fold(checksum::pseudo_header(l.src, l.dst, crate::wire::PROTO_TCP, l.end - l.start));
    let hdr = VnetHdr {
        flags: VNET_F_NEEDS_CSUM,
        gso_type: o.gso_type,
        hdr_len: (l.start + thl) as u16,
        gso_size: gso_size as u16,
        csum_start: l.start as u16,
        csum_offset: 16,
    };
    Ok(Some(GsoTx { hdr, csum_at: l.start + 16, partial, len: l.end }))
}

/// Sizes of the rings of one `Link`.
#[derive(Clone, Debug)]
pub struct RingConfig {
    /// Ask for virtio-net headers: GSO super-frames and partial checksums
    /// become usable, so the devices can keep their offloads on. Costs
    /// receive slots sized for 64 KB frames.
    pub vnet_hdr: bool,
    /// Memory of each receive ring. Default 8 MiB: about 5 000 slots at
    /// MTU 1500. Slots are sized for the MTU; with vnet headers a larger
    /// (GSO) frame is marked TP_STATUS_COPY in its slot and read whole from
    /// the socket's queue (up to `RX_COPY_BUF` of them waiting). Slots sized
    /// for 64 KB frames instead left 240 slots in 16 MiB, and a worker held
    /// up for 3 ms under MTU-sized traffic lost frames.
    /// One ring per device per worker: the total is that times both.
    pub rx_ring_bytes: Option<usize>,
    /// PACKET_QDISC_BYPASS on the sending socket. None (the default): on
    /// only for veth devices without vnet headers. On veth, which has no
    /// queue and never pushes back, it saved 4-20% CPU per frame. But the
    /// bypass path refuses any frame the kernel would have to segment in
    /// software (a GSO frame leaving a device without TSO fails with
    /// ENOBUFS; seen in tests/live_ring.rs), and on a NIC it trades the
    /// qdisc's queueing (absorbing bursts, fairness) for drops whenever the
    /// device queue is full.
    pub qdisc_bypass: Option<bool>,
}

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig { vnet_hdr: true, rx_ring_bytes: None, qdisc_bypass: None }
    }
}

/// PACKET_MMAP TPACKET_V2 backend. See the module comment.
#[derive(Clone, Debug, Default)]
pub struct RingDatapath {
    pub config: RingConfig,
}

impl Datapath for RingDatapath {
    fn open(&mut self, device: &str, max_frame: usize, fanout: Option<&Fanout>) -> io::Result<Link> {
        let name = std::ffi::CString::new(device).map_err(|_| invalid("device name with a NUL byte"))?;
        // SAFETY: if_nametoindex reads a NUL-terminated string that outlives the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such network device"));
        }
        let rx = RingRx::open(ifindex as i32, max_frame, &self.config, fanout)?;
        let mac = hw_addr(rx.sock.as_raw_fd(), device)?;
        let bypass = self
            .config
            .qdisc_bypass
            .unwrap_or_else(|| !self.config.vnet_hdr && device_driver(device).as_deref() == Some("veth"));
        let tx = RingTx::open(ifindex as i32, max_frame, self.config.vnet_hdr, bypass)?;
        Ok(Link { rx: Box::new(rx), tx: Box::new(tx), mac })
    }
}

/// Explain a setup error; the ones meaning "this kernel has no such thing"
/// say what to do instead.
fn setup_error(what: &str, e: io::Error) -> io::Error {
    let hint = match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOPROTOOPT | libc::EOPNOTSUPP) => {
            "; this kernel cannot run the PACKET_MMAP ring datapath: choose the pnet datapath backend instead"
        }
        Some(libc::ENOMEM) => "; free memory or make the ring smaller (RingConfig::rx_ring_bytes)",
        Some(libc::EPERM | libc::EACCES) => "; packet sockets need CAP_NET_RAW",
        _ => "",
    };
    io::Error::new(e.kind(), format!("{what}: {e}{hint}"))
}

fn packet_socket() -> io::Result<OwnedFd> {
    // Protocol 0: the socket receives nothing until bind names a protocol,
    // so no frame from another device slips in before the ring is set up.
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(setup_error("packet socket", io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: RawFd, ifindex: i32, proto: u16) -> io::Result<()> {
    // SAFETY: zeroed sockaddr_ll is valid; we fill the fields bind reads.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto.to_be();
    sll.sll_ifindex = ifindex;
    // SAFETY: bind with a live sockaddr_ll and its size.
    let r = unsafe {
        libc::bind(
            fd,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(setup_error("bind to the device", io::Error::last_os_error()))
    }
}

fn hw_addr(fd: RawFd, device: &str) -> io::Result<crate::wire::Mac> {
    // SAFETY: zeroed ifreq is valid; we set the name the ioctl reads.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if device.len() >= ifr.ifr_name.len() {
        return Err(invalid("device name too long"));
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(device.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills the ifreq we pass.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR wrote the hwaddr member of the union.
    let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
    if sa.sa_family != libc::ARPHRD_ETHER {
        return Err(io::Error::other("the device is not an Ethernet device"));
    }
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(mac)
}

/// The driver of `device` ("veth", "virtio_net"...) by ETHTOOL_GDRVINFO,
/// asked through a socket so it answers for the calling thread's network
/// namespace (sysfs would show the namespace that mounted it).
pub fn device_driver(device: &str) -> Option<String> {
    // SAFETY: plain socket(2), owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a fresh fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    /// struct ethtool_drvinfo.
    #[repr(C)]
    struct DrvInfo {
        cmd: u32,
        driver: [u8; 32],
        rest: [u8; 32 * 4 + 12 + 20],
    }
    const ETHTOOL_GDRVINFO: u32 = 3;
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    let mut info = DrvInfo { cmd: ETHTOOL_GDRVINFO, driver: [0; 32], rest: [0; 160] };
    // SAFETY: zeroed ifreq is valid; name and data pointer set below.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    if device.len() >= ifr.ifr_name.len() {
        return None;
    }
    for (d, s) in ifr.ifr_name.iter_mut().zip(device.bytes()) {
        *d = s as libc::c_char;
    }
    ifr.ifr_ifru.ifru_data = &mut info as *mut DrvInfo as *mut libc::c_char;
    // SAFETY: SIOCETHTOOL fills the DrvInfo the ifreq points at, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) } != 0 {
        return None;
    }
    let n = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..n]).into_owned())
}

/// Room before a received frame's data in its slot: the TPACKET_V2 header
/// and sockaddr_ll rounded up, the MAC header rounded up, and the vnet header
/// (the kernel's `netoff` arithmetic in tpacket_rcv, with margin).
const RX_SLOT_OVERHEAD: usize = 96;
/// Largest frame with vnet headers: a 64 KB GSO packet plus Ethernet header and a tag.
const GSO_MAX_FRAME: usize = 65535 + 18;
/// Ring memory comes in blocks of 1 MiB (648 slots at MTU 1500).
const BLOCK: usize = 1 << 20;
/// Socket receive buffer for frames too large for a slot (PACKET_COPY_THRESH):
/// about 40 GSO super-frames may wait there.
const RX_COPY_BUF: libc::c_int = 4 << 20;
const PACKET_COPY_THRESH: libc::c_int = 7;

/// A TPACKET_V2 ring mapped into our memory.
struct Ring {
    base: *mut u8,
    size: usize,
    frame_size: usize,
    frames: usize,
}

impl Ring {
    /// Set up ring `opt` (PACKET_RX_RING) of about `bytes` with `frame_size`-byte slots, and map it.
    fn new(fd: RawFd, opt: libc::c_int, frame_size: usize, bytes: usize) -> io::Result<Ring> {
        let frame_size = frame_size.next_multiple_of(libc::TPACKET_ALIGNMENT);
        let block = BLOCK.max(frame_size);
        let blocks = (bytes / block).max(1);
        let per_block = block / frame_size;
        let req = libc::tpacket_req {
            tp_block_size: block as u32,
            tp_block_nr: blocks as u32,
            tp_frame_size: frame_size as u32,
            tp_frame_nr: (blocks * per_block) as u32,
        };
        setsockopt(fd, libc::SOL_PACKET, opt, &req)
            .map_err(|e| setup_error(&format!("PACKET_RX_RING of {} MiB", (blocks * block) >> 20), e))?;
        let size = blocks * block;
        // SAFETY: mapping the ring the kernel just allocated for this socket.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(setup_error("mmap of the ring", io::Error::last_os_error()));
        }
        Ok(Ring { base: p as *mut u8, size, frame_size, frames: blocks * per_block })
    }

    /// Slot `i`. Slots never straddle blocks: a block holds whole slots and
    /// the blocks are contiguous in the mapping.
    fn slot(&self, i: usize) -> *mut u8 {
        let per_block = BLOCK.max(self.frame_size) / self.frame_size;
        let block = BLOCK.max(self.frame_size);
        // SAFETY: i < frames, so the offset lies inside the mapping.
        unsafe { self.base.add((i / per_block) * block + (i % per_block) * self.frame_size) }
    }

    /// tp_status of slot `i`, shared with the kernel.
    fn status(&self, i: usize) -> &AtomicU32 {
        // SAFETY: tp_status is the first u32 of each 16-aligned slot, lives as
        // long as the mapping (&self), and the kernel accesses it atomically
        // (READ_ONCE/WRITE_ONCE with barriers).
        unsafe { &*(self.slot(i) as *const AtomicU32) }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `new` mapped; nothing refers to it afterwards.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.size) };
    }
}

// SAFETY: the mapping belongs to one socket owned by the same struct; only
// the thread holding the struct touches it (the kernel synchronises through
// tp_status).
unsafe impl Send for Ring {}

/// Receiving half: a bound, promiscuous socket with an RX ring.
pub struct RingRx {
    ring: Ring,
    // Declared after `ring`: the mapping goes before the socket closes.
    sock: OwnedFd,
    head: usize,
    vnet: bool,
    max_frame: usize,
    /// Where a frame too large for its slot is read (vnet header first);
    /// empty without vnet headers, where such frames are dropped anyway.
    big: Vec<u8>,
}

impl RingRx {
    fn open(ifindex: i32, max_frame: usize, cfg: &RingConfig, fanout: Option<&Fanout>) -> io::Result<RingRx> {
        let sock = packet_socket()?;
        let fd = sock.as_raw_fd();
        let v2 = libc::tpacket_versions::TPACKET_V2 as libc::c_int;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VERSION, &v2).map_err(|e| setup_error("TPACKET_V2", e))?;
        if cfg.vnet_hdr {
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1 as &libc::c_int)
                .map_err(|e| setup_error("PACKET_VNET_HDR", e))?;
        }
        if cfg.vnet_hdr {
            // Frames larger than a slot are also queued whole on the socket.
            setsockopt(fd, libc::SOL_PACKET, PACKET_COPY_THRESH, &1 as &libc::c_int)
                .map_err(|e| setup_error("PACKET_COPY_THRESH", e))?;
            // Best effort: the default (about 200 KB) holds one or two.
            let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RX_COPY_BUF)
                .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &RX_COPY_BUF));
        }
        let bytes = cfg.rx_ring_bytes.unwrap_or(8 << 20);
        let ring = Ring::new(fd, libc::PACKET_RX_RING, RX_SLOT_OVERHEAD + max_frame, bytes)?;
        // Our own transmissions would otherwise come back as input.
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1 as &libc::c_int)
            .map_err(|e| setup_error("PACKET_IGNORE_OUTGOING (needs Linux 4.20+)", e))?;
        bind(fd, ifindex, libc::ETH_P_ALL as u16)?;
        // SAFETY: zeroed packet_mreq is valid; index and type set below.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = ifindex;
        mreq.mr_type = libc::PACKET_MR_PROMISC as u16;
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(|e| setup_error("promiscuous mode", e))?;
        if let Some(f) = fanout {
            f.join(fd)?;
        }
        let big = if cfg.vnet_hdr { vec![0u8; VNET_HDR_LEN + GSO_MAX_FRAME] } else { Vec::new() };
        Ok(RingRx { ring, sock, head: 0, vnet: cfg.vnet_hdr, max_frame, big })
    }

    fn ready(&self) -> bool {
        self.ring.status(self.head).load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
    }

    /// Take the frame at `head` into `batch` and give its slot back.
    fn take(&mut self, batch: &mut Batch) {
        let slot = self.ring.slot(self.head);
        // SAFETY: a tpacket2_hdr (32 bytes, no invalid bit patterns) starts each 16-aligned slot.
        let h = unsafe { std::ptr::read(slot as *const libc::tpacket2_hdr) };
        if h.tp_status & libc::TP_STATUS_COPY != 0 {
            // The kernel queued this slot's frame whole on the socket, in
            // ring order, so the next datagram there is this frame.
            match self.read_big() {
                Some(n) => {
                    let len = (n - VNET_HDR_LEN) as u32;
                    let whole = libc::tpacket2_hdr { tp_mac: VNET_HDR_LEN as u16, tp_snaplen: len, tp_len: len, ..h };
                    rx_frame(self.vnet, self.max_frame, &whole, &self.big[..n], batch);
                }
                None => batch.oversized += 1,
            }
        } else {
            // SAFETY: the slot is ours (TP_STATUS_USER, acquired in `ready`) until
            // we hand it back below; it is frame_size bytes inside the mapping.
            let bytes = unsafe { std::slice::from_raw_parts(slot as *const u8, self.ring.frame_size) };
            rx_frame(self.vnet, self.max_frame, &h, bytes, batch);
        }
        self.ring.status(self.head).store(libc::TP_STATUS_KERNEL, Ordering::Release);
        self.head = (self.head + 1) % self.ring.frames;
    }

    /// Read the next whole frame queued on the socket into `big`: its length
    /// with the vnet header, or None if there is none or it is larger still.
    fn read_big(&mut self) -> Option<usize> {
        if self.big.len() <= VNET_HDR_LEN {
            return None;
        }
        // SAFETY: recv into our own buffer of its length.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.big.as_mut_ptr() as *mut libc::c_void,
                self.big.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        (n > VNET_HDR_LEN as isize && n as usize <= self.big.len()).then_some(n as usize)
    }
}

/// Turn one ring slot (header `h`, the slot's bytes) into a frame of `batch`,
/// or count it in `batch.oversized`.
fn rx_frame(vnet_on: bool, max_frame: usize, h: &libc::tpacket2_hdr, slot: &[u8], batch: &mut Batch) {
    let mac = usize::from(h.tp_mac);
    let snap = h.tp_snaplen as usize;
    if h.tp_snaplen < h.tp_len || mac + snap > slot.len() || (vnet_on && mac < VNET_HDR_LEN) {
        batch.oversized += 1; // truncated: larger than the slot
        return;
    }
    let data = &slot[mac..mac + snap];
    let vnet =
        if vnet_on { VnetHdr::decode(&slot[mac - VNET_HDR_LEN..mac]).unwrap_or_default() } else { VnetHdr::default() };
    // The kernel strips a VLAN tag into the header (hardware or software
    // untagging); put it back so the engine sees the frame as on the wire.
    let tag = (h.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && data.len() >= 12).then(|| {
        let tpid = if h.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { h.tp_vlan_tpid } else { 0x8100 };
        let mut t = [0u8; 4];
        t[..2].copy_from_slice(&tpid.to_be_bytes());
        t[2..].copy_from_slice(&h.tp_vlan_tci.to_be_bytes());
        t
    });
    let extra = if tag.is_some() { 4 } else { 0 };
    let offload = match vnet.gso_type & !GSO_ECN {
        GSO_NONE if data.len() + extra <= max_frame => Offload::default(),
        GSO_TCPV4 | GSO_TCPV6 if vnet.gso_size > 0 => Offload { gso_type: vnet.gso_type, gso_size: vnet.gso_size },
        // Too large, or UDP fragmentation / UDP_L4 segmentation offload,
        // which the engine has no way to pass through.
        _ => {
            batch.oversized += 1;
            return;
        }
    };
    let start = batch.data.len();
    match tag {
        Some(t) => {
            batch.data.extend_from_slice(&data[..12]);
            batch.data.extend_from_slice(&t);
            batch.data.extend_from_slice(&data[12..]);
        }
        None => batch.data.extend_from_slice(data),
    }
    let frame = &mut batch.data[start..];
    let whole = if vnet.flags & VNET_F_NEEDS_CSUM != 0 {
        complete_partial(frame, usize::from(vnet.csum_start) + extra, usize::from(vnet.csum_offset))
    } else if (!vnet_on && h.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0) || offload.is_gso() {
        // Without a vnet header the kernel says only that the checksum
        // is unfinished. A GSO frame without NEEDS_CSUM (hardware LRO
        // reports its merged frames as already checked) may carry the
        // first segment's checksum: recompute rather than trust it.
        complete_from_headers(frame)
    } else {
        true
    };
    if whole {
        batch.commit(start, offload);
    } else {
        batch.data.truncate(start);
        batch.oversized += 1;
    }
}

impl LinkRx for RingRx {
    fn recv_batch(&mut self, batch: &mut Batch, max: usize, timeout: Duration) -> io::Result<()> {
        if !self.ready() {
            if timeout.is_zero() {
                return Ok(());
            }
            let mut p = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: poll on one live pollfd.
            let r = unsafe { libc::poll(&mut p, 1, poll_ms(timeout)) };
            if r < 0 {
                let e = io::Error::last_os_error();
                return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
            }
            if p.revents & libc::POLLERR != 0 && !self.ready() {
                return Err(socket_error(self.sock.as_raw_fd()));
            }
        }
        for _ in 0..max.max(1) {
            if !self.ready() {
                break;
            }
            self.take(batch);
        }
        Ok(())
    }

    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

/// The pending error of a socket (device gone, down...), clearing it.
fn socket_error(fd: RawFd) -> io::Error {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt into a live c_int with its size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut libc::c_int as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 && err != 0 {
        io::Error::from_raw_os_error(err)
    } else {
        io::Error::other("the packet socket reported an error")
    }
}

/// Messages per sendmmsg call.
const TX_SLOTS: usize = 64;

/// Sending half: a socket bound to the device with protocol 0, so it never
/// receives (an ETH_P_ALL socket used only for sending would still queue a
/// copy of every frame on the device).
pub struct RingTx {
    sock: OwnedFd,
    vnet: bool,
    max_frame: usize,
    /// Whether PACKET_QDISC_BYPASS is on.
    pub bypass: bool,
}

/// One frame ready for sendmmsg: its vnet header and, for GSO, the
/// checksum field's replacement.
struct Prepared {
    vnet: [u8; VNET_HDR_LEN],
    /// (offset of the checksum field, its bytes, frame length) for a GSO frame.
    patch: Option<(usize, [u8; 2], usize)>,
}

impl RingTx {
    fn open(ifindex: i32, max_frame: usize, vnet: bool, bypass: bool) -> io::Result<RingTx> {
        let sock = packet_socket()?;
        let fd = sock.as_raw_fd();
        if vnet {
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &1 as &libc::c_int)
                .map_err(|e| setup_error("PACKET_VNET_HDR", e))?;
        }
        if bypass {
            setsockopt(fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &1 as &libc::c_int)
                .map_err(|e| setup_error("PACKET_QDISC_BYPASS", e))?;
        }
        let sndbuf: libc::c_int = 4 << 20;
        // Best effort, as for the receive buffer of the pnet backend.
        let _ = setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &sndbuf)
            .or_else(|_| setsockopt(fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf));
        bind(fd, ifindex, 0)?;
        Ok(RingTx { sock, vnet, max_frame, bypass })
    }

    fn prepare(&self, frame: &[u8], o: Offload) -> io::Result<Prepared> {
        // max_frame is the MTU plus Ethernet header and one tag.
        let mtu = self.max_frame.saturating_sub(18);
        let gso = if o.is_gso() && self.vnet { gso_tx(frame, o, mtu)? } else { None };
        match gso {
            Some(g) => Ok(Prepared { vnet: g.hdr.encode(), patch: Some((g.csum_at, g.partial.to_be_bytes(), g.len)) }),
            None if frame.len() > self.max_frame => Err(io::Error::from_raw_os_error(libc::EMSGSIZE)),
            None => Ok(Prepared { vnet: [0; VNET_HDR_LEN], patch: None }),
        }
    }

    fn wait_writable(&self) -> bool {
        let mut p = libc::pollfd { fd: self.sock.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: poll on one live pollfd.
        unsafe { libc::poll(&mut p, 1, 20) > 0 }
    }

    /// Send frames `0..count` (`frame(i)`: the frame and its offload) in
    /// order, up to TX_SLOTS per system call; `failed` gets the index of each
    /// frame that could not be sent.
    fn send_frames<'f>(
        &mut self,
        count: usize,
        frame: impl Fn(usize) -> (&'f [u8], Offload),
        failed: &mut dyn FnMut(usize, io::Error),
    ) {
        let mut i = 0;
        while i < count {
            // Prepare up to TX_SLOTS sendable frames; refusals are reported now.
            let mut prep: [Option<Prepared>; TX_SLOTS] = [const { None }; TX_SLOTS];
            let mut idx = [0usize; TX_SLOTS];
            let mut m = 0;
            while m < TX_SLOTS && i < count {
                let (f, o) = frame(i);
                match self.prepare(f, o) {
                    Ok(p) => {
                        prep[m] = Some(p);
                        idx[m] = i;
                        m += 1;
                    }
                    Err(e) => failed(i, e),
                }
                i += 1;
            }
            // Up to four pieces per message: vnet header, frame up to the
            // checksum field, the replaced field, the rest.
            let mut iov: [[libc::iovec; 4]; TX_SLOTS] =
                [[libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 4]; TX_SLOTS];
            // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
            let mut hdrs: [libc::mmsghdr; TX_SLOTS] = unsafe { std::mem::zeroed() };
            for k in 0..m {
                let f = frame(idx[k]).0;
                let p = prep[k].as_ref().expect("prepared above");
                let piece = |b: &[u8]| libc::iovec { iov_base: b.as_ptr() as *mut libc::c_void, iov_len: b.len() };
                let mut n = 0;
                if self.vnet {
                    iov[k][0] = piece(&p.vnet);
                    n = 1;
                }
                match &p.patch {
                    Some((at, bytes, len)) => {
                        iov[k][n] = piece(&f[..*at]);
                        iov[k][n + 1] = piece(bytes);
                        iov[k][n + 2] = piece(&f[at + 2..*len]);
                        n += 3;
                    }
                    None => {
                        iov[k][n] = piece(f);
                        n += 1;
                    }
                }
                hdrs[k].msg_hdr.msg_iov = iov[k].as_mut_ptr();
                hdrs[k].msg_hdr.msg_iovlen = n;
            }
            let mut next = 0;
            let mut waits = 0;
            while next < m {
                // SAFETY: headers next..m point at iovecs over frames that
                // `frame` lends for 'f and at `prep`, alive until this loop ends.
                let r = unsafe {
                    libc::sendmmsg(
                        self.sock.as_raw_fd(),
                        hdrs[next..].as_mut_ptr(),
                        (m - next) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if r > 0 {
                    next += r as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                let full = e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS);
                match e.kind() {
                    io::ErrorKind::Interrupted => {}
                    _ if full && waits < 50 && self.wait_writable() => waits += 1,
                    _ => {
                        failed(idx[next], e);
                        next += 1;
                    }
                }
            }
        }
    }
}

impl LinkTx for RingTx {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        let mut res = Ok(());
        self.send_frames(1, |_| (frame, Offload::default()), &mut |_, e| res = Err(e));
        res
    }

    fn send_batch(&mut self, batch: &Batch, failed: &mut dyn FnMut(usize, io::Error)) {
        // By index into the batch: no list of the frames is built per call.
        self.send_frames(batch.len(), |i| (batch.get(i), batch.offload(i)), failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + TCP (20-byte header) carrying `payload`, with
    /// correct IP and TCP checksums.
    fn tcp4(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let total = (40 + payload.len()) as u16;
        f[14] = 0x45;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[192, 0, 2, 1]);
        f[30..34].copy_from_slice(&[192, 0, 2, 2]);
        let ipc = checksum::ipv4_header(&f[14..34]);
        f[24..26].copy_from_slice(&ipc.to_be_bytes());
        f[34..36].copy_from_slice(&1234u16.to_be_bytes());
        f[36..38].copy_from_slice(&21u16.to_be_bytes());
        f[46] = 5 << 4;
        f[47] = 0x18;
        f.extend_from_slice(payload);
        let c = checksum::transport(
            Ipv4Addr::new(192, 0, 2, 1).into(),
            Ipv4Addr::new(192, 0, 2, 2).into(),
            6,
            &f[34..],
            16,
        );
        f[50..52].copy_from_slice(&c.to_be_bytes());
        f
    }

    fn tcp6(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 20];
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
        f[20] = 6;
        f[21] = 64;
        let s: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let d: Ipv6Addr = "2001:db8:2::20".parse().unwrap();
        f[22..38].copy_from_slice(&s.octets());
        f[38..54].copy_from_slice(&d.octets());
        f[66] = 5 << 4;
        f.extend_from_slice(payload);
        let c = checksum::transport(s.into(), d.into(), 6, &f[54..], 16);
        f[70..72].copy_from_slice(&c.to_be_bytes());
        f
    }

    /// A ring slot as the kernel fills it: header, vnet header, frame at 76.
    fn slot(frame: &[u8], vnet: Option<VnetHdr>, status: u32, len: u32) -> (libc::tpacket2_hdr, Vec<u8>) {
        // SAFETY: tpacket2_hdr is plain integers.
        let mut h: libc::tpacket2_hdr = unsafe { std::mem::zeroed() };
        h.tp_status = libc::TP_STATUS_USER | status;
        h.tp_len = len;
        h.tp_snaplen = frame.len() as u32;
        h.tp_mac = 76;
        let mut b = vec![0u8; 76 + frame.len()];
        if let Some(v) = vnet {
            b[66..76].copy_from_slice(&v.encode());
        }
        b[76..].copy_from_slice(frame);
        (h, b)
    }

    fn partial(f: &[u8]) -> Vec<u8> {
        let l = locate_l4(f).unwrap();
        let mut p = f.to_vec();
        let ph = checksum::fold(checksum::pseudo_header(l.src, l.dst, 6, l.end - l.start));
        p[l.start + 16..l.start + 18].copy_from_slice(&ph.to_be_bytes());
        p
    }

    #[test]
    fn received_slots_become_whole_frames() {
        let mut b = Batch::with_capacity(1 << 16);
        let small = tcp4(b"hello");
        let needs = VnetHdr { flags: VNET_F_NEEDS_CSUM, csum_start: 34, csum_offset: 16, ..Default::default() };
        // Partial checksum completed.
        let (h, sl) = slot(&partial(&small), Some(needs), libc::TP_STATUS_CSUMNOTREADY, small.len() as u32);
        rx_frame(true, 1518, &h, &sl, &mut b);
        // The same without vnet headers: completed from the IP header.
        rx_frame(false, 1518, &h, &sl, &mut b);
        // A stripped VLAN tag goes back, and csum_start moves with it.
        let (mut h, sl) = slot(&partial(&small), Some(needs), libc::TP_STATUS_VLAN_VALID, small.len() as u32);
        h.tp_vlan_tci = 7;
        rx_frame(true, 1518, &h, &sl, &mut b);
        let mut tagged = small.clone();
        crate::wire::build::insert_vlan(&mut tagged, 7);
        // A GSO frame whose checksum is stale (LRO): recomputed, marked.
        let big = tcp4(&[3u8; 4000]);
        let mut stale = big.clone();
        stale[50] ^= 0xff;
        let gso = VnetHdr { flags: VNET_F_DATA_VALID, gso_type: GSO_TCPV4, gso_size: 1448, ..Default::default() };
        let (h, sl) = slot(&stale, Some(gso), 0, stale.len() as u32);
        rx_frame(true, 1518, &h, &sl, &mut b);
        let v: Vec<(&[u8], Offload)> = b.iter_offloads().collect();
        assert_eq!(v.len(), 4);
        assert_eq!(v[0], (&small[..], Offload::default()));
        assert_eq!(v[1], (&small[..], Offload::default()));
        assert_eq!(v[2], (&tagged[..], Offload::default()));
        assert_eq!(v[3], (&big[..], Offload { gso_type: GSO_TCPV4, gso_size: 1448 }));
        assert_eq!(b.oversized, 0);
    }

    #[test]
    fn unusable_slots_are_counted() {
        let mut b = Batch::with_capacity(1 << 16);
        let f = tcp4(&[1u8; 1600]);
        // Too large and not GSO.
        let (h, sl) = slot(&f, Some(VnetHdr::default()), 0, f.len() as u32);
        rx_frame(true, 1518, &h, &sl, &mut b);
        // Truncated by the slot.
        let (h, sl) = slot(&f[..1000], None, 0, f.len() as u32);
        rx_frame(false, 1518, &h, &sl, &mut b);
        // UDP segmentation offload.
        let udp = VnetHdr { gso_type: super::super::GSO_UDP_L4, gso_size: 1000, ..Default::default() };
        let (h, sl) = slot(&f, Some(udp), 0, f.len() as u32);
        rx_frame(true, 1518, &h, &sl, &mut b);
        // A partial checksum that is not an Internet checksum.
        let sctp = VnetHdr { flags: VNET_F_NEEDS_CSUM, csum_start: 34, csum_offset: 8, ..Default::default() };
        let small = tcp4(b"x");
        let (h, sl) = slot(&small, Some(sctp), 0, small.len() as u32);
        rx_frame(true, 1518, &h, &sl, &mut b);
        assert_eq!((b.len(), b.oversized), (0, 4));
        assert!(b.data.is_empty(), "nothing left behind by a refused frame");
    }

    #[test]
    fn vnet_header_round_trips_in_host_order() {
        let h = VnetHdr {
            flags: 1,
            gso_type: GSO_TCPV4 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let b = h.encode();
        assert_eq!(b[0], 1);
        assert_eq!(b[1], 0x81);
        assert_eq!(&b[4..6], &1448u16.to_ne_bytes());
        assert_eq!(VnetHdr::decode(&b), Some(h));
        assert_eq!(VnetHdr::decode(&b[..9]), None, "short header");
        assert_eq!(VnetHdr::decode(&[0; 10]), Some(VnetHdr::default()));
    }

    #[test]
    fn completing_a_partial_checksum_gives_the_full_one() {
        for f in [tcp4(b"hello world, odd length!"), tcp6(&[0xab; 1001]), tcp4(&[])] {
            let l = locate_l4(&f).unwrap();
            let want = be16(&f, l.start + 16).unwrap();
            // What a sender with checksum offload leaves: the pseudo-header sum.
            let mut p = f.clone();
            let ph = checksum::fold(checksum::pseudo_header(l.src, l.dst, 6, l.end - l.start));
            p[l.start + 16..l.start + 18].copy_from_slice(&ph.to_be_bytes());
            let mut a = p.clone();
            assert!(complete_partial(&mut a, l.start, 16));
            assert_eq!(a, f);
            let mut b = p.clone();
            assert!(complete_from_headers(&mut b));
            assert_eq!(be16(&b, l.start + 16), Some(want));
        }
    }

    #[test]
    fn complete_partial_refuses_what_it_cannot_do() {
        let mut f = tcp4(b"x");
        assert!(!complete_partial(&mut f, 34, 8), "SCTP's CRC32c is not an Internet checksum");
        assert!(!complete_partial(&mut f, 34, 100), "field past the end");
        assert!(!complete_partial(&mut f, 2, 16), "inside the Ethernet header");
        let mut runt = vec![0u8; 20];
        assert!(!complete_from_headers(&mut runt));
    }

    #[test]
    fn udp_checksum_zero_is_sent_as_ones() {
        // A bare UDP header whose length and partial-sum field add up to
        // 0xffff: the complement is 0, which UDP must send as 0xffff.
        let mut f = vec![0u8; 14 + 8];
        f[14 + 4..14 + 6].copy_from_slice(&8u16.to_be_bytes());
        f[14 + 6..14 + 8].copy_from_slice(&(0xffffu16 - 8).to_be_bytes());
        assert!(complete_partial(&mut f, 14, 6));
        assert_eq!(be16(&f, 20), Some(0xffff));
    }

    #[test]
    fn locate_skips_vlan_tags_and_ipv6_extension_headers() {
        let mut f = tcp4(b"abc");
        crate::wire::build::insert_vlan(&mut f, 7);
        let l = locate_l4(&f).unwrap();
        assert_eq!((l.start, l.end, l.proto), (38, 18 + 43, 6));
        // IPv6 with an 8-byte destination options header before TCP.
        let base = tcp6(b"abc");
        let mut f = base[..54].to_vec();
        f[20] = 60;
        f.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        f.extend_from_slice(&base[54..]);
        let plen = be16(&f, 18).unwrap() + 8;
        f[18..20].copy_from_slice(&plen.to_be_bytes());
        let l = locate_l4(&f).unwrap();
        assert_eq!((l.start, l.proto), (62, 6));
        // A fragment is refused.
        let mut g = tcp4(b"abc");
        g[20] = 0x20; // MF
        assert_eq!(locate_l4(&g), None);
        assert_eq!(locate_l4(&[0u8; 10]), None);
    }

    #[test]
    fn gso_tx_header_and_partial_sum() {
        let f = tcp4(&[7u8; 3000]);
        let g = gso_tx(&f, Offload { gso_type: GSO_TCPV4, gso_size: 1448 }, 1500).unwrap().unwrap();
        assert_eq!(
            g.hdr,
            VnetHdr { flags: 1, gso_type: 1, hdr_len: 54, gso_size: 1448, csum_start: 34, csum_offset: 16 }
        );
        assert_eq!(g.csum_at, 50);
        assert_eq!(g.len, f.len());
        // Completing the partial sum in place gives back the full checksum.
        let mut p = f.clone();
        p[50..52].copy_from_slice(&g.partial.to_be_bytes());
        assert!(complete_partial(&mut p, 34, 16));
        assert_eq!(p, f);
        // Padding after the IP packet is not sent.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(
            gso_tx(&padded, Offload { gso_type: GSO_TCPV4, gso_size: 1448 }, 1500).unwrap().unwrap().len,
            f.len()
        );
        // IPv6 with ECN.
        let f6 = tcp6(&[1u8; 5000]);
        let g6 = gso_tx(&f6, Offload { gso_type: GSO_TCPV6 | GSO_ECN, gso_size: 1000 }, 1500).unwrap().unwrap();
        assert_eq!((g6.hdr.gso_type, g6.hdr.csum_start, g6.hdr.hdr_len), (0x84, 54, 74));
        // Leaving by a smaller MTU: segments shrink to fit it (IP 20 + TCP 20 headers).
        let g = gso_tx(&f, Offload { gso_type: GSO_TCPV4, gso_size: 8960 }, 1500).unwrap().unwrap();
        assert_eq!(g.hdr.gso_size, 1460);
        let g = gso_tx(&f6, Offload { gso_type: GSO_TCPV6, gso_size: 1440 }, 1280).unwrap().unwrap();
        assert_eq!(g.hdr.gso_size, 1220);
        assert!(gso_tx(&f, Offload { gso_type: GSO_TCPV4, gso_size: 1448 }, 40).is_err(), "no room for payload");
    }

    #[test]
    fn gso_tx_refusals_and_small_frames() {
        let f = tcp4(&[7u8; 1000]);
        assert_eq!(
            gso_tx(&f, Offload { gso_type: GSO_TCPV4, gso_size: 1448 }, 1500).unwrap(),
            None,
            "fits one segment"
        );
        assert!(gso_tx(&f, Offload { gso_type: GSO_TCPV6, gso_size: 100 }, 1500).is_err(), "family mismatch");
        assert!(gso_tx(&f, Offload { gso_type: super::super::GSO_UDP_L4, gso_size: 100 }, 1500).is_err());
        assert!(gso_tx(&f, Offload { gso_type: GSO_TCPV4, gso_size: 0 }, 1500).is_err());
        let mut bad = f.clone();
        bad[46] = 2 << 4; // data offset below 5 words
        assert!(gso_tx(&bad, Offload { gso_type: GSO_TCPV4, gso_size: 100 }, 1500).is_err());
    }

    #[test]
    fn prepare_refuses_oversized_ordinary_frames() {
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let tx = RingTx { sock: OwnedFd::from(a), vnet: true, max_frame: 1518, bypass: false };
        assert!(tx.prepare(&[0; 1518], Offload::default()).is_ok());
        let e = tx.prepare(&[0; 1519], Offload::default()).err().unwrap();
        assert_eq!(e.raw_os_error(), Some(libc::EMSGSIZE));
        let big = tcp4(&[0; 20000]);
        let p = tx.prepare(&big, Offload { gso_type: GSO_TCPV4, gso_size: 1448 }).unwrap();
        assert_eq!(p.patch.map(|(at, _, len)| (at, len)), Some((50, big.len())));
    }
}
