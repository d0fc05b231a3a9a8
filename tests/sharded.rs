//! Several workers, each with its own table, fed by the dispatch rule the
//! kernel applies live: both directions of every connection, translated
//! with random ports, must land on the worker that holds it.

mod common;

use common::*;
use ftpgate::config::PortMode;
use ftpgate::dispatch::Dispatch;
use ftpgate::engine::{Engine, Verdict};
use ftpgate::replay::engines;
use ftpgate::time::Nanos;

struct Gw {
    engines: Vec<Engine>,
    dispatch: Dispatch,
    sink: Collect,
    t: u64,
}

impl Gw {
    fn new(workers: u16) -> Gw {
        let mut cfg = lab_config(true);
        cfg.nat.ports = PortMode::Random;
        let dispatch = Dispatch::new(&cfg, workers);
        Gw { engines: engines(cfg, 7, workers), dispatch, sink: Collect::default(), t: 0 }
    }

    /// (worker, verdict, frame as it leaves)
    fn pass(&mut self, ingress: usize, frame: Vec<u8>) -> (usize, Verdict, Vec<u8>) {
        self.t += 1;
        let w = self.dispatch.worker(ingress, &frame) as usize;
        // What the kernel's program decides is what the reference decides.
        assert_eq!(ftpgate::dispatch::run_program(&self.dispatch.program(ingress), &frame), w as u32);
        let mut f = frame;
        let v = self.engines[w].process(Nanos(self.t * 1_000_000), self.t, ingress, &mut f, &mut self.sink);
        (w, v, f)
    }
}

fn t<'a>(src: (&'a str, u16), dst: (&'a str, u16), seq: u32, ack: u32, flags: &'a str, payload: &'a [u8]) -> Tcp<'a> {
    Tcp { src, dst, seq, ack, flags, payload }
}

#[test]
fn masqueraded_flows_with_random_ports_come_back_to_their_worker() {
    let mut gw = Gw::new(3);
    let mut used = [0usize; 3];
    let mut moved = 0;
    for i in 0..300u16 {
        let cport = 20000 + i * 7;
        let syn = tcp(CLIENT_MAC, GW_IN_MAC, t(("192.0.2.10", cport), ("198.51.100.20", 80), 1000, 0, "S", b""));
        let (w, v, out) = gw.pass(INSIDE, syn);
        assert_eq!(v, Verdict::Forward(OUTSIDE), "flow {i}");
        let o = decode_verified(&out);
        assert_eq!(o.src, ip("198.51.100.1"));
        assert_eq!(o.sport % 3, cport % 3, "the mapping keeps the port's class");
        moved += usize::from(o.sport != cport);
        used[w] += 1;
        let synack =
            tcp(SERVER_MAC, GW_OUT_MAC, t(("198.51.100.20", 80), ("198.51.100.1", o.sport), 5000, 1001, "SA", b""));
        let (w2, v, back) = gw.pass(OUTSIDE, synack);
        assert_eq!((w2, v), (w, Verdict::Forward(INSIDE)), "flow {i}: the reply reaches the worker holding it");
        let b = decode_verified(&back);
        assert_eq!((b.dst, b.dport), (ip("192.0.2.10"), cport));
    }
    assert!(moved > 250, "random mode really translates ports ({moved} of 300)");
    assert!(used.iter().all(|&n| n > 60), "the flows spread over the workers: {used:?}");
}

#[test]
fn active_ftp_data_through_three_workers() {
    for round in 0..20u16 {
        let mut gw = Gw::new(3);
        let c = ("192.0.2.10", 40000 + round);
        let s = ("198.51.100.20", 21);
        let (_, v, out) = gw.pass(INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, t(c, s, 100, 0, "S", b"")));
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let pub_c = decode_verified(&out).sport;
        let (_, v, _) =
            gw.pass(OUTSIDE, tcp(SERVER_MAC, GW_OUT_MAC, t(s, ("198.51.100.1", pub_c), 900, 101, "SA", b"")));
        assert_eq!(v, Verdict::Forward(INSIDE));
        gw.pass(INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, t(c, s, 101, 901, "A", b"")));
        // The client announces a data port; the gateway maps it.
        let dport = 50000 + round * 13;
        let line = format!("PORT 192,0,2,10,{},{}\r\n", dport >> 8, dport & 0xff);
        let (_, v, out) = gw.pass(INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, t(c, s, 101, 901, "AP", line.as_bytes())));
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let sent = String::from_utf8(decode_verified(&out).payload).unwrap();
        let nums: Vec<u16> =
            sent.trim_end().trim_start_matches("PORT ").split(',').map(|n| n.parse().unwrap()).collect();
        assert_eq!(&nums[..4], &[198, 51, 100, 1], "{sent}");
        let mapped = nums[4] * 256 + nums[5];
        assert_eq!(mapped % 3, dport % 3, "{sent}");
        // The server connects back from port 20; it may land on another worker
        // than the control connection: the pinhole is shared.
        let (w, v, back) = gw.pass(
            OUTSIDE,
            tcp(SERVER_MAC, GW_OUT_MAC, t(("198.51.100.20", 20), ("198.51.100.1", mapped), 7000, 0, "S", b"")),
        );
        assert_eq!(v, Verdict::Forward(INSIDE), "round {round}: the data connection is admitted");
        let b = decode_verified(&back);
        assert_eq!((b.dst, b.dport), (ip("192.0.2.10"), dport));
        let (w2, v, _) =
            gw.pass(INSIDE, tcp(CLIENT_MAC, GW_IN_MAC, t(c_data(dport), ("198.51.100.20", 20), 3000, 7001, "SA", b"")));
        assert_eq!(
            (w2, v),
            (w, Verdict::Forward(OUTSIDE)),
            "round {round}: the client's answer reaches the same worker"
        );
        // A stranger trying the same port is not admitted (the pinhole was one-shot).
        let (_, v, _) = gw.pass(
            OUTSIDE,
            tcp(SERVER_MAC, GW_OUT_MAC, t(("203.0.113.66", 20), ("198.51.100.1", mapped), 1, 0, "S", b"")),
        );
        assert!(matches!(v, Verdict::Drop(_)), "round {round}: {v:?}");
    }
}

fn c_data(port: u16) -> (&'static str, u16) {
    ("192.0.2.10", port)
}

#[test]
fn echo_identifiers_keep_their_worker() {
    let mut gw = Gw::new(4);
    for id in [1u16, 2, 3, 4, 999, 40000, 65535] {
        let (w, v, out) = gw.pass(INSIDE, ping(CLIENT_MAC, GW_IN_MAC, "192.0.2.10", "198.51.100.20", id, 1, false));
        assert_eq!(v, Verdict::Forward(OUTSIDE));
        let mapped = u16::from_be_bytes([out[14 + 20 + 4], out[14 + 20 + 5]]);
        let (w2, v, back) =
            gw.pass(OUTSIDE, ping(SERVER_MAC, GW_OUT_MAC, "198.51.100.20", "198.51.100.1", mapped, 1, true));
        assert_eq!((w2, v), (w, Verdict::Forward(INSIDE)), "id {id} → {mapped}");
        assert_eq!(u16::from_be_bytes([back[14 + 20 + 4], back[14 + 20 + 5]]), id);
    }
}
