//! `parse_frame` on arbitrary bytes, then a program of setters on the
//! result. Besides not panicking: after every setter the `Meta` the setters
//! maintain equals what `parse_frame` reads from the edited frame (the
//! in-place view never drifts from the bytes), and if etherparse verified
//! every checksum of the input it still does after each edit (RFC 1624
//! incremental updates against a full recomputation).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ftpgate::wire::{parse_frame, setters, FrameKind};

use crate::check::{check, Checked};
use crate::Input;

fn addr(inp: &mut Input<'_>, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o[..2].copy_from_slice(&[0x20, 0x01]);
        for b in o[2..].iter_mut() {
            *b = inp.u8();
        }
        IpAddr::V6(Ipv6Addr::from(o))
    } else {
        IpAddr::V4(Ipv4Addr::from(inp.u32()))
    }
}

pub fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let n = usize::from(inp.u16() % 2048);
    let mut frame = inp.bytes(n).to_vec();
    let FrameKind::Ip(mut meta) = parse_frame(&frame) else { return };
    let valid = check(&frame) == Checked::Valid;
    let mut steps = 0;
    while !inp.is_empty() && steps < 64 {
        steps += 1;
        let op = inp.u8();
        let what = match op % 14 {
            0 => {
                let (s, d) = ([inp.u8(); 6], [inp.u8(); 6]);
                setters::set_macs(&mut frame, &mut meta, s, d);
                "set_macs"
            }
            1 => {
                setters::dec_ttl(&mut frame, &mut meta);
                "dec_ttl"
            }
            2 => {
                let a = addr(&mut inp, meta.v6);
                setters::set_src_ip(&mut frame, &mut meta, a);
                "set_src_ip"
            }
            3 => {
                let a = addr(&mut inp, meta.v6);
                setters::set_dst_ip(&mut frame, &mut meta, a);
                "set_dst_ip"
            }
            4 => {
                setters::set_src_port(&mut frame, &mut meta, inp.u16());
                "set_src_port"
            }
            5 => {
                setters::set_dst_port(&mut frame, &mut meta, inp.u16());
                "set_dst_port"
            }
            6 => {
                setters::set_tcp_seq(&mut frame, &mut meta, inp.u32());
                "set_tcp_seq"
            }
            7 => {
                setters::set_tcp_ack(&mut frame, &mut meta, inp.u32());
                "set_tcp_ack"
            }
            8 => {
                let k = inp.u32();
                setters::map_sack(&mut frame, &meta, |x| x.wrapping_add(k));
                "map_sack"
            }
            9 => {
                let a = addr(&mut inp, meta.v6);
                setters::set_inner_src_ip(&mut frame, &mut meta, a);
                "set_inner_src_ip"
            }
            10 => {
                let a = addr(&mut inp, meta.v6);
                setters::set_inner_dst_ip(&mut frame, &mut meta, a);
                "set_inner_dst_ip"
            }
            11 => {
                setters::set_inner_sport(&mut frame, &mut meta, inp.u16());
                "set_inner_sport"
            }
            12 => {
                setters::set_inner_dport(&mut frame, &mut meta, inp.u16());
                "set_inner_dport"
            }
            _ => {
                let len = meta.tcp.map_or(0, |t| t.payload_len);
                let start = usize::from(inp.u16()) % (len + 2);
                let end = start + usize::from(inp.u16()) % (len + 2);
                let k = usize::from(inp.u8());
                let new = inp.bytes(k).to_vec();
                setters::replace_tcp_payload(&mut frame, &mut meta, start, end, &new);
                "replace_tcp_payload"
            }
        };
        match parse_frame(&frame) {
            FrameKind::Ip(again) => assert_eq!(again, meta, "meta after {what} differs from a fresh parse"),
            other => panic!("after {what} the frame no longer parses as IP: {other:?}"),
        }
        if valid {
            match check(&frame) {
                Checked::Valid | Checked::NotChecked => {}
                other => panic!("after {what}: {other:?}"),
            }
        }
    }
}
