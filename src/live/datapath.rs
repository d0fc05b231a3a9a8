//! Frames in and out of Linux devices. The worker sees only the `Datapath`
//! traits, so a backend can be swapped without touching the packet path.
//!
//! Two backends:
//! - `RingDatapath` (`ring.rs`): PACKET_MMAP TPACKET_V2 rings with virtio-net
//!   headers, so GSO super-frames and partial checksums (veth and NIC
//!   offloads left on) are usable. The default.
//! - `PnetDatapath`: plain AF_PACKET sockets with recvmmsg/sendmmsg. Works on
//!   any kernel with PACKET_IGNORE_OUTGOING (4.20+), but needs offloads off
//!   (gro, gso, tso, tx-checksumming): it has no vnet header, so it drops GSO
//!   super-frames as oversized and sends GSO-marked frames as they are.
//!
//! Both can join a PACKET_FANOUT group (`Fanout`), so several workers can each
//! open every device and let a classic BPF program pick the worker per frame.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::wire::Mac;

#[path = "ring.rs"]
pub mod ring;
pub use ring::{RingConfig, RingDatapath};

/// virtio_net_hdr gso_type values (linux/virtio_net.h).
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Flag bit on `gso_type`: the TCP stream uses ECN and the first segment carries CWR.
pub const GSO_ECN: u8 = 0x80;

/// How a frame in a batch is offloaded. The default is an ordinary frame,
/// complete and no larger than the link's MTU.
///
/// A TCP GSO frame (`gso_type` GSO_TCPV4 or GSO_TCPV6, maybe with GSO_ECN) is
/// one large TCP segment with valid IP and TCP checksums over the whole of
/// it; on the wire it is `gso_size`-byte payload segments. Only the ring
/// backend receives and transmits such frames; the kernel (or the NIC) cuts
/// them on egress.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct Offload {
    pub gso_type: u8,
    pub gso_size: u16,
}

impl Offload {
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Frames received in one go, stored back to back to keep allocation per
/// batch rather than per frame. Buffers travel back to the receiver for reuse.
#[derive(Default)]
pub struct Batch {
    pub data: Vec<u8>,
    /// (offset, length) of each frame in `data`.
    pub frames: Vec<(u32, u32)>,
    /// The offload of each frame, parallel to `frames`.
    pub offloads: Vec<Offload>,
    /// Frames seen but not carried because they were larger than the link
    /// allows (GRO/GSO super-frames without vnet headers, UDP GSO, truncated
    /// reads) or, with the ring backend, carried a partial checksum that could
    /// not be completed.
    pub oversized: u32,
}

impl Batch {
    pub fn with_capacity(bytes: usize) -> Batch {
        Batch {
            data: Vec::with_capacity(bytes),
            frames: Vec::with_capacity(64),
            offloads: Vec::with_capacity(64),
            oversized: 0,
        }
    }
    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
        self.offloads.clear();
        self.oversized = 0;
    }
    /// Add an ordinary frame.
    pub fn push(&mut self, frame: &[u8]) {
        self.push_offload(frame, Offload::default());
    }
    pub fn push_offload(&mut self, frame: &[u8], offload: Offload) {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(frame);
        self.frames.push((off, frame.len() as u32));
        self.offloads.push(offload);
    }
    /// Record the bytes appended to `data` since `start` as one frame (the
    /// receivers build frames in place).
    pub(crate) fn commit(&mut self, start: usize, offload: Offload) {
        self.frames.push((start as u32, (self.data.len() - start) as u32));
        self.offloads.push(offload);
    }
    /// The offload of frame `i` (an ordinary frame if none was recorded).
    pub fn offload(&self, i: usize) -> Offload {
        self.offloads.get(i).copied().unwrap_or_default()
    }
    /// Frame `i`; panics if there is no such frame.
    pub fn get(&self, i: usize) -> &[u8] {
        let (o, l) = self.frames[i];
        &self.data[o as usize..(o + l) as usize]
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }
    pub fn iter_offloads(&self) -> impl Iterator<Item = (&[u8], Offload)> {
        self.iter().enumerate().map(|(i, f)| (f, self.offload(i)))
    }
    pub fn len(&self) -> usize {
        self.frames.len()
    }
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty() && self.oversized == 0
    }
}

/// The receiving half of one device.
pub trait LinkRx: Send {
    /// Wait up to `timeout` for a frame, then take what else is ready, up to
    /// `max` frames. An empty batch after the timeout is not an error.
    /// A zero `timeout` never blocks: it takes only what is already queued.
    fn recv_batch(&mut self, batch: &mut Batch, max: usize, timeout: Duration) -> io::Result<()>;

    /// The socket to poll(2) for POLLIN, for a worker that serves several
    /// devices and then calls `recv_batch` with a zero timeout on the ready ones.
    fn raw_fd(&self) -> RawFd;

    /// Frames the kernel dropped for this socket since the last call (its
    /// ring or queue was full: we did not read fast enough). Both backends
    /// are packet sockets, whose PACKET_STATISTICS reset when read.
    fn take_drops(&mut self) -> u64 {
        packet_drops(self.raw_fd())
    }
}

/// tp_drops of a packet socket's PACKET_STATISTICS (clear on read); 0 if
/// the socket cannot say.
pub(crate) fn packet_drops(fd: RawFd) -> u64 {
    const PACKET_STATISTICS: libc::c_int = 6;
    // SAFETY: zeroed tpacket_stats (two u32) is valid.
    let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: getsockopt into a live tpacket_stats with its size.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_PACKET, PACKET_STATISTICS, &mut st as *mut _ as *mut libc::c_void, &mut len)
    };
    if r == 0 {
        u64::from(st.tp_drops)
    } else {
        0
    }
}

/// The transmitting half of one device.
pub trait LinkTx: Send {
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Send every frame of `batch` in order; `failed` is told the index and
    /// error of each frame that could not be sent. Backends override this to
    /// send many frames per system call. GSO frames (`Batch::offload`) are
    /// cut by the kernel only with the ring backend; the default and the
    /// pnet backend send every frame as it is (a GSO frame larger than the
    /// MTU then fails with EMSGSIZE).
    fn send_batch(&mut self, batch: &Batch, failed: &mut dyn FnMut(usize, io::Error)) {
        for (i, f) in batch.iter().enumerate() {
            if let Err(e) = self.send(f) {
                failed(i, e);
            }
        }
    }
}

/// One opened device.
pub struct Link {
    pub rx: Box<dyn LinkRx>,
    pub tx: Box<dyn LinkTx>,
    pub mac: Mac,
}

/// A PACKET_FANOUT group to join: the kernel hands each frame received on
/// the device to exactly one member socket, the one whose index (in joining
/// order, modulo the member count) the classic BPF `program` returns.
///
/// The program runs on the frame with its Ethernet header already pulled:
/// offset 0 is the network header (IP), not the MAC header; the Ethernet
/// type is in the `protocol` ancillary field (SKF_AD_OFF + SKF_AD_PROTOCOL).
/// A group id is per device: every member must be bound to the same device
/// with the same backend. No PACKET_FANOUT_FLAG_DEFRAG: it would hand a
/// worker a reassembled datagram larger than the MTU, which it could not
/// forward as received; the program should send fragments by addresses
/// only, so all fragments of a datagram meet in one worker. Frames that
/// arrive between joining and the program being set go to member 0.
#[derive(Clone, Debug)]
pub struct Fanout {
    pub group: u16,
    pub program: Vec<libc::sock_filter>,
}

impl Fanout {
    /// Join `fd` (bound to its device) to the group and set the program.
    pub(crate) fn join(&self, fd: RawFd) -> io::Result<()> {
        if self.program.is_empty() || self.program.len() > u16::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "fanout program must have 1 to 65535 instructions",
            ));
        }
        let arg: u32 = u32::from(self.group) | (libc::PACKET_FANOUT_CBPF << 16);
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT, &arg).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "PACKET_FANOUT group {} (CBPF fanout needs Linux 4.2+; every member must use the same device): {e}",
                    self.group
                ),
            )
        })?;
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_ptr() as *mut libc::sock_filter,
        };
        setsockopt(fd, libc::SOL_PACKET, libc::PACKET_FANOUT_DATA, &prog)
            .map_err(|e| io::Error::new(e.kind(), format!("PACKET_FANOUT_DATA (the fanout program was refused): {e}")))
    }
}

/// A poll(2) timeout: zero stays zero (never block), anything else is at
/// least 1 ms so a sub-millisecond wait does not turn into a busy loop.
pub(crate) fn poll_ms(d: Duration) -> libc::c_int {
    if d.is_zero() {
        0
    } else {
        d.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
    }
}

/// setsockopt(2) with a value of type T.
pub(crate) fn setsockopt<T>(fd: RawFd, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live T and we pass its exact size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

pub trait Datapath {
    /// Open `device` for frames up to `max_frame` bytes (MTU plus Ethernet
    /// and one VLAN header); larger ones are counted in `Batch::oversized`
    /// (except TCP GSO frames on the ring backend). With `fanout`, the
    /// receiving socket joins that group.
    fn open(&mut self, device: &str, max_frame: usize, fanout: Option<&Fanout>) -> io::Result<Link>;
}

/// Which backend `open_datapath` returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// PACKET_MMAP rings with vnet headers (`RingDatapath`).
    #[default]
    Ring,
    /// AF_PACKET sockets through pnet (`PnetDatapath`); offloads must be off.
    Pnet,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> Result<Backend, String> {
        match s {
            "ring" => Ok(Backend::Ring),
            "pnet" => Ok(Backend::Pnet),
            _ => Err(format!("unknown datapath backend {s:?} (expected \"ring\" or \"pnet\")")),
        }
    }
}

pub fn open_datapath(b: Backend) -> Box<dyn Datapath + Send> {
    match b {
        Backend::Ring => Box::new(RingDatapath::default()),
        Backend::Pnet => Box::new(PnetDatapath),
    }
}

/// AF_PACKET through pnet_datalink.
#[derive(Default)]
pub struct PnetDatapath;

/// pnet's own read buffer (unused for reads: see `PnetRx`).
const READ_BUFFER: usize = 64 * 1024;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

impl Datapath for PnetDatapath {
    fn open(&mut self, device: &str, max_frame: usize, fanout: Option<&Fanout>) -> io::Result<Link> {
        let ifc = pnet_datalink::interfaces()
            .into_iter()
            .find(|i| i.name == device)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such network device"))?;
        let mac = ifc.mac.map(|m| m.octets()).ok_or_else(|| io::Error::other("the device has no MAC address"))?;
        let fd = packet_socket()?;
        let cfg = pnet_datalink::Config {
            read_buffer_size: READ_BUFFER,
            write_buffer_size: 64 * 1024,
            read_timeout: Some(Duration::from_millis(100)),
            // A full socket buffer must not stall the worker for long.
            write_timeout: Some(Duration::from_millis(20)),
            promiscuous: true,
            socket_fd: Some(fd),
            ..Default::default()
        };
        let link = match pnet_datalink::channel(&ifc, cfg)? {
            pnet_datalink::Channel::Ethernet(tx, rx) => Link {
                rx: Box::new(PnetRx::new(Some(rx), fd, max_frame)),
                tx: Box::new(PnetTx { tx: Some(tx), fd }),
                mac,
            },
            _ => return Err(io::Error::other("pnet returned a non-Ethernet channel")),
        };
        // pnet has bound the socket by now, which joining a group requires.
        if let Some(f) = fanout {
            f.join(fd)?;
        }
        Ok(link)
    }
}

/// An AF_PACKET socket that does not see frames sent from this host (our own
/// transmissions would otherwise come back as input), with a receive buffer
/// large enough to ride out a busy worker.
fn packet_socket() -> io::Result<RawFd> {
    // SAFETY: plain socket(2); the fd is handed to pnet, which closes it.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, (libc::ETH_P_ALL as u16).to_be() as i32) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            PACKET_IGNORE_OUTGOING,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: closing the fd we just opened.
        unsafe { libc::close(fd) };
        return Err(io::Error::other(format!("PACKET_IGNORE_OUTGOING (needs Linux 4.20+): {e}")));
    }
    let rcvbuf: libc::c_int = 8 << 20;
    // Best effort: capped by net.core.rmem_max unless we hold CAP_NET_ADMIN (FORCE).
    // SAFETY: as above.
    unsafe {
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            if libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                &rcvbuf as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ) == 0
            {
                break;
            }
        }
    }
    Ok(fd)
}

/// Frames read per system call.
const SLOTS: usize = 64;

/// Receives on the socket pnet opened, bound and made promiscuous, but with
/// poll + recvmmsg: one system call for up to 64 frames instead of two per
/// frame through `DataLinkReceiver::next`.
struct PnetRx {
    /// Keeps pnet's side of the socket (and the fd) alive.
    _rx: Option<Box<dyn pnet_datalink::DataLinkReceiver>>,
    fd: RawFd,
    max_frame: usize,
    slot: usize,
    buf: Vec<u8>,
}

impl PnetRx {
    fn new(rx: Option<Box<dyn pnet_datalink::DataLinkReceiver>>, fd: RawFd, max_frame: usize) -> PnetRx {
        // A slot one byte larger than the largest acceptable frame: a frame
        // that fills it is oversized, whatever MSG_TRUNC reports.
        let slot = max_frame + 1;
        PnetRx { _rx: rx, fd, max_frame, slot, buf: vec![0; slot * SLOTS] }
    }
}

impl LinkRx for PnetRx {
    fn recv_batch(&mut self, batch: &mut Batch, max: usize, timeout: Duration) -> io::Result<()> {
        let mut p = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, poll_ms(timeout)) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if r == 0 {
            return Ok(());
        }
        self.read(batch, max)
    }

    fn raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl PnetRx {
    fn read(&mut self, batch: &mut Batch, max: usize) -> io::Result<()> {
        let n = max.clamp(1, SLOTS);
        let base = self.buf.as_mut_ptr();
        let mut iov: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
        // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
        let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            // SAFETY: slot i lies inside self.buf (SLOTS * slot bytes).
            iov[i] =
                libc::iovec { iov_base: unsafe { base.add(i * self.slot) } as *mut libc::c_void, iov_len: self.slot };
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: n headers, each pointing at one iovec into self.buf.
        let got = unsafe {
            libc::recvmmsg(
                self.fd,
                hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        for (i, h) in hdrs.iter().enumerate().take(got as usize) {
            let len = h.msg_len as usize;
            if len > self.max_frame || h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                batch.oversized += 1;
            } else {
                batch.push(&self.buf[i * self.slot..i * self.slot + len]);
            }
        }
        Ok(())
    }
}

/// Sends with send(2) on the bound, non-blocking socket; only when the
/// socket buffer is full does it fall back to pnet's poll-then-send (which
/// waits up to the write timeout).
struct PnetTx {
    /// pnet's sender: the fallback when the socket buffer is full.
    tx: Option<Box<dyn pnet_datalink::DataLinkSender>>,
    fd: RawFd,
}

impl PnetTx {
    /// Wait until the socket buffer has room (up to 20 ms).
    fn wait_writable(&self) -> bool {
        let mut p = libc::pollfd { fd: self.fd, events: libc::POLLOUT, revents: 0 };
        // SAFETY: poll on one live pollfd.
        unsafe { libc::poll(&mut p, 1, 20) > 0 }
    }
}

impl LinkTx for PnetTx {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: send from a live slice on the socket pnet keeps open.
        let r = unsafe { libc::send(self.fd, frame.as_ptr() as *const libc::c_void, frame.len(), libc::MSG_DONTWAIT) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(libc::ENOBUFS) {
            return match &mut self.tx {
                Some(tx) => tx
                    .send_to(frame, None)
                    .unwrap_or_else(|| Err(io::Error::other("frame larger than the write buffer"))),
                None => Err(e),
            };
        }
        Err(e)
    }

    /// sendmmsg: up to 64 frames per system call. It stops at a frame the
    /// device refuses (EMSGSIZE...): that one is reported and skipped.
    fn send_batch(&mut self, batch: &Batch, failed: &mut dyn FnMut(usize, io::Error)) {
        let mut next = 0;
        let mut waits = 0;
        while next < batch.len() {
            let n = (batch.len() - next).min(SLOTS);
            let mut iov: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
            // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
            let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                let f = batch.get(next + i);
                iov[i] = libc::iovec { iov_base: f.as_ptr() as *mut libc::c_void, iov_len: f.len() };
                hdrs[i].msg_hdr.msg_iov = &mut iov[i];
                hdrs[i].msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: n headers pointing at live frames of `batch`.
            let r = unsafe { libc::sendmmsg(self.fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
            if r > 0 {
                next += r as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if waits < 50 && self.wait_writable() => waits += 1,
                _ if e.raw_os_error() == Some(libc::ENOBUFS) && waits < 50 && self.wait_writable() => waits += 1,
                _ => {
                    failed(next, e);
                    next += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keeps_frames_apart() {
        let mut b = Batch::with_capacity(16);
        b.push(b"abc");
        b.push(b"");
        b.push(b"defgh");
        let v: Vec<&[u8]> = b.iter().collect();
        assert_eq!(v, vec![&b"abc"[..], b"", b"defgh"]);
        assert_eq!(b.len(), 3);
        b.clear();
        assert!(b.is_empty());
        b.oversized = 1;
        assert!(!b.is_empty(), "a batch with only an oversized count still reports it");
    }

    #[test]
    fn batch_carries_offloads_beside_frames() {
        let mut b = Batch::with_capacity(16);
        b.push(b"a");
        let gso = Offload { gso_type: GSO_TCPV4, gso_size: 1448 };
        b.push_offload(b"bb", gso);
        b.push(b"c");
        let v: Vec<(&[u8], Offload)> = b.iter_offloads().collect();
        assert_eq!(v, vec![(&b"a"[..], Offload::default()), (&b"bb"[..], gso), (&b"c"[..], Offload::default())]);
        assert_eq!(b.offload(1), gso);
        assert_eq!(b.offload(9), Offload::default(), "out of range: an ordinary frame");
        assert!(gso.is_gso() && !Offload::default().is_gso());
        assert!(!Offload { gso_type: GSO_ECN, gso_size: 0 }.is_gso(), "ECN alone is not a GSO type");
        b.clear();
        assert!(b.offloads.is_empty());
        // A receiver building a frame in place.
        let start = b.data.len();
        b.data.extend_from_slice(b"xyz");
        b.commit(start, gso);
        assert_eq!(b.iter_offloads().next(), Some((&b"xyz"[..], gso)));
    }

    #[test]
    fn poll_timeouts_round_up_but_zero_stays_zero() {
        assert_eq!(poll_ms(Duration::ZERO), 0);
        assert_eq!(poll_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_ms(Duration::from_millis(100)), 100);
        assert_eq!("ring".parse::<Backend>(), Ok(Backend::Ring));
        assert!("xdp".parse::<Backend>().is_err());
    }

    #[test]
    fn recvmmsg_reads_a_batch_and_counts_oversized_frames() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let mut rx = PnetRx::new(None, b.as_raw_fd(), 100);
        let mut batch = Batch::with_capacity(1024);
        rx.recv_batch(&mut batch, 64, Duration::from_millis(10)).unwrap();
        assert!(batch.is_empty(), "nothing queued: empty after the timeout");
        a.send(&[1; 60]).unwrap();
        a.send(&[2; 100]).unwrap();
        a.send(&[3; 101]).unwrap(); // one byte over
        a.send(&[4; 5000]).unwrap(); // a GRO-sized frame
        a.send(&[5; 10]).unwrap();
        rx.recv_batch(&mut batch, 64, Duration::from_millis(100)).unwrap();
        let lens: Vec<(usize, u8)> = batch.iter().map(|f| (f.len(), f[0])).collect();
        assert_eq!(lens, vec![(60, 1), (100, 2), (10, 5)]);
        assert_eq!(batch.oversized, 2);
    }

    #[test]
    fn sendmmsg_sends_in_order_and_skips_a_refused_frame() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let mut tx = PnetTx { tx: None, fd: a.as_raw_fd() };
        let mut batch = Batch::with_capacity(1024);
        batch.push(&[1; 50]);
        batch.push(&vec![2; 1 << 20]); // larger than the socket buffer: EMSGSIZE
        batch.push(&[3; 70]);
        let mut failed = Vec::new();
        tx.send_batch(&batch, &mut |i, e| failed.push((i, e.raw_os_error())));
        assert_eq!(failed, vec![(1, Some(libc::EMSGSIZE))]);
        let mut buf = [0u8; 256];
        let n = b.recv(&mut buf).unwrap();
        assert_eq!((n, buf[0]), (50, 1));
        let n = b.recv(&mut buf).unwrap();
        assert_eq!((n, buf[0]), (70, 3));
    }

    #[test]
    fn recv_batch_respects_max() {
        use std::os::fd::AsRawFd;
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let mut rx = PnetRx::new(None, b.as_raw_fd(), 100);
        for i in 0..5u8 {
            a.send(&[i; 20]).unwrap();
        }
        let mut batch = Batch::with_capacity(1024);
        rx.recv_batch(&mut batch, 2, Duration::from_millis(100)).unwrap();
        assert_eq!(batch.len(), 2);
        batch.clear();
        rx.recv_batch(&mut batch, 64, Duration::from_millis(100)).unwrap();
        assert_eq!(batch.len(), 3, "the rest stays queued for the next call");
    }
}
