//! The replay output: a pcapng file with one interface block per gateway
//! interface, so a reader (Wireshark, tshark -i) sees which side each frame
//! left on.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, PcapError};

use crate::time::Nanos;

pub struct PcapNgOut<W: Write> {
    w: PcapNgWriter<W>,
    interfaces: usize,
}

impl PcapNgOut<BufWriter<File>> {
    /// Create (truncate) `path` and write the section and interface blocks.
    pub fn create(path: &Path, names: &[&str]) -> io::Result<Self> {
        let file = File::create(path)?;
        PcapNgOut::new(BufWriter::with_capacity(256 * 1024, file), names)
    }
}

impl<W: Write> PcapNgOut<W> {
    /// `names[i]` names interface `i`: the gateway interface's device if set,
    /// else its configuration name.
    pub fn new(w: W, names: &[&str]) -> io::Result<Self> {
        let mut w = PcapNgWriter::new(w).map_err(to_io)?;
        for name in names {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0, // no limit: rewritten frames may grow
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())),
                    // Nanoseconds, so the input's timestamps survive unrounded.
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            };
            w.write_pcapng_block(idb).map_err(to_io)?;
        }
        Ok(PcapNgOut { w, interfaces: names.len() })
    }

    /// Append `frame` as sent on interface `iface` at `ts`.
    pub fn write(&mut self, iface: usize, ts: Nanos, frame: &[u8]) -> io::Result<()> {
        if iface >= self.interfaces {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("no output interface {iface}")));
        }
        let len =
            u32::try_from(frame.len()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        let epb = EnhancedPacketBlock {
            interface_id: iface as u32,
            timestamp: Duration::from_nanos(ts.0),
            original_len: len,
            data: Cow::Borrowed(frame),
            options: Vec::new(),
        };
        self.w.write_pcapng_block(epb).map_err(to_io)?;
        Ok(())
    }

    /// Flush and hand back the underlying writer.
    pub fn finish(self) -> io::Result<W> {
        let mut w = self.w.into_inner();
        w.flush()?;
        Ok(w)
    }
}

fn to_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}
