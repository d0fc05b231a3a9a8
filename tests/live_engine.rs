//! The engine as `run` drives it (neighbour resolution on): the IPv6 path
//! found by the live lab test, where the answer to the gateway's neighbour
//! solicitation comes unicast.

mod common;

use common::*;
use ftpgate::engine::{Engine, Verdict};
use ftpgate::wire::build;

const SERVER6: &str = "2001:db8:2::20";

fn syn6() -> Vec<u8> {
    tcp(
        CLIENT_MAC,
        GW_IN_MAC,
        Tcp { src: ("2001:db8:1::10", 40000), dst: (SERVER6, 21), seq: 1, ack: 0, flags: "S", payload: b"" },
    )
}

#[test]
fn unicast_neighbor_advert_releases_held_frames() {
    let mut e = Engine::new(lab_config(true), 7);
    e.set_resolve_neighbors(true);
    let mut s = Collect::default();
    let (v, _) = feed(&mut e, &mut s, 1, INSIDE, syn6());
    assert_eq!(v, Verdict::Consumed, "held until the server's MAC is known");
    assert_eq!(s.frames.len(), 1, "one neighbour solicitation");
    assert_eq!(s.frames[0].0, OUTSIDE);
    let gw_out_mac = e.mac(OUTSIDE);
    // The kernel answers a solicitation unicast, to the soliciting address.
    let na = build::neighbor_advert(SERVER_MAC, SERVER6.parse().unwrap(), gw_out_mac, "2001:db8:2::1".parse().unwrap());
    let (v, _) = feed(&mut e, &mut s, 2, OUTSIDE, na);
    assert_eq!(v, Verdict::Consumed, "neighbour discovery is the gateway's own business");
    assert!(s.of_kind("drop").is_empty(), "{:?}", s.of_kind("drop"));
    assert_eq!(s.frames.len(), 2, "the held SYN was released");
    let (iface, frame) = &s.frames[1];
    assert_eq!(*iface, OUTSIDE);
    assert_eq!(&frame[0..6], &SERVER_MAC);
    let seen = decode_verified(frame);
    assert_eq!((seen.src, seen.dst, seen.dport), (ip("2001:db8:2::1"), ip(SERVER6), 21));
}

#[test]
fn later_frames_to_a_known_neighbor_go_straight_out() {
    let mut e = Engine::new(lab_config(true), 7);
    e.set_resolve_neighbors(true);
    let mut s = Collect::default();
    feed(&mut e, &mut s, 1, INSIDE, syn6());
    let na =
        build::neighbor_advert(SERVER_MAC, SERVER6.parse().unwrap(), e.mac(OUTSIDE), "2001:db8:2::1".parse().unwrap());
    feed(&mut e, &mut s, 2, OUTSIDE, na);
    let f = tcp(
        CLIENT_MAC,
        GW_IN_MAC,
        Tcp { src: ("2001:db8:1::10", 40001), dst: (SERVER6, 21), seq: 1, ack: 0, flags: "S", payload: b"" },
    );
    let (v, out) = feed(&mut e, &mut s, 3, INSIDE, f);
    assert_eq!(v, Verdict::Forward(OUTSIDE));
    assert_eq!(&out[0..6], &SERVER_MAC);
}
