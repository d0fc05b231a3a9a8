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

/// Big enough for the largest GRO/GSO frame the kernel builds (64 KiB), so
/// such a frame is seen whole, counted and dropped, never misread as a
/// truncated small one.
const READ_BUFFER: usize = 256 * 1024;
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
                rx: Box::new(PnetRx { rx, fd, max_frame }),
                tx: Box::new(PnetTx { tx }),
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

struct PnetRx {
    rx: Box<dyn pnet_datalink::DataLinkReceiver>,
    fd: RawFd,
    max_frame: usize,
}

impl PnetRx {
    fn ready(&self) -> bool {
        let mut p = libc::pollfd { fd: self.fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: poll on one live pollfd, no wait.
        unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents & libc::POLLIN != 0 }
    }
}

impl LinkRx for PnetRx {
    fn recv_batch(&mut self, batch: &mut Batch, max: usize, _timeout: Duration) -> io::Result<()> {
        // The first read waits (pnet's read_timeout); the rest only take
        // what is already queued, so a batch never adds latency.
        for i in 0..max {
            if i > 0 && !self.ready() {
                break;
            }
            match self.rx.next() {
                Ok(frame) if frame.len() > self.max_frame || frame.len() >= READ_BUFFER => batch.oversized += 1,
                Ok(frame) => batch.push(frame),
                Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return if batch.is_empty() { Err(e) } else { Ok(()) },
            }
        }
        Ok(())
    }
}

struct PnetTx {
    tx: Box<dyn pnet_datalink::DataLinkSender>,
}

impl LinkTx for PnetTx {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        self.tx.send_to(frame, None).unwrap_or_else(|| Err(io::Error::other("frame larger than the write buffer")))
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
}
