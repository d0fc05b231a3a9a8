//! Reading and writing captures (pcap and pcapng) for replay.
//!
//! The reader streams: it holds one buffer of a few hundred KiB (grown only
//! for an unusually large record), so a capture of tens of millions of frames
//! replays in constant memory. Every record becomes one [`FrameMeta`]; frames
//! whose link type cannot be normalised to Ethernet are still yielded, marked
//! unsupported, because replay must account for every input frame.
//!
//! The `pcap-file` crate parses headers and records; the buffering is ours so
//! that a truncated last record can be told from a corrupt file and reported
//! with its byte offset.

pub mod link;
mod writer;

pub use writer::PcapNgOut;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{Endianness, PcapError, TsResolution};

use crate::time::Nanos;

const PCAP_MAGICS: [[u8; 4]; 4] =
    [[0xA1, 0xB2, 0xC3, 0xD4], [0xD4, 0xC3, 0xB2, 0xA1], [0xA1, 0xB2, 0x3C, 0x4D], [0x4D, 0x3C, 0xB2, 0xA1]];
const PCAPNG_SHB: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

const INITIAL_BUFFER: usize = 256 * 1024;
/// A record claiming more than this is corrupt, not a frame: it bounds how
/// far the buffer may grow on hostile input.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Why a capture could not be read. Displays as one line naming the file.
#[derive(Debug)]
pub struct CaptureError {
    pub path: PathBuf,
    pub kind: CaptureErrorKind,
    pub cause: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureErrorKind {
    /// Open or read failed at the OS level.
    Io,
    /// Neither pcap nor pcapng magic.
    NotCapture,
    /// The file header (pcap global header, pcapng section header) is unusable.
    CorruptHeader,
    /// A record inside the file is unusable (not merely cut short at the end).
    CorruptRecord,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot read capture {}: {}", self.path.display(), self.cause)
    }
}

impl std::error::Error for CaptureError {}

/// One interface of the capture: the single link of a pcap file, or a pcapng
/// Interface Description Block (numbered across sections in file order).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureInterface {
    /// pcapng `if_name`, if the writer recorded one.
    pub name: Option<String>,
    pub linktype: u32,
    /// pcapng `if_tsresol` (pcap: 6 or 9).
    pub tsresol: u8,
    /// pcapng `if_tsoffset`, seconds added to every timestamp.
    pub tsoffset: i64,
    /// Bytes of each record that are frame (pcapng SPBs carry padding).
    pub snaplen: u32,
}

impl CaptureInterface {
    /// Capture timestamp units → nanoseconds since the epoch. Times before
    /// 1970 (a negative offset) clamp to zero: the engine clock is unsigned.
    pub fn to_nanos(&self, units: u64) -> Nanos {
        let n = self.tsresol & 0x7F;
        let ns: u128 = if self.tsresol & 0x80 == 0 {
            if n <= 9 {
                units as u128 * 10u128.pow(u32::from(9 - n))
            } else if n - 9 <= 38 {
                units as u128 / 10u128.pow(u32::from(n - 9))
            } else {
                0
            }
        } else if n < 64 {
            (units as u128 * 1_000_000_000) >> n
        } else {
            0
        };
        let ns = ns as i128 + i128::from(self.tsoffset) * 1_000_000_000;
        Nanos(ns.clamp(0, u64::MAX as i128) as u64)
    }
}

/// What the reader knows about one frame; its bytes (normalised to Ethernet
/// II when supported) are in the caller's buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameMeta {
    /// 1-based position in the capture.
    pub index: u64,
    pub ts: Nanos,
    /// Index into [`CaptureReader::interfaces`], if the record named a valid one.
    pub iface: Option<usize>,
    /// Length on the wire, per the capture.
    pub orig_len: u32,
    /// Why the frame is not an Ethernet frame the engine can take; the buffer
    /// then holds the raw record bytes.
    pub unsupported: Option<String>,
}

enum Format {
    /// Before the file header has been read.
    Unread,
    Pcap {
        parser: PcapParser,
        endianness: Endianness,
    },
    PcapNg {
        parser: PcapNgParser,
        section_base: usize,
        section_ifaces: usize,
    },
}

/// A streaming pcap / pcapng reader.
pub struct CaptureReader<R: Read = File> {
    path: PathBuf,
    src: R,
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    eof: bool,
    /// File offset of `buf[0]`.
    base: u64,
    total: Option<u64>,
    format: Format,
    ifaces: Vec<CaptureInterface>,
    frames: u64,
    last_ts: Nanos,
    warning: Option<String>,
    done: bool,
}

impl CaptureReader<File> {
    /// Open a capture file, check its magic and read its header.
    pub fn open(path: &Path) -> Result<Self, CaptureError> {
        let file = File::open(path).map_err(|e| io_error(path, &e))?;
        let total = file.metadata().ok().map(|m| m.len());
        CaptureReader::new(path, file, total)
    }
}

impl<R: Read> CaptureReader<R> {
    /// Read a capture from any reader; `path` only names it in messages,
    /// `total` (bytes) feeds [`CaptureReader::progress`].
    pub fn new(path: &Path, src: R, total: Option<u64>) -> Result<Self, CaptureError> {
        let mut r = CaptureReader {
            path: path.to_path_buf(),
            src,
            buf: vec![0; INITIAL_BUFFER],
            pos: 0,
            len: 0,
            eof: false,
            base: 0,
            total,
            format: Format::Unread,
            ifaces: Vec::new(),
            frames: 0,
            last_ts: Nanos::ZERO,
            warning: None,
            done: false,
        };
        r.read_header()?;
        Ok(r)
    }

    fn read_header(&mut self) -> Result<(), CaptureError> {
        while self.len < 4 && !self.eof {
            self.fill()?;
        }
        if self.len < 4 {
            let cause = if self.len == 0 {
                "not a pcap or pcapng file (it is empty)".to_string()
            } else {
                format!("not a pcap or pcapng file (only {} bytes)", self.len)
            };
            return Err(self.error(CaptureErrorKind::NotCapture, cause));
        }
        let magic = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
        if PCAP_MAGICS.contains(&magic) {
            let parsed = self.parse_header(PcapParser::new, "pcap file header")?;
            let h = parsed.header();
            if h.version_major != 2 {
                let cause = format!("corrupt pcap header (version {}.{})", h.version_major, h.version_minor);
                return Err(self.error(CaptureErrorKind::CorruptHeader, cause));
            }
            self.ifaces.push(CaptureInterface {
                name: None,
                // The upper bits may carry FCS flags; the type is the low 16.
                linktype: u32::from(h.datalink) & 0xFFFF,
                tsresol: if h.ts_resolution == TsResolution::NanoSecond { 9 } else { 6 },
                tsoffset: 0,
                snaplen: h.snaplen,
            });
            self.format = Format::Pcap { endianness: h.endianness, parser: parsed };
            Ok(())
        } else if magic == PCAPNG_SHB {
            let parser = self.parse_header(PcapNgParser::new, "pcapng section header")?;
            let major = parser.section().major_version;
            if major != 1 {
                let cause = format!("corrupt pcapng section header (version {major})");
                return Err(self.error(CaptureErrorKind::CorruptHeader, cause));
            }
            self.format = Format::PcapNg { parser, section_base: 0, section_ifaces: 0 };
            Ok(())
        } else {
            let cause = format!("not a pcap or pcapng file (magic 0x{:08x})", u32::from_le_bytes(magic));
            Err(self.error(CaptureErrorKind::NotCapture, cause))
        }
    }

    fn parse_header<T>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<(&[u8], T), PcapError>,
        what: &str,
    ) -> Result<T, CaptureError> {
        loop {
            let avail = &self.buf[self.pos..self.len];
            match parse(avail) {
                Ok((rem, value)) => {
                    self.pos += avail.len() - rem.len();
                    return Ok(value);
                }
                Err(PcapError::IncompleteBuffer) if self.eof || self.len >= MAX_RECORD => {
                    let cause = format!("truncated {what} ({} bytes)", self.len);
                    return Err(self.error(CaptureErrorKind::CorruptHeader, cause));
                }
                Err(PcapError::IncompleteBuffer) => self.fill()?,
                Err(e) => return Err(self.error(CaptureErrorKind::CorruptHeader, format!("corrupt {what}: {e}"))),
            }
        }
    }

    /// The next frame, written into `out` (cleared first). `Ok(None)` at the
    /// end of the capture; check [`CaptureReader::warning`] then.
    pub fn next_frame(&mut self, out: &mut Vec<u8>) -> Result<Option<FrameMeta>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        loop {
            if self.pos == self.len && !self.eof {
                self.fill()?;
            }
            if self.pos == self.len && self.eof {
                self.done = true;
                return Ok(None);
            }
            // Refuse absurd lengths before asking for that many bytes.
            if let Some(claimed) = self.claimed_len() {
                if claimed > MAX_RECORD {
                    let cause = format!(
                        "corrupt record after frame {} at byte offset {}: it claims {claimed} bytes",
                        self.frames,
                        self.offset()
                    );
                    return Err(self.error(CaptureErrorKind::CorruptRecord, cause));
                }
            }
            match self.parse_one(out) {
                Step::Frame(meta) => return Ok(Some(meta)),
                Step::Skipped => continue,
                Step::Incomplete if self.eof => {
                    let have = self.len - self.pos;
                    let of = self.claimed_len().map(|n| format!(" of a {n}-byte record")).unwrap_or_default();
                    self.warning = Some(format!(
                        "capture {}: last record truncated at byte offset {} ({have} bytes{of}); read the {} complete frames before it",
                        self.path.display(),
                        self.offset(),
                        self.frames
                    ));
                    self.done = true;
                    return Ok(None);
                }
                Step::Incomplete => self.fill()?,
                Step::Corrupt(e) => {
                    let cause =
                        format!("corrupt record after frame {} at byte offset {}: {e}", self.frames, self.offset());
                    return Err(self.error(CaptureErrorKind::CorruptRecord, cause));
                }
            }
        }
    }

    /// The total length of the record at `pos`, if its header is in the buffer.
    fn claimed_len(&self) -> Option<usize> {
        let b = &self.buf[self.pos..self.len];
        match &self.format {
            Format::Unread => None,
            Format::Pcap { endianness, .. } => {
                let f: [u8; 4] = b.get(8..12)?.try_into().ok()?;
                Some(16 + read_u32(*endianness, f) as usize)
            }
            Format::PcapNg { parser, .. } => {
                let f: [u8; 4] = b.get(4..8)?.try_into().ok()?;
                if b[..4] == PCAPNG_SHB {
                    // A new section may change byte order: its BOM says which.
                    let bom: [u8; 4] = b.get(8..12)?.try_into().ok()?;
                    let e = if bom == [0x1A, 0x2B, 0x3C, 0x4D] { Endianness::Big } else { Endianness::Little };
                    Some(read_u32(e, f) as usize)
                } else {
                    Some(read_u32(parser.section().endianness, f) as usize)
                }
            }
        }
    }

    fn parse_one(&mut self, out: &mut Vec<u8>) -> Step {
        let avail = &self.buf[self.pos..self.len];
        match &mut self.format {
            Format::Unread => Step::Corrupt("no file header".to_string()),
            Format::Pcap { parser, .. } => {
                // Raw records: libpcap itself accepts orig_len > snaplen and
                // odd fractions, which the crate's checked records reject.
                let (rem, raw) = match parser.next_raw_packet(avail) {
                    Ok(v) => v,
                    Err(PcapError::IncompleteBuffer) => return Step::Incomplete,
                    Err(e) => return Step::Corrupt(e.to_string()),
                };
                let iface = &self.ifaces[0];
                let frac = if iface.tsresol == 9 { u64::from(raw.ts_frac) } else { u64::from(raw.ts_frac) * 1000 };
                let ts = Nanos(u64::from(raw.ts_sec) * 1_000_000_000 + frac);
                let unsupported = link::normalise(iface.linktype, &raw.data, out).err().map(|u| {
                    out.clear();
                    out.extend_from_slice(&raw.data);
                    u.0
                });
                let orig_len = raw.orig_len;
                self.pos += avail.len() - rem.len();
                self.frames += 1;
                self.last_ts = ts;
                Step::Frame(FrameMeta { index: self.frames, ts, iface: Some(0), orig_len, unsupported })
            }
            Format::PcapNg { parser, section_base, section_ifaces } => {
                let (rem, block) = match parser.next_block(avail) {
                    Ok(v) => v,
                    Err(PcapError::IncompleteBuffer) => return Step::Incomplete,
                    Err(e) => return Step::Corrupt(e.to_string()),
                };
                let consumed = avail.len() - rem.len();
                // (local interface id, units, orig_len, data); None: not a packet.
                let packet = match block {
                    Block::SectionHeader(_) => {
                        *section_base = self.ifaces.len();
                        *section_ifaces = 0;
                        None
                    }
                    Block::InterfaceDescription(idb) => {
                        self.ifaces.push(describe(&idb));
                        *section_ifaces += 1;
                        None
                    }
                    // The crate reads EPB timestamps as nanoseconds; they are
                    // really interface units, converted below.
                    Block::EnhancedPacket(epb) => Some((
                        epb.interface_id as usize,
                        Some(epb.timestamp.as_nanos() as u64),
                        epb.original_len,
                        epb.data,
                    )),
                    Block::Packet(pb) => {
                        Some((usize::from(pb.interface_id), Some(pb.timestamp), pb.original_len, pb.data))
                    }
                    // No timestamp: it happened no earlier than the frame before.
                    Block::SimplePacket(spb) => Some((0, None, spb.original_len, spb.data)),
                    _ => None,
                };
                let Some((local, units, orig_len, data)) = packet else {
                    self.pos += consumed;
                    return Step::Skipped;
                };
                let iface = (local < *section_ifaces).then_some(*section_base + local);
                let (ts, unsupported) = match iface.map(|i| &self.ifaces[i]) {
                    Some(ci) => {
                        let ts = units.map_or(self.last_ts, |u| ci.to_nanos(u));
                        // SPB data runs to the padded block end; trim to the frame.
                        let mut data: &[u8] = &data;
                        if units.is_none() {
                            let keep =
                                (orig_len as usize).min(if ci.snaplen == 0 { usize::MAX } else { ci.snaplen as usize });
                            data = &data[..data.len().min(keep)];
                        }
                        let u = link::normalise(ci.linktype, data, out).err().map(|u| {
                            out.clear();
                            out.extend_from_slice(data);
                            u.0
                        });
                        (ts, u)
                    }
                    None => {
                        out.clear();
                        out.extend_from_slice(&data);
                        let why = format!("interface id {local} has no interface description block");
                        (units.map_or(self.last_ts, Nanos), Some(why))
                    }
                };
                self.pos += consumed;
                self.frames += 1;
                self.last_ts = ts;
                Step::Frame(FrameMeta { index: self.frames, ts, iface, orig_len, unsupported })
            }
        }
    }

    /// Move what is left to the front and read more; grow the buffer when a
    /// single record does not fit.
    fn fill(&mut self) -> Result<(), CaptureError> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.base += self.pos as u64;
            self.len -= self.pos;
            self.pos = 0;
        }
        if self.len == self.buf.len() {
            let want = (self.buf.len() * 2).min(MAX_RECORD + 16);
            if want <= self.buf.len() {
                self.eof = true; // cannot hold more; the caller reports it
                return Ok(());
            }
            self.buf.resize(want, 0);
        }
        loop {
            match self.src.read(&mut self.buf[self.len..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(());
                }
                Ok(n) => {
                    self.len += n;
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_error(&self.path, &e)),
            }
        }
    }

    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn error(&self, kind: CaptureErrorKind, cause: String) -> CaptureError {
        CaptureError { path: self.path.clone(), kind, cause }
    }

    /// Interfaces seen so far (a pcapng file may describe more as it goes).
    pub fn interfaces(&self) -> &[CaptureInterface] {
        &self.ifaces
    }

    /// "pcap" or "pcapng".
    pub fn format_name(&self) -> &'static str {
        match self.format {
            Format::Unread | Format::Pcap { .. } => "pcap",
            Format::PcapNg { .. } => "pcapng",
        }
    }

    /// (bytes consumed, file size if known), for progress reports.
    pub fn progress(&self) -> (u64, Option<u64>) {
        (self.offset(), self.total)
    }

    /// Frames yielded so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Set once the end is reached if the last record was cut short.
    pub fn warning(&self) -> Option<&str> {
        self.warning.as_deref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

enum Step {
    Frame(FrameMeta),
    Skipped,
    Incomplete,
    Corrupt(String),
}

fn describe(idb: &InterfaceDescriptionBlock<'_>) -> CaptureInterface {
    let mut ci = CaptureInterface {
        name: None,
        linktype: u32::from(idb.linktype),
        tsresol: 6,
        tsoffset: 0,
        snaplen: idb.snaplen,
    };
    for opt in &idb.options {
        match opt {
            InterfaceDescriptionOption::IfName(n) => ci.name = Some(n.to_string()),
            InterfaceDescriptionOption::IfTsResol(r) => ci.tsresol = *r,
            // The option is a signed 64-bit offset; the crate hands it over unsigned.
            InterfaceDescriptionOption::IfTsOffset(o) => ci.tsoffset = *o as i64,
            _ => {}
        }
    }
    ci
}

fn read_u32(e: Endianness, b: [u8; 4]) -> u32 {
    match e {
        Endianness::Big => u32::from_be_bytes(b),
        Endianness::Little => u32::from_le_bytes(b),
    }
}

fn io_error(path: &Path, e: &io::Error) -> CaptureError {
    CaptureError { path: path.to_path_buf(), kind: CaptureErrorKind::Io, cause: strip_os_error(e) }
}

/// `io::Error`'s Display appends " (os error N)"; the message reads better without.
pub fn strip_os_error(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

#[cfg(test)]
mod tests;
