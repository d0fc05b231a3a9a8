//! Properties of the FTP ALG's stream handling, driven through the engine
//! with both ends keeping their own sequence numbers (`FtpSim`).
//!
//! (a) However a session's bytes are cut into segments, and whatever old
//!     segments are sent again, each end assembles exactly the byte stream it
//!     gets when every line travels in its own segment.
//! (b) Every forwarded segment is consistent in its receiver's sequence
//!     space: it continues (or exactly repeats) what the receiver has
//!     (`FtpSim::took` asserts this), and every acknowledgement an end
//!     receives, mapped into its own numbers, never covers more than it sent
//!     and never moves backwards. When an end has nothing held back, the
//!     other's full acknowledgement maps to exactly everything it sent.

mod common;
use common::*;

use ftpgate::config::{Config, PortMode};
use ftpgate::engine::Verdict;
use proptest::prelude::*;

/// One command and the server's reply to it.
#[derive(Clone, Debug)]
enum Ex {
    User,
    Noop,
    Retr,
    Port {
        p: u16,
        lower: bool,
    },
    /// A privileged port: refused by the gateway (the server sees NOOP).
    PortPrivileged,
    Eprt {
        p: u16,
    },
    Pasv {
        other_host: bool,
        p: u16,
    },
    Epsv {
        p: u16,
    },
}

fn ex() -> impl Strategy<Value = Ex> {
    let port = 1024u16..=65535;
    prop_oneof![
        Just(Ex::User),
        Just(Ex::Noop),
        Just(Ex::Retr),
        (port.clone(), any::<bool>()).prop_map(|(p, lower)| Ex::Port { p, lower }),
        Just(Ex::PortPrivileged),
        port.clone().prop_map(|p| Ex::Eprt { p }),
        (any::<bool>(), port.clone()).prop_map(|(other_host, p)| Ex::Pasv { other_host, p }),
        port.prop_map(|p| Ex::Epsv { p }),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Layout {
    /// Masqueraded client 192.0.2.10 → server 198.51.100.20.
    Masquerade,
    /// Outside client 203.0.113.5 → published 198.51.100.1 → server 192.0.2.20.
    Published,
}

impl Layout {
    fn client(self) -> [u8; 4] {
        match self {
            Layout::Masquerade => [192, 0, 2, 10],
            Layout::Published => [203, 0, 113, 5],
        }
    }
    fn server(self) -> [u8; 4] {
        match self {
            Layout::Masquerade => [198, 51, 100, 20],
            Layout::Published => [192, 0, 2, 20],
        }
    }
    fn sim(self, ports: PortMode) -> FtpSim {
        let mut cfg: Config = match self {
            Layout::Masquerade => lab_config(true),
            Layout::Published => published_config(),
        };
        cfg.nat.ports = ports;
        match self {
            Layout::Masquerade => FtpSim::masq(cfg),
            Layout::Published => FtpSim::published(cfg),
        }
    }
}

fn commas(a: [u8; 4], p: u16) -> String {
    format!("{},{},{},{},{},{}", a[0], a[1], a[2], a[3], p >> 8, p & 0xff)
}

fn dotted(a: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
}

/// The command line and the reply lines for one exchange.
fn lines(e: &Ex, l: Layout) -> (String, String) {
    match e {
        Ex::User => ("USER anonymous\r\n".into(), "230-Welcome\r\n230-  to the test\r\n230 Login ok\r\n".into()),
        Ex::Noop => ("NOOP\r\n".into(), "200 NOOP ok\r\n".into()),
        Ex::Retr => ("RETR some/file name.txt\r\n".into(), "150 Opening\r\n226 Done\r\n".into()),
        Ex::Port { p, lower } => {
            let verb = if *lower { "port" } else { "PORT" };
            (format!("{verb} {}\r\n", commas(l.client(), *p)), "200 PORT command successful\r\n".into())
        }
        // The server only ever sees NOOP for it.
        Ex::PortPrivileged => (format!("PORT {}\r\n", commas(l.client(), 21)), "200 NOOP ok\r\n".into()),
        Ex::Eprt { p } => (format!("EPRT |1|{}|{p}|\r\n", dotted(l.client())), "200 EPRT ok\r\n".into()),
        Ex::Pasv { other_host, p } => {
            let named = if *other_host { [10, 9, 9, 9] } else { l.server() };
            ("PASV\r\n".into(), format!("227 Entering Passive Mode ({}).\r\n", commas(named, *p)))
        }
        Ex::Epsv { p } => ("EPSV\r\n".into(), format!("229 Entering Extended Passive Mode (|||{p}|)\r\n")),
    }
}

/// How one segment is cut and what happens around it.
#[derive(Clone, Debug)]
struct Cut {
    size: usize,
    /// Send an earlier segment of the same end again: 0 the latest, 1 the one before, ... (modulo).
    retransmit: Option<u8>,
    /// The receiver then sends a pure ACK for this fraction (of 255) of what it has
    /// received since its last acknowledgement.
    partial_ack: Option<u8>,
    /// Repacketize: the new segment starts this many bytes early, repeating
    /// bytes already sent (as a stack does when it coalesces on retransmit).
    overlap: Option<u8>,
}

fn cut() -> impl Strategy<Value = Cut> {
    (
        1usize..=14,
        prop::option::weighted(0.3, any::<u8>()),
        prop::option::weighted(0.3, any::<u8>()),
        prop::option::weighted(0.2, 1u8..=40),
    )
        .prop_map(|(size, retransmit, partial_ack, overlap)| Cut { size, retransmit, partial_ack, overlap })
}

fn seq_le(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// Acknowledgements seen by each end, checked as they arrive.
#[derive(Default)]
struct Acks {
    /// Last ACK the client received, and the server.
    to_client: Option<u32>,
    to_server: Option<u32>,
}

impl Acks {
    /// `seen` arrived at the client (`at_client`) or the server; `sent` is its receiver's next sequence number.
    fn check(&mut self, at_client: bool, seen: &Seen, sent: u32) {
        let last = if at_client { &mut self.to_client } else { &mut self.to_server };
        let who = if at_client { "client" } else { "server" };
        assert!(seq_le(seen.ack, sent), "the {who} is acknowledged {} but sent only up to {sent}", seen.ack);
        if let Some(prev) = *last {
            assert!(seq_le(prev, seen.ack), "the {who}'s acknowledgement went back from {prev} to {}", seen.ack);
        }
        *last = Some(seen.ack);
    }
}

struct Run<'a> {
    sim: FtpSim,
    acks: Acks,
    cuts: &'a [Cut],
    next_cut: usize,
    /// Segments each end has sent: (seq, bytes).
    sent_c: Vec<(u32, Vec<u8>)>,
    sent_s: Vec<(u32, Vec<u8>)>,
    /// Every byte each end has sent since its handshake, in order.
    hist_c: Vec<u8>,
    hist_s: Vec<u8>,
    /// The last ACK each end sent (its own view).
    acked_by_server: u32,
    acked_by_client: u32,
}

impl Run<'_> {
    fn take_cut(&mut self) -> Cut {
        let c = self.cuts[self.next_cut % self.cuts.len()].clone();
        self.next_cut += 1;
        c
    }

    fn expect_passed(v: Verdict, what: &str) {
        assert!(matches!(v, Verdict::Forward(_) | Verdict::Consumed), "{what}: {v:?}");
    }

    /// One end's turn: its bytes cut up, with retransmissions and the other's partial ACKs in between.
    fn send(&mut self, from_client: bool, stream: &[u8], whole_turn_released: bool) {
        let mut at = 0;
        let mut first = true;
        while at < stream.len() {
            let c = self.take_cut();
            let end = (at + c.size).min(stream.len());
            let fresh = &stream[at..end];
            at = end;
            let hist = if from_client { &mut self.hist_c } else { &mut self.hist_s };
            let back = c.overlap.map_or(0, |o| (o as usize).min(hist.len()));
            let mut piece = hist[hist.len() - back..].to_vec();
            piece.extend_from_slice(fresh);
            hist.extend_from_slice(fresh);
            let (v, seen) = if from_client {
                let seq = self.sim.c_seq.wrapping_sub(back as u32);
                self.sim.c_seq = self.sim.c_seq.wrapping_add(fresh.len() as u32);
                self.sent_c.push((seq, piece.clone()));
                self.sim.client_at(seq, &piece)
            } else {
                let seq = self.sim.s_seq.wrapping_sub(back as u32);
                self.sim.s_seq = self.sim.s_seq.wrapping_add(fresh.len() as u32);
                self.sent_s.push((seq, piece.clone()));
                self.sim.server_at(seq, &piece)
            };
            Self::expect_passed(v, "a new segment");
            if let Some(s) = &seen {
                // Arrives at the other end: its ACK is in that end's numbers.
                let other_sent = if from_client { self.sim.s_seq } else { self.sim.c_seq };
                self.acks.check(!from_client, s, other_sent);
                if first && whole_turn_released {
                    // The other end's previous turn ended with a complete line and
                    // was acknowledged in full: the mapping lands exactly on its end.
                    assert_eq!(s.ack, other_sent, "a full acknowledgement maps to everything sent");
                }
            }
            if seen.is_some() {
                first = false;
            }
            if let Some(k) = c.retransmit {
                let list = if from_client { &self.sent_c } else { &self.sent_s };
                let (seq, bytes) = list[list.len() - 1 - k as usize % list.len()].clone();
                let (v, seen) =
                    if from_client { self.sim.client_at(seq, &bytes) } else { self.sim.server_at(seq, &bytes) };
                Self::expect_passed(v, "a retransmission");
                if let Some(s) = &seen {
                    let other_sent = if from_client { self.sim.s_seq } else { self.sim.c_seq };
                    self.acks.check(!from_client, s, other_sent);
                }
            }
            if let Some(frac) = c.partial_ack {
                // The receiver of this segment acknowledges part of it.
                self.partial_ack(from_client, frac);
            }
        }
    }

    /// The receiving end acknowledges part of what it has received, in its own numbers.
    fn partial_ack(&mut self, by_server: bool, frac: u8) {
        let (last, rcv) = if by_server {
            (self.acked_by_server, self.sim.server_rcv)
        } else {
            (self.acked_by_client, self.sim.client_rcv)
        };
        let span = rcv.wrapping_sub(last) as u64;
        let ack = last.wrapping_add((span * frac as u64 / 255) as u32);
        let (v, out) = if by_server {
            self.acked_by_server = ack;
            self.sim.raw_server("A", self.sim.s_seq, ack, b"")
        } else {
            self.acked_by_client = ack;
            self.sim.raw_client("A", self.sim.c_seq, ack, b"")
        };
        assert!(matches!(v, Verdict::Forward(_)), "a pure ACK passes: {v:?}");
        let s = decode_verified(&out);
        assert!(s.payload.is_empty());
        // It arrives at the other end, acknowledging that end's bytes.
        let acked_end_sent = if by_server { self.sim.c_seq } else { self.sim.s_seq };
        self.acks.check(by_server, &s, acked_end_sent);
    }
}

/// What each end assembled, and the pinholes opened (address, port, peer).
type Outcome = (Vec<u8>, Vec<u8>, Vec<(String, u64, String)>);

fn outcome(sim: &FtpSim) -> Outcome {
    let pins = sim
        .s
        .of_kind("pinhole_open")
        .iter()
        .map(|p| {
            (
                p["address"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap(),
                p["peer"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (sim.server_got.clone(), sim.client_got.clone(), pins)
}

/// Every line in its own segment, no retransmissions.
fn reference(turns: &[Vec<Ex>], layout: Layout, ports: PortMode) -> Outcome {
    let mut sim = layout.sim(ports);
    sim.greet();
    for turn in turns {
        let ls: Vec<(String, String)> = turn.iter().map(|e| lines(e, layout)).collect();
        for (cmd, _) in &ls {
            let (v, _) = sim.client(cmd.as_bytes());
            assert!(matches!(v, Verdict::Forward(_)), "reference: {cmd:?} {v:?}");
        }
        for (_, reply) in &ls {
            for line in reply.split_inclusive('\n') {
                let (v, _) = sim.server(line.as_bytes());
                assert!(matches!(v, Verdict::Forward(_)), "reference: {line:?} {v:?}");
            }
        }
    }
    outcome(&sim)
}

fn segmented(turns: &[Vec<Ex>], layout: Layout, ports: PortMode, cuts: &[Cut]) -> Outcome {
    let mut sim = layout.sim(ports);
    sim.greet();
    let (acked_by_server, acked_by_client) = (sim.server_rcv, sim.client_rcv);
    let mut run = Run {
        sim,
        acks: Acks::default(),
        cuts,
        next_cut: 0,
        sent_c: vec![],
        sent_s: vec![],
        hist_c: vec![],
        hist_s: b"220 ready\r\n".to_vec(),
        acked_by_server,
        acked_by_client,
    };
    for turn in turns {
        let ls: Vec<(String, String)> = turn.iter().map(|e| lines(e, layout)).collect();
        let cmds: String = ls.iter().map(|(c, _)| c.as_str()).collect();
        let replies: String = ls.iter().map(|(_, r)| r.as_str()).collect();
        run.send(true, cmds.as_bytes(), true);
        run.acked_by_client = run.sim.client_rcv;
        run.send(false, replies.as_bytes(), true);
        run.acked_by_server = run.sim.server_rcv;
    }
    // The server's last word acknowledges everything; the client must see its own total.
    let (v, out) = run.sim.raw_server("A", run.sim.s_seq, run.sim.server_rcv, b"");
    assert!(matches!(v, Verdict::Forward(_)));
    assert_eq!(decode_verified(&out).ack, run.sim.c_seq);
    outcome(&run.sim)
}

fn layout() -> impl Strategy<Value = Layout> {
    prop_oneof![Just(Layout::Masquerade), Just(Layout::Published)]
}

fn ports() -> impl Strategy<Value = PortMode> {
    prop_oneof![Just(PortMode::Random), Just(PortMode::Preserve)]
}

proptest! {
    // PROPTEST_CASES raises the count for a longer hunt.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(96),
        ..ProptestConfig::default()
    })]

    /// (a) and (b): random cuts (inside PORT, 227 and 229 lines too),
    /// duplicate retransmissions and partial ACKs change nothing either end
    /// assembles, and every acknowledgement stays consistent.
    #[test]
    fn segmentation_and_retransmission_do_not_change_the_streams(
        turns in prop::collection::vec(prop::collection::vec(ex(), 1..=3), 1..=6),
        cuts in prop::collection::vec(cut(), 1..=24),
        layout in layout(),
        ports in ports(),
    ) {
        let want = reference(&turns, layout, ports);
        let got = segmented(&turns, layout, ports, &cuts);
        prop_assert_eq!(String::from_utf8_lossy(&got.0), String::from_utf8_lossy(&want.0), "the server's stream");
        prop_assert_eq!(String::from_utf8_lossy(&got.1), String::from_utf8_lossy(&want.1), "the client's stream");
        prop_assert_eq!(got.2, want.2, "the same pinholes");
    }
}

/// The property's reference must itself show the ALG at work, or (a) would
/// hold trivially.
#[test]
fn the_reference_session_is_rewritten() {
    let turns = vec![
        vec![Ex::Port { p: 5000, lower: false }, Ex::PortPrivileged],
        vec![Ex::Pasv { other_host: true, p: 6000 }],
    ];
    let (srv, cli, pins) = reference(&turns, Layout::Masquerade, PortMode::Preserve);
    assert_eq!(String::from_utf8(srv).unwrap(), "PORT 198,51,100,1,19,136\r\nNOOP\r\nPASV\r\n");
    let cli = String::from_utf8(cli).unwrap();
    assert!(
        cli.contains("\r\n501 ") && cli.ends_with("227 Entering Passive Mode (198,51,100,20,23,112).\r\n"),
        "{cli:?}"
    );
    assert_eq!(pins.len(), 2);

    let (srv, cli, _) =
        reference(&[vec![Ex::Pasv { other_host: false, p: 6000 }]], Layout::Published, PortMode::Preserve);
    assert_eq!(srv, b"PASV\r\n");
    assert!(String::from_utf8(cli).unwrap().ends_with("227 Entering Passive Mode (198,51,100,1,23,112).\r\n"));
}

/// Fixed hard cases: every line cut one byte at a time, every byte sent
/// twice, and a half ACK after each; then segments that each repeat the
/// previous ones' last bytes.
#[test]
fn a_port_line_one_byte_at_a_time_with_every_byte_repeated() {
    let turns = vec![
        vec![Ex::Port { p: 40000, lower: false }, Ex::Eprt { p: 40001 }],
        vec![Ex::Pasv { other_host: false, p: 40002 }],
    ];
    let cuts = vec![Cut { size: 1, retransmit: Some(0), partial_ack: Some(128), overlap: None }];
    let overlapping = vec![Cut { size: 3, retransmit: None, partial_ack: None, overlap: Some(5) }];
    for layout in [Layout::Masquerade, Layout::Published] {
        let want = reference(&turns, layout, PortMode::Random);
        assert_eq!(segmented(&turns, layout, PortMode::Random, &cuts), want);
        assert_eq!(segmented(&turns, layout, PortMode::Random, &overlapping), want);
    }
}
