//! Found by the lab's soak (tests/lab/soak.sh): an FTP server that connects
//! from port 20 (vsftpd, pure-ftpd) to a client port it used a moment ago.
//! The earlier data connection is closed but still held (TIME_WAIT); its
//! outside port is therefore taken and the new PORT gets another one, but the
//! new connection's reply tuple (client port ↔ server port 20) is the old
//! one's. Linux conntrack lets a fresh SYN replace a closed entry; ftpgate
//! used to drop it as `invalid` ("its reply tuple belongs to another
//! connection"), and the session hung.

mod common;
use common::*;
use ftpgate::config::PortMode;
use ftpgate::engine::Verdict;

fn port_of(line: &[u8]) -> u16 {
    let s = std::str::from_utf8(line).unwrap().trim_end();
    let n: Vec<u16> = s.split_once(' ').unwrap().1.split(',').map(|x| x.parse().unwrap()).collect();
    n[4] * 256 + n[5]
}

/// The server's SYN from port 20 to the announced outside port; the frame
/// the client receives, if any.
fn server_syn(sim: &mut FtpSim, port: u16, isn: u32) -> (Verdict, Vec<u8>) {
    sim.t += 1;
    let f = tcp(
        SERVER_MAC,
        GW_OUT_MAC,
        Tcp { src: ("198.51.100.20", 20), dst: ("198.51.100.1", port), seq: isn, ack: 0, flags: "S", payload: b"" },
    );
    feed(&mut sim.e, &mut sim.s, sim.t, OUTSIDE, f)
}

fn data_seg(sim: &mut FtpSim, from_server: bool, port: u16, seq: u32, ack: u32, flags: &str) -> Verdict {
    sim.t += 1;
    let f = if from_server {
        tcp(
            SERVER_MAC,
            GW_OUT_MAC,
            Tcp { src: ("198.51.100.20", 20), dst: ("198.51.100.1", port), seq, ack, flags, payload: b"" },
        )
    } else {
        tcp(
            CLIENT_MAC,
            GW_IN_MAC,
            Tcp { src: ("192.0.2.10", 36877), dst: ("198.51.100.20", 20), seq, ack, flags, payload: b"" },
        )
    };
    feed(&mut sim.e, &mut sim.s, sim.t, if from_server { OUTSIDE } else { INSIDE }, f).0
}

#[test]
fn a_new_data_connection_replaces_a_closed_one_with_the_same_reply_tuple() {
    let mut cfg = lab_config(true);
    cfg.nat.ports = PortMode::Preserve;
    let mut sim = FtpSim::masq(cfg);
    sim.greet();

    // First transfer: PORT 36877, preserved; the server connects from 20,
    // sends nothing, and both sides close.
    let (_, seen) = sim.client(b"PORT 192,0,2,10,144,13\r\n");
    let p1 = port_of(&seen.unwrap().payload);
    assert_eq!(p1, 36877);
    sim.server(b"200 PORT command successful\r\n");
    let (v, out) = server_syn(&mut sim, p1, 5000);
    assert_eq!(v, Verdict::Forward(INSIDE));
    assert_eq!(decode_verified(&out).dport, 36877);
    assert_eq!(data_seg(&mut sim, false, p1, 7000, 5001, "SA"), Verdict::Forward(OUTSIDE));
    assert_eq!(data_seg(&mut sim, true, p1, 5001, 7001, "A"), Verdict::Forward(INSIDE));
    assert_eq!(data_seg(&mut sim, true, p1, 5001, 7001, "FA"), Verdict::Forward(INSIDE));
    assert_eq!(data_seg(&mut sim, false, p1, 7001, 5002, "FA"), Verdict::Forward(OUTSIDE));
    assert_eq!(data_seg(&mut sim, true, p1, 5002, 7002, "A"), Verdict::Forward(INSIDE));
    let ends = sim.s.of_kind("connection_end");
    assert!(
        ends.iter().any(|e| e["src"] == "198.51.100.20:20" && e["reason"] == "fin"),
        "the first data connection ended: {ends:?}"
    );

    // Second transfer, a moment later: the client listens on the same port.
    let (_, seen) = sim.client(b"PORT 192,0,2,10,144,13\r\n");
    let p2 = port_of(&seen.unwrap().payload);
    sim.server(b"200 PORT command successful\r\n");
    let (v, out) = server_syn(&mut sim, p2, 900_000);
    assert_eq!(v, Verdict::Forward(INSIDE), "the server's new SYN reaches the client (outside port {p2})");
    let d = decode_verified(&out);
    assert_eq!((d.dst, d.dport, d.sport), (ip("192.0.2.10"), 36877, 20));
    assert!(sim.s.of_kind("drop").is_empty(), "no drop: {:?}", sim.s.of_kind("drop"));
    // And the rest of the handshake passes.
    assert_eq!(data_seg(&mut sim, false, p2, 123_000, 900_001, "SA"), Verdict::Forward(OUTSIDE));
}
