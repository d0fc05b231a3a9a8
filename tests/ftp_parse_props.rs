//! Property tests for the FTP line parsers and the control-stream reassembler.

use ftpgate::ftp::parse::{
    parse_227, parse_229, parse_command, parse_reply_line, write_eprt_args, write_port_args, Command,
};
use ftpgate::ftp::stream::{Line, LineStream, StreamEvent};
use proptest::prelude::*;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Lines (content, terminator length) laid end to end.
fn lines_strategy() -> impl Strategy<Value = Vec<(Vec<u8>, u8)>> {
    let content = prop::collection::vec(
        prop_oneof![4 => b'a'..=b'z', 1 => Just(b'\r'), 1 => Just(b' '), 1 => any::<u8>()],
        0..40,
    )
    .prop_map(|v| v.into_iter().filter(|&b| b != b'\n').collect::<Vec<u8>>());
    prop::collection::vec((content, 1u8..=2), 1..30).prop_map(|lines| {
        lines
            .into_iter()
            // Content ending in CR before a bare LF reads as CRLF.
            .map(|(c, t)| if c.last() == Some(&b'\r') { (c, 2) } else { (c, t) })
            .collect()
    })
}

fn concat(lines: &[(Vec<u8>, u8)]) -> (Vec<u8>, Vec<Line>) {
    let mut bytes = Vec::new();
    let mut want = Vec::new();
    for (c, t) in lines {
        want.push(Line { start: bytes.len() as u64, text: c.clone(), term: *t });
        bytes.extend_from_slice(c);
        if *t == 2 {
            bytes.push(b'\r');
        }
        bytes.push(b'\n');
    }
    (bytes, want)
}

/// Cut `len` bytes at the given fractions into segments [a, b).
fn cut(len: usize, cuts: &[f64]) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = cuts.iter().map(|f| (f * len as f64) as usize).collect();
    points.push(0);
    points.push(len);
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Reorder so that no segment moves more than `window` places: sort by
/// index plus a random jitter.
fn jitter<T>(items: Vec<T>, jit: &[usize]) -> Vec<T> {
    let mut keyed: Vec<(usize, usize, T)> =
        items.into_iter().enumerate().map(|(i, t)| (i + jit.get(i).copied().unwrap_or(0), i, t)).collect();
    keyed.sort_by_key(|&(k, i, _)| (k, i));
    keyed.into_iter().map(|(_, _, t)| t).collect()
}

fn lines_of(events: &[StreamEvent]) -> Vec<Line> {
    events
        .iter()
        .map(|e| match e {
            StreamEvent::Line(l) => l.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any segmentation, identical retransmissions (re-segmented too) and
    /// reordering within a window give back exactly the original lines.
    #[test]
    fn stream_reassembles_lines(
        lines in lines_strategy(),
        isn in any::<u32>(),
        cuts in prop::collection::vec(0.0f64..1.0, 0..40),
        retx in prop::collection::vec((0.0f64..1.0, 0.0f64..1.0), 0..10),
        jit in prop::collection::vec(0usize..6, 0..60),
    ) {
        let (bytes, want) = concat(&lines);
        let mut segs = cut(bytes.len(), &cuts);
        for &(a, b) in &retx {
            let (a, b) = ((a * bytes.len() as f64) as usize, (b * bytes.len() as f64) as usize);
            let (a, b) = (a.min(b), a.max(b));
            if a < b {
                // Insert the copy next to some original so it lands within
                // the reorder window.
                let at = (a * segs.len()) / bytes.len().max(1);
                segs.insert(at.min(segs.len()), (a, b));
            }
        }
        let segs = jitter(segs, &jit);
        let mut s = LineStream::new(isn, 512, bytes.len());
        let mut out = Vec::new();
        for &(a, b) in &segs {
            s.push(isn.wrapping_add(a as u32), &bytes[a..b], &mut out);
        }
        prop_assert_eq!(lines_of(&out), want);
        prop_assert_eq!(s.next_offset(), bytes.len() as u64);
        prop_assert_eq!(s.held_bytes(), 0);
        prop_assert!(s.at_line_start());
    }

    /// With conflicting copies, the result is the first-seen byte at every
    /// offset, cut into lines.
    #[test]
    fn stream_first_seen_wins(
        data in prop::collection::vec(prop_oneof![Just(b'a'), Just(b'\r'), Just(b'\n'), Just(b'P')], 1..200),
        isn in any::<u32>(),
        cuts in prop::collection::vec(0.0f64..1.0, 0..30),
        copies in prop::collection::vec(
            (0.0f64..1.0, 0.0f64..1.0, prop::collection::vec(prop_oneof![Just(b'b'), Just(b'\r'), Just(b'\n')], 200)),
            0..8),
        jit in prop::collection::vec(0usize..6, 0..60),
    ) {
        let mut segs: Vec<(usize, Vec<u8>)> =
            cut(data.len(), &cuts).into_iter().map(|(a, b)| (a, data[a..b].to_vec())).collect();
        for (a, b, other) in copies {
            let (a, b) = ((a * data.len() as f64) as usize, (b * data.len() as f64) as usize);
            let (a, b) = (a.min(b), a.max(b));
            if a < b {
                let at = (a * segs.len()) / data.len();
                segs.insert(at.min(segs.len()), (a, other[..b - a].to_vec()));
            }
        }
        let segs = jitter(segs, &jit);
        // The model: first copy of each offset.
        let mut model: Vec<Option<u8>> = vec![None; data.len()];
        for (a, seg) in &segs {
            for (i, &b) in seg.iter().enumerate() {
                model[a + i].get_or_insert(b);
            }
        }
        let model: Vec<u8> = model.into_iter().map(|b| b.expect("covered")).collect();
        let mut want = Vec::new();
        let mut start = 0;
        for (i, &b) in model.iter().enumerate() {
            if b == b'\n' {
                let mut text = model[start..i].to_vec();
                let term = if text.last() == Some(&b'\r') { text.pop(); 2 } else { 1 };
                want.push(Line { start: start as u64, text, term });
                start = i + 1;
            }
        }
        let mut s = LineStream::new(isn, 1024, 1024);
        let mut out = Vec::new();
        for (a, seg) in &segs {
            s.push(isn.wrapping_add(*a as u32), seg, &mut out);
        }
        prop_assert_eq!(lines_of(&out), want);
        prop_assert_eq!(s.partial_len(), model.len() - start);
    }

    /// With lost segments, tight limits, overflows and declared gaps, every
    /// line that comes out is a true line of the stream: never a tail.
    #[test]
    fn stream_never_emits_a_partial_line(
        lines in lines_strategy(),
        isn in any::<u32>(),
        cuts in prop::collection::vec(0.0f64..1.0, 0..40),
        drops in prop::collection::vec(any::<bool>(), 0..40),
        skips in prop::collection::vec((0usize..60, 0.0f64..1.0), 0..4),
        jit in prop::collection::vec(0usize..8, 0..60),
        max_pending in 0usize..64,
        max_line in 0usize..48,
    ) {
        let (bytes, want) = concat(&lines);
        let truth: HashMap<u64, &Line> = want.iter().map(|l| (l.start, l)).collect();
        let segs: Vec<(usize, usize)> = cut(bytes.len(), &cuts)
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !drops.get(*i).copied().unwrap_or(false))
            .map(|(_, s)| s)
            .collect();
        let segs = jitter(segs, &jit);
        let mut s = LineStream::new(isn, max_line, max_pending);
        let mut out = Vec::new();
        let mut last_next = 0;
        for (i, &(a, b)) in segs.iter().enumerate() {
            for &(when, f) in &skips {
                if when == i {
                    s.skip_to(isn.wrapping_add((f * bytes.len() as f64) as u32), &mut out);
                }
            }
            s.push(isn.wrapping_add(a as u32), &bytes[a..b], &mut out);
            prop_assert!(s.held_bytes() <= max_pending);
            prop_assert!(s.partial_len() <= max_line + 1);
            prop_assert!(s.next_offset() >= last_next);
            last_next = s.next_offset();
        }
        s.skip_to(isn.wrapping_add(bytes.len() as u32), &mut out);
        prop_assert_eq!(s.next_offset(), bytes.len() as u64);
        let mut prev = None;
        for e in &out {
            match e {
                StreamEvent::Line(l) => {
                    let t = truth.get(&l.start);
                    prop_assert!(t.is_some(), "line at {} is not a line start", l.start);
                    prop_assert_eq!(*t.unwrap(), l);
                    prop_assert!(l.text.len() <= max_line);
                    prop_assert!(prev.is_none_or(|p| p < l.start));
                    prev = Some(l.start);
                }
                StreamEvent::Overlong { start } => {
                    let t = truth.get(start);
                    prop_assert!(t.is_some_and(|t| t.text.len() > max_line));
                }
                StreamEvent::Gap { .. } => {}
            }
        }
    }

    /// Arbitrary segments anywhere in sequence space: no panic, bounds hold.
    #[test]
    fn stream_survives_garbage(
        isn in any::<u32>(),
        segs in prop::collection::vec((any::<u32>(), prop::collection::vec(any::<u8>(), 0..64), any::<bool>()), 0..60),
        near in any::<bool>(),
    ) {
        let mut s = LineStream::new(isn, 32, 128);
        let mut out = Vec::new();
        for (seq, data, skip) in segs {
            let seq = if near { isn.wrapping_add(seq % 512) } else { seq };
            if skip {
                s.skip_to(seq, &mut out);
            } else {
                s.push(seq, &data, &mut out);
            }
            prop_assert!(s.held_bytes() <= 128);
            prop_assert!(s.partial_len() <= 33);
        }
    }

    /// Parsers never panic on arbitrary bytes; what 227/229 return is
    /// consistent with the text.
    #[test]
    fn parsers_total(line in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_command(&line);
        let _ = parse_reply_line(&line);
        if let Ok((addr, r)) = parse_227(&line) {
            let cmd = [b"PORT ".as_slice(), &line[r]].concat();
            prop_assert_eq!(parse_command(&cmd), Ok(Command::Port(addr)));
        }
        if let Ok((port, r)) = parse_229(&line) {
            prop_assert_eq!(std::str::from_utf8(&line[r]).unwrap().parse::<u16>().unwrap(), port);
        }
    }

    /// Inputs shaped like the real thing reach the deep branches.
    #[test]
    fn parsers_total_structured(
        verb in prop_oneof![Just("PORT "), Just("EPRT "), Just("EPSV "), Just("port  "), Just("227 "), Just("229 ")],
        body in "[0-9,|().:a-fA-F! -]{0,60}",
    ) {
        let line = format!("{verb}{body}");
        let _ = parse_command(line.as_bytes());
        let _ = parse_227(body.as_bytes());
        let _ = parse_229(body.as_bytes());
        if let Some(r) = parse_reply_line(line.as_bytes()) {
            prop_assert!(r.last);
        }
    }

    #[test]
    fn port_round_trip(ip in any::<[u8; 4]>(), port in 1u16..) {
        let addr = SocketAddrV4::new(Ipv4Addr::from(ip), port);
        let mut line = b"PORT ".to_vec();
        write_port_args(&mut line, addr);
        prop_assert_eq!(parse_command(&line), Ok(Command::Port(addr)));
        // The same numbers in a 227 text.
        let text = [b"Entering Passive Mode (".as_slice(), &line[5..], b")."].concat();
        prop_assert_eq!(parse_227(&text), Ok((addr, 23..line.len() - 5 + 23)));
    }

    #[test]
    fn eprt_round_trip(v4 in any::<[u8; 4]>(), v6 in any::<[u16; 8]>(), six in any::<bool>(), port in 1u16.., delim in 33u8..=126) {
        let addr = if six {
            SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::from(v6), port, 0, 0))
        } else {
            SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(v4), port))
        };
        let mut line = b"EPRT ".to_vec();
        write_eprt_args(&mut line, delim, addr);
        let fields_hold_delim = line[6..line.len() - 1].iter().filter(|&&b| b == delim).count() != 2;
        let parsed = parse_command(&line);
        if fields_hold_delim {
            prop_assert!(parsed.is_err());
        } else {
            prop_assert_eq!(parsed, Ok(Command::Eprt(addr)));
        }
    }
}
