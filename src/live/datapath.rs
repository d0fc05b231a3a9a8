//! Frames in and out of Linux devices. The worker sees only the `Datapath`
//! traits, so a faster backend (PACKET_MMAP rings, AF_XDP) can replace the
//! pnet AF_PACKET one without touching the packet path.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use crate::wire::Mac;

/// Frames received in one go, stored back to back to keep allocation per
/// batch rather than per frame. Buffers travel back to the receiver for reuse.
#[derive(Default)]
pub struct Batch {
    pub data: Vec<u8>,
    /// (offset, length) of each frame in `data`.
    pub frames: Vec<(u32, u32)>,
    /// Frames seen but not carried because they were larger than the link
    /// allows (GRO/GSO super-frames, truncated reads).
    pub oversized: u32,
}

impl Batch {
    pub fn with_capacity(bytes: usize) -> Batch {
        Batch { data: Vec::with_capacity(bytes), frames: Vec::with_capacity(64), oversized: 0 }
    }
    pub fn clear(&mut self) {
        self.data.clear();
        self.frames.clear();
        self.oversized = 0;
    }
    pub fn push(&mut self, frame: &[u8]) {
        let off = self.data.len() as u32;
        self.data.extend_from_slice(frame);
        self.frames.push((off, frame.len() as u32));
    }
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.frames.iter().map(|&(o, l)| &self.data[o as usize..(o + l) as usize])
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
    fn recv_batch(&mut self, batch: &mut Batch, max: usize, timeout: Duration) -> io::Result<()>;
}

/// The transmitting half of one device.
pub trait LinkTx: Send {
    fn send(&mut self, frame: &[u8]) -> io::Result<()>;

    /// Send every frame of `batch` in order; `failed` is told the index and
    /// error of each frame that could not be sent. Backends override this to
    /// send many frames per system call.
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

pub trait Datapath {
    /// Open `device` for frames up to `max_frame` bytes (MTU plus Ethernet
    /// and one VLAN header); larger ones are counted in `Batch::oversized`.
    fn open(&mut self, device: &str, max_frame: usize) -> io::Result<Link>;
}

/// AF_PACKET through pnet_datalink.
#[derive(Default)]
pub struct PnetDatapath;

/// pnet's own read buffer (unused for reads: see `PnetRx`).
const READ_BUFFER: usize = 64 * 1024;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

impl Datapath for PnetDatapath {
    fn open(&mut self, device: &str, max_frame: usize) -> io::Result<Link> {
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
        match pnet_datalink::channel(&ifc, cfg)? {
            pnet_datalink::Channel::Ethernet(tx, rx) => Ok(Link {
                rx: Box::new(PnetRx::new(Some(rx), fd, max_frame)),
                tx: Box::new(PnetTx { tx: Some(tx), fd }),
                mac,
            }),
            _ => Err(io::Error::other("pnet returned a non-Ethernet channel")),
        }
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
        let r = unsafe { libc::poll(&mut p, 1, timeout.as_millis().min(i32::MAX as u128) as i32) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e) };
        }
        if r == 0 {
            return Ok(());
        }
        let n = max.clamp(1, SLOTS);
        let base = self.buf.as_mut_ptr();
        let mut iov: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
        // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
        let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            // SAFETY: slot i lies inside self.buf (SLOTS * slot bytes).
            iov[i] = libc::iovec { iov_base: unsafe { base.add(i * self.slot) } as *mut libc::c_void, iov_len: self.slot };
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: n headers, each pointing at one iovec into self.buf.
        let got = unsafe {
            libc::recvmmsg(self.fd, hdrs.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT | libc::MSG_TRUNC, std::ptr::null_mut())
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
                Some(tx) => tx.send_to(frame, None).unwrap_or_else(|| Err(io::Error::other("frame larger than the write buffer"))),
                None => Err(e),
            };
        }
        Err(e)
    }

    /// sendmmsg: up to 64 frames per system call. It stops at a frame the
    /// device refuses (EMSGSIZE...): that one is reported and skipped.
    fn send_batch(&mut self, batch: &Batch, failed: &mut dyn FnMut(usize, io::Error)) {
        let frames: Vec<&[u8]> = batch.iter().collect();
        let mut next = 0;
        let mut waits = 0;
        while next < frames.len() {
            let n = (frames.len() - next).min(SLOTS);
            let mut iov: [libc::iovec; SLOTS] = unsafe { std::mem::zeroed() };
            // SAFETY: zeroed mmsghdr is a valid "no name, no control" header.
            let mut hdrs: [libc::mmsghdr; SLOTS] = unsafe { std::mem::zeroed() };
            for i in 0..n {
                let f = frames[next + i];
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
