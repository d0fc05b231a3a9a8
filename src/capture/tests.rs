use std::borrow::Cow;
use std::io::Cursor;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::simple_packet::SimplePacketBlock;
use pcap_file::pcapng::{Block, PcapNgReader, PcapNgWriter};
use pcap_file::{DataLink, Endianness};

use super::*;

const V4: [u8; 20] = [0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 192, 0, 2, 1, 198, 51, 100, 1];

fn eth_v4() -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    v.extend_from_slice(&V4);
    v
}

/// A pcap file built byte by byte, so the reader is not checked against the
/// same library's writer.
fn pcap(little: bool, nanos: bool, linktype: u32, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
    let u32b = |v: u32| if little { v.to_le_bytes() } else { v.to_be_bytes() };
    let u16b = |v: u16| if little { v.to_le_bytes() } else { v.to_be_bytes() };
    let mut f = Vec::new();
    f.extend_from_slice(&u32b(if nanos { 0xA1B2_3C4D } else { 0xA1B2_C3D4 }));
    f.extend_from_slice(&u16b(2));
    f.extend_from_slice(&u16b(4));
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&u32b(65535));
    f.extend_from_slice(&u32b(linktype));
    for (sec, frac, data) in records {
        f.extend_from_slice(&u32b(*sec));
        f.extend_from_slice(&u32b(*frac));
        f.extend_from_slice(&u32b(data.len() as u32));
        f.extend_from_slice(&u32b(data.len() as u32 + 100));
        f.extend_from_slice(data);
    }
    f
}

type ReadAll = (Vec<(FrameMeta, Vec<u8>)>, Option<String>, Vec<CaptureInterface>);

fn read_all(bytes: &[u8]) -> Result<ReadAll, CaptureError> {
    let mut r = CaptureReader::new(Path::new("t.pcap"), Cursor::new(bytes.to_vec()), Some(bytes.len() as u64))?;
    let mut out = Vec::new();
    let mut frames = Vec::new();
    while let Some(m) = r.next_frame(&mut out)? {
        frames.push((m, out.clone()));
    }
    if r.warning().is_none() {
        assert_eq!(r.progress(), (bytes.len() as u64, Some(bytes.len() as u64)), "all bytes consumed");
    }
    Ok((frames, r.warning().map(str::to_string), r.interfaces().to_vec()))
}

#[test]
fn pcap_all_four_magics() {
    let f = eth_v4();
    for little in [true, false] {
        for nanos in [true, false] {
            let bytes = pcap(little, nanos, 1, &[(10, 500, &f), (11, 0, &f[..20])]);
            let (frames, warn, ifaces) = read_all(&bytes).unwrap();
            assert!(warn.is_none());
            assert_eq!(ifaces.len(), 1);
            assert_eq!(frames.len(), 2, "little={little} nanos={nanos}");
            let want = if nanos { 10_000_000_500 } else { 10_000_500_000 };
            assert_eq!(frames[0].0.ts, Nanos(want));
            assert_eq!(frames[0].0.index, 1);
            assert_eq!(frames[0].0.iface, Some(0));
            assert_eq!(frames[0].0.orig_len, f.len() as u32 + 100);
            assert_eq!(frames[0].1, f);
            assert_eq!(frames[1].0.index, 2);
            assert_eq!(frames[1].1, &f[..20]);
        }
    }
}

#[test]
fn pcap_other_link_types_are_normalised_or_flagged() {
    let mut null = 2u32.to_le_bytes().to_vec();
    null.extend_from_slice(&V4);
    let bytes = pcap(true, false, 0, &[(1, 0, &null), (2, 0, &[9, 0, 0, 0, 1])]);
    let (frames, _, _) = read_all(&bytes).unwrap();
    assert_eq!(frames[0].0.unsupported, None);
    assert_eq!(&frames[0].1[12..14], &[0x08, 0x00]);
    assert_eq!(&frames[0].1[14..], &V4);
    assert!(frames[1].0.unsupported.as_deref().unwrap().contains("family 9"));
    // The raw record is kept for the report.
    assert_eq!(frames[1].1, vec![9, 0, 0, 0, 1]);

    let bytes = pcap(false, false, 147, &[(1, 0, &V4)]);
    let (frames, _, _) = read_all(&bytes).unwrap();
    assert_eq!(frames[0].0.unsupported.as_deref(), Some("link type 147 is not supported"));
}

#[test]
fn truncated_last_record_is_a_warning_after_the_complete_frames() {
    let f = eth_v4();
    let bytes = pcap(true, false, 1, &[(1, 0, &f), (2, 0, &f), (3, 0, &f)]);
    for cut in [1, 10, 16, 20] {
        let (frames, warn, _) = read_all(&bytes[..bytes.len() - cut]).unwrap();
        assert_eq!(frames.len(), 2, "cut {cut}");
        let warn = warn.expect("a warning");
        assert!(warn.contains("truncated") && warn.contains("t.pcap") && warn.contains("2 complete frames"), "{warn}");
        let offset = 24 + 2 * (16 + f.len());
        assert!(warn.contains(&format!("byte offset {offset}")), "{warn}");
    }
}

#[test]
fn not_a_capture_names_the_magic() {
    let e = read_all(b"Hello, world\n").unwrap_err();
    assert_eq!(e.kind, CaptureErrorKind::NotCapture);
    assert_eq!(e.to_string(), "cannot read capture t.pcap: not a pcap or pcapng file (magic 0x6c6c6548)");
    assert_eq!(read_all(b"").unwrap_err().kind, CaptureErrorKind::NotCapture);
    assert_eq!(read_all(b"ab").unwrap_err().kind, CaptureErrorKind::NotCapture);
}

#[test]
fn corrupt_headers_are_errors() {
    let good = pcap(true, false, 1, &[]);
    let e = read_all(&good[..10]).unwrap_err();
    assert_eq!(e.kind, CaptureErrorKind::CorruptHeader);
    assert!(e.cause.contains("truncated pcap file header"), "{e}");
    let mut bad = good.clone();
    bad[4] = 7;
    let e = read_all(&bad).unwrap_err();
    assert_eq!(e.kind, CaptureErrorKind::CorruptHeader);
    assert!(e.cause.contains("version 7.4"), "{e}");
    let e = read_all(&[0x0A, 0x0D, 0x0D, 0x0A, 28, 0, 0, 0, 1, 2, 3, 4, 0, 0, 0, 0]).unwrap_err();
    assert_eq!(e.kind, CaptureErrorKind::CorruptHeader, "{e}");
}

#[test]
fn absurd_record_length_is_corrupt_not_an_allocation() {
    let mut bytes = pcap(true, false, 1, &[(1, 0, &eth_v4())]);
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0x7F, 0, 0, 0, 0]);
    bytes.extend_from_slice(&[0; 64]);
    let mut r = CaptureReader::new(Path::new("x.pcap"), Cursor::new(bytes), None).unwrap();
    let mut out = Vec::new();
    assert!(r.next_frame(&mut out).unwrap().is_some());
    let e = r.next_frame(&mut out).unwrap_err();
    assert_eq!(e.kind, CaptureErrorKind::CorruptRecord);
    assert!(e.cause.contains("after frame 1") && e.cause.contains("claims"), "{e}");
}

/// Reads one byte at a time, so every record crosses a refill.
struct Trickle(Cursor<Vec<u8>>);
impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn records_larger_than_the_buffer_and_tiny_reads() {
    let big = vec![0xAB; INITIAL_BUFFER * 3 + 5];
    let small = eth_v4();
    let bytes = pcap(true, true, 1, &[(1, 1, &small), (2, 2, &big), (3, 3, &small)]);
    let (frames, warn, _) = read_all(&bytes).unwrap();
    assert!(warn.is_none());
    assert_eq!(frames.len(), 3);
    assert_eq!(frames[1].1, big);
    assert_eq!(frames[2].0.ts, Nanos(3_000_000_003));

    let bytes = pcap(false, false, 1, &[(1, 1, &small), (2, 2, &small)]);
    let mut r = CaptureReader::new(Path::new("t"), Trickle(Cursor::new(bytes)), None).unwrap();
    let mut out = Vec::new();
    assert_eq!(r.next_frame(&mut out).unwrap().unwrap().index, 1);
    assert_eq!(out, small);
    assert_eq!(r.next_frame(&mut out).unwrap().unwrap().ts, Nanos(2_000_002_000));
    assert!(r.next_frame(&mut out).unwrap().is_none());
    assert!(r.next_frame(&mut out).unwrap().is_none(), "stays at the end");
}

fn idb(
    linktype: DataLink,
    name: &str,
    tsresol: Option<u8>,
    tsoffset: Option<i64>,
) -> InterfaceDescriptionBlock<'static> {
    let mut options = vec![InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string()))];
    if let Some(r) = tsresol {
        options.push(InterfaceDescriptionOption::IfTsResol(r));
    }
    if let Some(o) = tsoffset {
        options.push(InterfaceDescriptionOption::IfTsOffset(o as u64));
    }
    InterfaceDescriptionBlock { linktype, snaplen: 0, options }
}

fn epb(iface: u32, units: u64, data: &[u8]) -> EnhancedPacketBlock<'_> {
    EnhancedPacketBlock {
        interface_id: iface,
        // The crate writes `timestamp.as_nanos()` as the raw units.
        timestamp: Duration::from_nanos(units),
        original_len: data.len() as u32,
        data: Cow::Borrowed(data),
        options: vec![],
    }
}

fn pcapng(endianness: Endianness, build: impl FnOnce(&mut PcapNgWriter<Vec<u8>>)) -> Vec<u8> {
    let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
    build(&mut w);
    w.into_inner()
}

/// The bytes of an EPB for interface `id`, which the crate's writer would
/// refuse to emit without that many interface blocks before it.
fn undescribed_epb(endianness: Endianness, id: u32, data: &[u8]) -> Vec<u8> {
    let mut w = PcapNgWriter::with_endianness(Vec::new(), endianness).unwrap();
    for _ in 0..=id {
        w.write_pcapng_block(idb(DataLink::ETHERNET, "x", None, None)).unwrap();
    }
    let before = w.get_ref().len();
    w.write_pcapng_block(epb(id, 5, data)).unwrap();
    w.into_inner()[before..].to_vec()
}

#[test]
fn pcapng_interfaces_names_link_types_and_resolutions() {
    let e = eth_v4();
    let mut sll = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 9, 0, 0, 0x08, 0x00];
    sll.extend_from_slice(&V4);
    for endianness in [Endianness::Little, Endianness::Big] {
        let bytes = pcapng(endianness, |w| {
            w.write_pcapng_block(idb(DataLink::ETHERNET, "eth0", None, None)).unwrap(); // µs default
            w.write_pcapng_block(idb(DataLink::LINUX_SLL, "any", Some(9), None)).unwrap();
            w.write_pcapng_block(idb(DataLink::RAW, "tun0", Some(0x80 | 10), Some(100))).unwrap(); // 2^-10 s
            w.write_pcapng_block(epb(0, 1_500_000, &e)).unwrap();
            w.write_pcapng_block(epb(1, 2_000_000_007, &sll)).unwrap();
            w.write_pcapng_block(epb(2, 1024 * 3 + 512, &V4)).unwrap();
        });
        let mut bytes = bytes;
        bytes.extend(undescribed_epb(endianness, 7, &V4));
        let (frames, warn, ifaces) = read_all(&bytes).unwrap();
        assert!(warn.is_none());
        let names: Vec<_> = ifaces.iter().map(|i| i.name.clone().unwrap()).collect();
        assert_eq!(names, ["eth0", "any", "tun0"]);
        assert_eq!(ifaces.iter().map(|i| i.linktype).collect::<Vec<_>>(), [1, 113, 101]);
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].0.ts, Nanos(1_500_000_000));
        assert_eq!(frames[0].0.iface, Some(0));
        assert_eq!(frames[0].1, e);
        assert_eq!(frames[1].0.ts, Nanos(2_000_000_007));
        assert_eq!(frames[1].0.iface, Some(1));
        assert_eq!(&frames[1].1[6..12], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(&frames[1].1[14..], &V4);
        assert_eq!(frames[2].0.ts, Nanos(103_500_000_000));
        assert_eq!(frames[2].1.len(), 14 + V4.len());
        // Interface 7 was never described: reported, not dropped.
        assert_eq!(frames[3].0.iface, None);
        assert!(frames[3].0.unsupported.as_deref().unwrap().contains("interface id 7"));
    }
}

#[test]
fn pcapng_sections_renumber_interfaces_and_spb_takes_the_previous_time() {
    let e = eth_v4();
    let mut bytes = pcapng(Endianness::Little, |w| {
        w.write_pcapng_block(idb(DataLink::ETHERNET, "a", Some(9), None)).unwrap();
        w.write_pcapng_block(epb(0, 7, &e)).unwrap();
    });
    // A second section, other byte order: its interface 0 is a new interface.
    bytes.extend(pcapng(Endianness::Big, |w| {
        w.write_pcapng_block(idb(DataLink::ETHERNET, "b", Some(9), None)).unwrap();
        w.write_pcapng_block(epb(0, 9, &e)).unwrap();
        w.write_block(&Block::SimplePacket(SimplePacketBlock { original_len: 17, data: Cow::Borrowed(&e[..17]) }))
            .unwrap();
    }));
    let (frames, _, ifaces) = read_all(&bytes).unwrap();
    assert_eq!(ifaces.len(), 2);
    assert_eq!(frames.iter().map(|f| f.0.iface).collect::<Vec<_>>(), [Some(0), Some(1), Some(1)]);
    assert_eq!(frames[1].0.ts, Nanos(9));
    assert_eq!(frames[2].0.ts, Nanos(9));
    assert_eq!(frames[2].1, &e[..17], "SPB padding trimmed");
}

#[test]
fn pcapng_truncated_last_block_is_a_warning() {
    let e = eth_v4();
    let bytes = pcapng(Endianness::Little, |w| {
        w.write_pcapng_block(idb(DataLink::ETHERNET, "a", Some(9), None)).unwrap();
        w.write_pcapng_block(epb(0, 7, &e)).unwrap();
        w.write_pcapng_block(epb(0, 8, &e)).unwrap();
    });
    let (frames, warn, _) = read_all(&bytes[..bytes.len() - 6]).unwrap();
    assert_eq!(frames.len(), 1);
    assert!(warn.unwrap().contains("1 complete frames"));
}

#[test]
fn tsresol_conversions() {
    let ci = |tsresol, tsoffset| CaptureInterface { name: None, linktype: 1, tsresol, tsoffset, snaplen: 0 };
    assert_eq!(ci(6, 0).to_nanos(5), Nanos(5_000));
    assert_eq!(ci(3, 0).to_nanos(5), Nanos(5_000_000));
    assert_eq!(ci(12, 0).to_nanos(5_000), Nanos(5));
    assert_eq!(ci(0x80 | 1, 0).to_nanos(3), Nanos(1_500_000_000));
    assert_eq!(ci(9, -10).to_nanos(5), Nanos(0), "before the epoch clamps");
    assert_eq!(ci(0x7F, 0).to_nanos(u64::MAX), Nanos(0));
    assert_eq!(ci(0, 0).to_nanos(u64::MAX), Nanos(u64::MAX), "saturates");
}

#[test]
fn writer_round_trip_with_pcap_file() {
    let e = eth_v4();
    let mut out = PcapNgOut::new(Vec::new(), &["veth-gw-in", "outside"]).unwrap();
    out.write(1, Nanos(1_700_000_000_123_456_789), &e).unwrap();
    out.write(0, Nanos(5), &e[..30]).unwrap();
    assert!(out.write(2, Nanos(5), &e).is_err());
    let bytes = out.finish().unwrap();

    let mut r = PcapNgReader::new(Cursor::new(&bytes)).unwrap();
    let mut packets = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::EnhancedPacket(p) = b.unwrap() {
            packets.push((p.interface_id, p.timestamp, p.data.into_owned()));
        }
    }
    let ifaces = r.interfaces();
    assert_eq!(ifaces.len(), 2);
    for (i, name) in ["veth-gw-in", "outside"].iter().enumerate() {
        assert_eq!(ifaces[i].linktype, DataLink::ETHERNET);
        assert!(ifaces[i].options.contains(&InterfaceDescriptionOption::IfName(Cow::Borrowed(name))));
        assert!(ifaces[i].options.contains(&InterfaceDescriptionOption::IfTsResol(9)));
    }
    assert_eq!(packets.len(), 2);
    assert_eq!(packets[0], (1, Duration::from_nanos(1_700_000_000_123_456_789), e.clone()));
    assert_eq!(packets[1], (0, Duration::from_nanos(5), e[..30].to_vec()));

    // And our own reader sees the same times and interface names.
    let (frames, _, ci) = read_all(&bytes).unwrap();
    assert_eq!(ci[0].name.as_deref(), Some("veth-gw-in"));
    assert_eq!(frames[0].0.ts, Nanos(1_700_000_000_123_456_789));
    assert_eq!(frames[0].0.iface, Some(1));
}
