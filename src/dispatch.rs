//! Which worker owns a frame, when several workers each keep their own
//! connection table.
//!
//! The rule must send both directions of a connection to the same worker
//! without looking anything up, because the kernel applies it (as a classic
//! BPF program on a PACKET_FANOUT group) before any worker sees the frame.
//! It is: worker = (source port + destination port) mod workers. The sum
//! does not care which way the frame goes, so a connection the gateway does
//! not translate stays on one worker; when the gateway does translate a port
//! (masquerade, FTP data mappings), it picks a new port congruent to the
//! original modulo the worker count (`nat::PortAllocator::with_stride`), so
//! the sum, and the worker, are unchanged. A published service whose public
//! port differs from its inside port (`forward: port 2121 → :21`) is the one
//! translation the gateway does not choose: frames to that public endpoint
//! count with the inside port instead.
//!
//! ICMP echo counts its identifier (translated the same way); ICMP errors
//! count the ports of the datagram they quote. Everything else (ARP,
//! neighbour discovery, fragments, IPv6 extension headers, other protocols)
//! goes to worker 0, which is where ARP and ND answers are learned for all.
//!
//! `Dispatch::worker` is the reference written in Rust; `Dispatch::program`
//! the same rule in classic BPF. Tests run the program through an
//! interpreter and require the two to agree on every frame.

use std::net::IpAddr;

use crate::config::{Config, IfIndex, Protocol};

/// Frames per worker are decided on their network header; link-layer header
/// length does not matter to the kernel's loads.
const ETH: usize = 14;

/// One published endpoint whose public port differs from the inside port.
#[derive(Clone, Debug)]
struct Canon {
    tcp: bool,
    udp: bool,
    port: u16,
    to_port: u16,
    /// The interface's addresses of the forward's family; empty: any.
    addrs: Vec<IpAddr>,
    v4: bool,
}

#[derive(Clone, Debug)]
pub struct Dispatch {
    workers: u16,
    /// Per ingress interface.
    canon: Vec<Vec<Canon>>,
}

impl Dispatch {
    pub fn new(cfg: &Config, workers: u16) -> Dispatch {
        let mut canon = vec![Vec::new(); cfg.interfaces.len()];
        for f in &cfg.nat.forward {
            if f.port == f.to.port() || f.on >= canon.len() {
                continue;
            }
            let v4 = f.to.is_ipv4();
            let addrs = cfg.interfaces[f.on].addresses.iter().map(|n| n.addr()).filter(|a| a.is_ipv4() == v4).collect();
            canon[f.on].push(Canon {
                tcp: matches!(f.protocol, Protocol::Tcp | Protocol::Any),
                udp: matches!(f.protocol, Protocol::Udp | Protocol::Any),
                port: f.port,
                to_port: f.to.port(),
                addrs,
                v4,
            });
        }
        Dispatch { workers: workers.max(1), canon }
    }

    pub fn workers(&self) -> u16 {
        self.workers
    }

    /// The worker for `frame` (Ethernet) arriving on `ingress`.
    pub fn worker(&self, ingress: IfIndex, frame: &[u8]) -> u16 {
        if self.workers == 1 {
            return 0;
        }
        let key = self.key(ingress, frame).unwrap_or(0);
        (key % self.workers as u32) as u16
    }

    fn key(&self, ingress: IfIndex, f: &[u8]) -> Option<u32> {
        let canon: &[Canon] = self.canon.get(ingress).map_or(&[], |v| v);
        let b = |o: usize| f.get(ETH + o).map(|&v| v as u32);
        let h = |o: usize| Some((b(o)? << 8) | b(o + 1)?);
        let w = |o: usize| Some((h(o)? << 16) | h(o + 2)?);
        let ethertype = (*f.get(12)? as u32) << 8 | *f.get(13)? as u32;
        match ethertype {
            0x0800 => {
                if h(6)? & 0x3fff != 0 {
                    return Some(0); // a fragment
                }
                let x = ((b(0)? & 0xf) * 4) as usize;
                let proto = b(9)?;
                match proto {
                    6 | 17 => {
                        let sport = h(x)?;
                        let dport = canonical(canon, true, h(x + 2)?, proto, |i| w(16 + 4 * i))?;
                        Some(sport + dport)
                    }
                    1 => match b(x)? {
                        0 | 8 => h(x + 4),
                        3 | 4 | 5 | 11 | 12 => {
                            let inner_proto = b(x + 8 + 9)?;
                            let y = x + 8 + ((b(x + 8)? & 0xf) * 4) as usize;
                            match inner_proto {
                                6 | 17 => {
                                    let sport = canonical(canon, true, h(y)?, inner_proto, |i| w(x + 8 + 12 + 4 * i))?;
                                    Some(sport + h(y + 2)?)
                                }
                                1 => h(y + 4),
                                _ => Some(0),
                            }
                        }
                        _ => Some(0),
                    },
                    _ => Some(0),
                }
            }
            0x86dd => match b(6)? {
                6 | 17 => {
                    let proto = b(6)?;
                    let sport = h(40)?;
                    let dport = canonical(canon, false, h(42)?, proto, |i| w(24 + 4 * i))?;
                    Some(sport + dport)
                }
                58 => match b(40)? {
                    128 | 129 => h(44),
                    1..=4 => {
                        let inner = b(48 + 6)?;
                        match inner {
                            6 | 17 => {
                                let sport = canonical(canon, false, h(88)?, inner, |i| w(56 + 4 * i))?;
                                Some(sport + h(90)?)
                            }
                            58 => h(92),
                            _ => Some(0),
                        }
                    }
                    _ => Some(0),
                },
                _ => Some(0),
            },
            _ => Some(0),
        }
    }

    /// The rule for frames arriving on `ingress`, as a classic BPF program
    /// for PACKET_FANOUT_CBPF: it returns the worker index.
    pub fn program(&self, ingress: IfIndex) -> Vec<Insn> {
        let mut a = Asm::default();
        if self.workers == 1 {
            a.op(RET | K, 0);
            return a.finish();
        }
        let n = self.workers as u32;
        let canon: &[Canon] = self.canon.get(ingress).map_or(&[], |v| v);
        let (v4, v6) = (a.label(), a.label());

        a.op(LD | W | ABS, SKF_AD_OFF + SKF_AD_PROTOCOL);
        a.if_eq(0x0800, v4);
        a.if_eq(0x86dd, v6);
        a.ret0();

        // IPv4: X = header length.
        a.bind(v4);
        a.ld(H, 6);
        let whole = a.label();
        a.if_not_set(0x3fff, whole);
        a.ret0(); // a fragment
        a.bind(whole);
        a.op(LDX | B | MSH, net(0));
        a.ld(B, 9);
        a.op(ST, M_PROTO);
        let (l4, icmp) = (a.label(), a.label());
        a.if_eq(6, l4);
        a.if_eq(17, l4);
        a.if_eq(1, icmp);
        a.ret0();
        a.bind(l4);
        a.ldx_ind(H, 0);
        a.op(ST, M_SUM);
        a.ldx_ind(H, 2);
        self.emit_canon(&mut a, canon, true, Addr::V4Dst);
        a.sum_and_ret(n);

        a.bind(icmp);
        a.ldx_ind(B, 0);
        let (echo4, err4) = (a.label(), a.label());
        a.if_eq(0, echo4);
        a.if_eq(8, echo4);
        for t in [3, 4, 5, 11, 12] {
            a.if_eq(t, err4);
        }
        a.ret0();
        a.bind(echo4);
        a.ldx_ind(H, 4);
        a.mod_ret(n);
        // An error quoting a datagram: inner header at X + 8.
        a.bind(err4);
        a.op(MISC | TXA, 0);
        a.op(ST, M_OUTER);
        a.ldx_ind(B, 8 + 9);
        a.op(ST, M_PROTO);
        a.ldx_ind(B, 8);
        a.op(ALU | AND | K, 0xf);
        a.op(ALU | LSH | K, 2);
        a.op(ALU | ADD | X, 0);
        a.op(MISC | TAX, 0); // X = outer + inner header lengths
        a.op(LD | MEM, M_PROTO);
        let (il4, iecho) = (a.label(), a.label());
        a.if_eq(6, il4);
        a.if_eq(17, il4);
        a.if_eq(1, iecho);
        a.ret0();
        a.bind(iecho);
        a.ldx_ind(H, 8 + 4);
        a.mod_ret(n);
        a.bind(il4);
        a.ldx_ind(H, 8 + 2);
        a.op(ST, M_SUM);
        a.ldx_ind(H, 8);
        self.emit_canon(&mut a, canon, true, Addr::V4InnerSrc);
        a.sum_and_ret(n);

        // IPv6: fixed header, no extension headers.
        a.bind(v6);
        a.ld(B, 6);
        a.op(ST, M_PROTO);
        let (l6, icmp6) = (a.label(), a.label());
        a.if_eq(6, l6);
        a.if_eq(17, l6);
        a.if_eq(58, icmp6);
        a.ret0();
        a.bind(l6);
        a.ld(H, 40);
        a.op(ST, M_SUM);
        a.ld(H, 42);
        self.emit_canon(&mut a, canon, false, Addr::V6Dst);
        a.sum_and_ret(n);

        a.bind(icmp6);
        a.ld(B, 40);
        let (echo6, err6) = (a.label(), a.label());
        a.if_eq(128, echo6);
        a.if_eq(129, echo6);
        for t in [1, 2, 3, 4] {
            a.if_eq(t, err6);
        }
        a.ret0();
        a.bind(echo6);
        a.ld(H, 44);
        a.mod_ret(n);
        a.bind(err6);
        a.ld(B, 48 + 6);
        a.op(ST, M_PROTO);
        let (il6, iecho6) = (a.label(), a.label());
        a.if_eq(6, il6);
        a.if_eq(17, il6);
        a.if_eq(58, iecho6);
        a.ret0();
        a.bind(iecho6);
        a.ld(H, 92);
        a.mod_ret(n);
        a.bind(il6);
        a.ld(H, 90);
        a.op(ST, M_SUM);
        a.ld(H, 88);
        self.emit_canon(&mut a, canon, false, Addr::V6InnerSrc);
        a.sum_and_ret(n);
        a.finish()
    }

    /// With the port to canonicalise in A (and the protocol in M_PROTO):
    /// replace it by the inside port when it names a published endpoint of
    /// this interface; the port is in A afterwards.
    fn emit_canon(&self, a: &mut Asm, canon: &[Canon], v4: bool, addr: Addr) {
        let mine: Vec<&Canon> = canon.iter().filter(|c| c.v4 == v4).collect();
        let Some(first) = mine.first() else { return };
        let (done, check_addr, keep) = (a.label(), a.label(), a.label());
        a.op(ST, M_PORT);
        // The first forward with this port and protocol decides; every
        // forward of a family on one interface shares its address list, so
        // the address is checked once, after the port.
        for c in &mine {
            let next = a.label();
            a.op(LD | MEM, M_PORT);
            a.if_ne(c.port as u32, next);
            a.op(LD | MEM, M_PROTO);
            match (c.tcp, c.udp) {
                (true, true) => {
                    let ok = a.label();
                    a.if_eq(6, ok);
                    a.if_ne(17, next);
                    a.bind(ok);
                }
                (true, false) => a.if_ne(6, next),
                _ => a.if_ne(17, next),
            }
            a.op(LD | IMM, c.to_port as u32);
            a.op(ST, M_NEW);
            a.jmp(check_addr);
            a.bind(next);
        }
        a.jmp(keep);
        a.bind(check_addr);
        if !first.addrs.is_empty() {
            let hit = a.label();
            for ip in &first.addrs {
                let miss = a.label();
                for (j, word) in addr_words(ip).iter().enumerate() {
                    addr.load_word(a, j);
                    a.if_ne(*word, miss);
                }
                a.jmp(hit);
                a.bind(miss);
            }
            a.jmp(keep);
            a.bind(hit);
        }
        a.op(LD | MEM, M_NEW);
        a.jmp(done);
        a.bind(keep);
        a.op(LD | MEM, M_PORT);
        a.bind(done);
    }
}

fn addr_words(ip: &IpAddr) -> Vec<u32> {
    match ip {
        IpAddr::V4(v) => vec![u32::from(*v)],
        IpAddr::V6(v) => v.octets().chunks(4).map(|q| u32::from_be_bytes([q[0], q[1], q[2], q[3]])).collect(),
    }
}

/// The port to count for the gateway-side endpoint (`port` with the
/// address whose 32-bit words `word` reads): the inside port when it names a
/// published endpoint of this interface. None: the frame is too short.
fn canonical(canon: &[Canon], v4: bool, port: u32, proto: u32, word: impl Fn(usize) -> Option<u32>) -> Option<u32> {
    for c in canon.iter().filter(|c| c.v4 == v4) {
        if port == c.port as u32 && c.matches(proto) && c.addr_matches(&word)? {
            return Some(c.to_port as u32);
        }
    }
    Some(port)
}

impl Canon {
    fn matches(&self, proto: u32) -> bool {
        (proto == 6 && self.tcp) || (proto == 17 && self.udp)
    }

    /// `word(i)`: the i-th 32-bit word of the frame's address; None when the
    /// frame is too short (the BPF program then returns worker 0).
    fn addr_matches(&self, word: impl Fn(usize) -> Option<u32>) -> Option<bool> {
        if self.addrs.is_empty() {
            return Some(true);
        }
        for ip in &self.addrs {
            let mut all = true;
            for (j, want) in addr_words(ip).iter().enumerate() {
                if word(j)? != *want {
                    all = false;
                    break;
                }
            }
            if all {
                return Some(true);
            }
        }
        Some(false)
    }
}

/// Where an address to compare lives.
#[derive(Clone, Copy)]
enum Addr {
    V4Dst,
    /// Source of the datagram an ICMPv4 error quotes (needs M_OUTER).
    V4InnerSrc,
    V6Dst,
    V6InnerSrc,
}

impl Addr {
    fn load_word(self, a: &mut Asm, j: usize) {
        let j = j as u32 * 4;
        match self {
            Addr::V4Dst => a.ld(W, 16 + j),
            Addr::V4InnerSrc => {
                // X holds outer + inner header lengths here: reload the outer one.
                a.op(LDX | MEM, M_OUTER);
                a.ldx_ind(W, 8 + 12 + j);
            }
            Addr::V6Dst => a.ld(W, 24 + j),
            Addr::V6InnerSrc => a.ld(W, 56 + j),
        }
    }
}

// ------------------------------------------------------------ classic BPF

/// One classic BPF instruction, laid out as `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

pub const LD: u16 = 0x00;
pub const LDX: u16 = 0x01;
pub const ST: u16 = 0x02;
pub const ALU: u16 = 0x04;
pub const JMP: u16 = 0x05;
pub const RET: u16 = 0x06;
pub const MISC: u16 = 0x07;
pub const W: u16 = 0x00;
pub const H: u16 = 0x08;
pub const B: u16 = 0x10;
pub const IMM: u16 = 0x00;
pub const ABS: u16 = 0x20;
pub const IND: u16 = 0x40;
pub const MEM: u16 = 0x60;
pub const MSH: u16 = 0xa0;
pub const ADD: u16 = 0x00;
pub const LSH: u16 = 0x60;
pub const AND: u16 = 0x50;
pub const MOD: u16 = 0x90;
pub const JA: u16 = 0x00;
pub const JEQ: u16 = 0x10;
pub const JSET: u16 = 0x40;
pub const K: u16 = 0x00;
pub const X: u16 = 0x08;
pub const A: u16 = 0x10;
pub const TAX: u16 = 0x00;
pub const TXA: u16 = 0x80;
/// Loads relative to the network header, wherever the link header ends.
pub const SKF_NET_OFF: i32 = -0x100000;
pub const SKF_AD_OFF: u32 = (-0x1000i32) as u32;
pub const SKF_AD_PROTOCOL: u32 = 0;

// Scratch memory slots.
const M_SUM: u32 = 0;
const M_PROTO: u32 = 1;
const M_PORT: u32 = 2;
const M_OUTER: u32 = 3;
const M_NEW: u32 = 4;

fn net(off: u32) -> u32 {
    (SKF_NET_OFF + off as i32) as u32
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Label(usize);

/// A forward-only assembler: jumps name labels, resolved in `finish`.
#[derive(Default)]
struct Asm {
    code: Vec<(Insn, Option<Label>, Option<Label>)>,
    labels: Vec<Option<usize>>,
}

impl Asm {
    fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }
    fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.code.len());
    }
    fn op(&mut self, code: u16, k: u32) {
        self.code.push((Insn { code, jt: 0, jf: 0, k }, None, None));
    }
    fn ld(&mut self, size: u16, off: u32) {
        self.op(LD | size | ABS, net(off));
    }
    /// Load at X + `off` from the network header.
    fn ldx_ind(&mut self, size: u16, off: u32) {
        self.op(LD | size | IND, net(off));
    }
    /// Conditional jumps skip or take a JA, whose 32-bit offset reaches
    /// anywhere, so no program outgrows classic BPF's 8-bit jump offsets.
    fn cond(&mut self, code: u16, k: u32, taken_if_true: bool, to: Label) {
        let (jt, jf) = if taken_if_true { (0, 1) } else { (1, 0) };
        self.code.push((Insn { code: JMP | code | K, jt, jf, k }, None, None));
        self.jmp(to);
    }
    fn if_eq(&mut self, k: u32, to: Label) {
        self.cond(JEQ, k, true, to);
    }
    fn if_ne(&mut self, k: u32, to: Label) {
        self.cond(JEQ, k, false, to);
    }
    fn if_not_set(&mut self, k: u32, to: Label) {
        self.cond(JSET, k, false, to);
    }
    fn jmp(&mut self, to: Label) {
        self.code.push((Insn { code: JMP | JA, jt: 0, jf: 0, k: 0 }, Some(to), None));
    }
    fn ret0(&mut self) {
        self.op(RET | K, 0);
    }
    /// A += M_SUM; return A mod n.
    fn sum_and_ret(&mut self, n: u32) {
        self.op(LDX | MEM, M_SUM);
        self.op(ALU | ADD | X, 0);
        self.mod_ret(n);
    }
    fn mod_ret(&mut self, n: u32) {
        self.op(ALU | MOD | K, n);
        self.op(RET | A, 0);
    }
    fn finish(self) -> Vec<Insn> {
        self.code
            .iter()
            .enumerate()
            .map(|(pc, (insn, to, _))| {
                let mut i = *insn;
                if let Some(l) = to {
                    let to = self.labels[l.0].expect("every label is bound");
                    assert!(to > pc, "classic BPF jumps only forward");
                    i.k = (to - pc - 1) as u32;
                }
                i
            })
            .collect()
    }
}

/// Runs a classic BPF program the way the kernel does for a fanout group
/// on an Ethernet device: loads at SKF_NET_OFF + k read the network header
/// (14 bytes into `frame`), SKF_AD_PROTOCOL reads the EtherType, and a load
/// past the end ends the program with 0. Used by the tests to check
/// `program` against `worker`; kept here so tests elsewhere can use it too.
pub fn run_program(prog: &[Insn], frame: &[u8]) -> u32 {
    let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
    let load = |off: i64, size: usize| -> Option<u32> {
        let base = if off >= SKF_NET_OFF as i64 && off < 0 { off - SKF_NET_OFF as i64 + ETH as i64 } else { off };
        if base < 0 {
            return None;
        }
        let s = frame.get(base as usize..base as usize + size)?;
        Some(s.iter().fold(0u32, |acc, &v| acc << 8 | v as u32))
    };
    let mut pc = 0usize;
    for _ in 0..4096 {
        let Some(i) = prog.get(pc) else { return 0 };
        pc += 1;
        let size = |c: u16| match c & 0x18 {
            W => 4,
            H => 2,
            _ => 1,
        };
        match i.code & 0x07 {
            LD => match i.code & 0xe0 {
                ABS if i.k == SKF_AD_OFF + SKF_AD_PROTOCOL => {
                    let Some(p) = load(12, 2) else { return 0 };
                    a = p;
                }
                ABS | IND => {
                    let off = i.k as i32 as i64 + if i.code & 0xe0 == IND { x as i64 } else { 0 };
                    match load(off, size(i.code)) {
                        Some(v) => a = v,
                        None => return 0,
                    }
                }
                MEM => a = mem[i.k as usize & 15],
                _ => a = i.k,
            },
            LDX => match i.code & 0xe0 {
                MSH => match load(i.k as i32 as i64, 1) {
                    Some(v) => x = (v & 0xf) * 4,
                    None => return 0,
                },
                MEM => x = mem[i.k as usize & 15],
                _ => x = i.k,
            },
            ST => mem[i.k as usize & 15] = a,
            ALU => {
                let v = if i.code & X != 0 { x } else { i.k };
                a = match i.code & 0xf0 {
                    ADD => a.wrapping_add(v),
                    AND => a & v,
                    LSH => a.wrapping_shl(v),
                    MOD => {
                        if v == 0 {
                            return 0;
                        }
                        a % v
                    }
                    _ => return 0,
                };
            }
            JMP => match i.code & 0xf0 {
                JA => pc += i.k as usize,
                JEQ => pc += if a == i.k { i.jt } else { i.jf } as usize,
                JSET => pc += if a & i.k != 0 { i.jt } else { i.jf } as usize,
                _ => return 0,
            },
            RET => return if i.code & 0x18 == A { a } else { i.k },
            MISC => {
                if i.code & 0xf8 == TXA {
                    a = x
                } else {
                    x = a
                }
            }
            _ => return 0,
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;
    use proptest::prelude::*;

    const CFG: &str = "interfaces:
  inside:
    addresses: [192.0.2.1/24, 2001:db8:1::1/64]
  outside:
    addresses: [198.51.100.1/24, 198.51.100.2/24, 2001:db8:2::1/64]
nat:
  masquerade: [{from: inside, to: outside}]
  forward:
    - {on: outside, protocol: tcp, port: 2121, to: \"192.0.2.20:21\"}
    - {on: outside, protocol: udp, port: 5353, to: \"192.0.2.20:53\"}
    - {on: outside, protocol: tcp, port: 8021, to: \"[2001:db8:1::20]:21\"}
    - {on: outside, protocol: tcp, port: 80, to: \"192.0.2.30:80\"}
";

    fn cfg() -> Config {
        crate::config::from_str(CFG, "test.yaml").expect("test config parses")
    }

    fn tcp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .tcp(sport, dport, 1, 1000)
            .write(&mut v, b"x")
            .unwrap();
        v
    }
    fn udp6(src: [u8; 16], sport: u16, dst: [u8; 16], dport: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6(src, dst, 64).udp(sport, dport).write(&mut v, b"x").unwrap();
        v
    }
    fn v6(last: u8, net: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        a[5] = net;
        a[15] = last;
        a
    }

    /// ICMPv4 error quoting `inner` (an Ethernet frame; its IP part is quoted).
    fn icmp4_error(src: [u8; 4], dst: [u8; 4], inner: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        let quote = &inner[14..inner.len().min(14 + 28)];
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4(src, dst, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
            ))
            .write(&mut v, quote)
            .unwrap();
        v
    }

    fn agree(d: &Dispatch, iface: IfIndex, f: &[u8]) -> u16 {
        let prog = d.program(iface);
        let by_rust = d.worker(iface, f);
        let by_bpf = run_program(&prog, f);
        assert_eq!(by_bpf, by_rust as u32, "BPF and Rust disagree on {f:02x?}");
        by_rust
    }

    #[test]
    fn both_directions_of_masquerade_land_on_one_worker() {
        let c = cfg();
        let mut alloc = crate::nat::PortAllocator::with_stride(5, 4);
        let d = Dispatch::new(&c, 4);
        for sport in [1024u16, 40000, 40001, 40002, 40003, 65535] {
            let out = tcp4([192, 0, 2, 10], sport, [203, 0, 113, 5], 21);
            let w = agree(&d, 0, &out);
            // The gateway's mapping: a random port of the same class.
            let mapped = alloc.pick(crate::config::PortMode::Random, sport, |_| true).unwrap();
            let back = tcp4([203, 0, 113, 5], 21, [198, 51, 100, 1], mapped);
            assert_eq!(agree(&d, 1, &back), w, "reply to {mapped} (from {sport})");
            // An ICMP error about the translated datagram comes back to the same worker.
            let sent = tcp4([198, 51, 100, 1], mapped, [203, 0, 113, 5], 21);
            assert_eq!(agree(&d, 1, &icmp4_error([203, 0, 113, 254], [198, 51, 100, 1], &sent)), w);
        }
    }

    #[test]
    fn published_ports_count_as_the_inside_port() {
        let d = Dispatch::new(&cfg(), 3);
        for cport in [1024u16, 33333, 50001, 65000] {
            let inbound = tcp4([203, 0, 113, 9], cport, [198, 51, 100, 2], 2121);
            let reply = tcp4([192, 0, 2, 20], 21, [203, 0, 113, 9], cport);
            assert_eq!(agree(&d, 1, &inbound), agree(&d, 0, &reply), "client port {cport}");
            // The same port on an address that is not the gateway's: routed, not published.
            let routed = tcp4([203, 0, 113, 9], cport, [198, 51, 100, 77], 2121);
            assert_eq!(agree(&d, 1, &routed) as u32, (cport as u32 + 2121) % 3);
            // The other protocol is not published on that port.
            let mut v = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([203, 0, 113, 9], [198, 51, 100, 1], 64)
                .udp(cport, 2121)
                .write(&mut v, b"")
                .unwrap();
            assert_eq!(agree(&d, 1, &v) as u32, (cport as u32 + 2121) % 3);
            // UDP forward and IPv6 forward.
            let mut u = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv4([203, 0, 113, 9], [198, 51, 100, 1], 64)
                .udp(cport, 5353)
                .write(&mut u, b"")
                .unwrap();
            assert_eq!(agree(&d, 1, &u) as u32, (cport as u32 + 53) % 3);
            let mut t6 = Vec::new();
            PacketBuilder::ethernet2([2; 6], [4; 6])
                .ipv6(v6(9, 3), v6(1, 2), 64)
                .tcp(cport, 8021, 1, 100)
                .write(&mut t6, b"")
                .unwrap();
            assert_eq!(agree(&d, 1, &t6) as u32, (cport as u32 + 21) % 3);
            // On the inside interface nothing is published.
            assert_eq!(agree(&d, 0, &inbound) as u32, (cport as u32 + 2121) % 3);
        }
    }

    #[test]
    fn arp_fragments_and_neighbour_discovery_go_to_worker_zero() {
        let d = Dispatch::new(&cfg(), 4);
        let arp = crate::wire::build::arp_request([2; 6], "192.0.2.1".parse().unwrap(), "192.0.2.10".parse().unwrap());
        assert_eq!(agree(&d, 0, &arp), 0);
        let ns = crate::wire::build::neighbor_solicit(
            [2; 6],
            "2001:db8:1::1".parse().unwrap(),
            "2001:db8:1::10".parse().unwrap(),
        );
        assert_eq!(agree(&d, 0, &ns), 0);
        let mut frag = tcp4([192, 0, 2, 10], 40001, [203, 0, 113, 5], 80);
        frag[14 + 6] = 0x20; // more fragments
        assert_eq!(agree(&d, 0, &frag), 0);
        assert_eq!(agree(&d, 0, &frag[..20]), 0, "truncated");
        // Echo: the identifier decides.
        let mut e = Vec::new();
        PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([192, 0, 2, 10], [203, 0, 113, 5], 64)
            .icmpv4_echo_request(4003, 1)
            .write(&mut e, b"")
            .unwrap();
        assert_eq!(agree(&d, 0, &e), 3);
        let u = udp6(v6(10, 1), 40003, v6(5, 9), 53);
        assert_eq!(agree(&d, 0, &u) as u32, (40003 + 53) % 4);
    }

    #[test]
    fn one_worker_needs_no_program_logic() {
        let d = Dispatch::new(&cfg(), 1);
        assert_eq!(d.program(0), vec![Insn { code: RET | K, jt: 0, jf: 0, k: 0 }]);
        assert_eq!(d.worker(0, &tcp4([1, 2, 3, 4], 5, [6, 7, 8, 9], 10)), 0);
    }

    #[test]
    fn many_published_addresses_still_make_a_valid_program() {
        let mut text =
            String::from("interfaces:\n  inside:\n    addresses: [192.0.2.1/24]\n  outside:\n    addresses: [");
        let addrs: Vec<String> = (1..=120).map(|i| format!("198.51.100.{i}/24")).collect();
        text += &addrs.join(", ");
        text += "]\nnat:\n  forward:\n";
        for p in 0..20 {
            text +=
                &format!("    - {{on: outside, protocol: tcp, port: {}, to: \"192.0.2.20:{}\"}}\n", 3000 + p, 21 + p);
        }
        let c = crate::config::from_str(&text, "t.yaml").unwrap();
        let d = Dispatch::new(&c, 2);
        let prog = d.program(1);
        assert!(prog.len() < 4096, "{} instructions", prog.len());
        let f = tcp4([203, 0, 113, 9], 40000, [198, 51, 100, 120], 3019);
        assert_eq!(agree(&d, 1, &f) as u32, (40000 + 40) % 2);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]
        /// Any frame, any damage: the program and the reference agree.
        #[test]
        fn program_matches_reference(
            kind in 0u8..6,
            sport in any::<u16>(), dport in prop::sample::select(vec![21u16, 80, 2121, 5353, 8021, 40000, 1]),
            dst_last in prop::sample::select(vec![1u8, 2, 77]),
            workers in 2u16..6,
            cut in any::<prop::sample::Index>(),
            flip in any::<Option<(prop::sample::Index, u8)>>(),
            iface in 0usize..2,
        ) {
            let d = Dispatch::new(&cfg(), workers);
            let mut f = match kind {
                0 => tcp4([203, 0, 113, 9], sport, [198, 51, 100, dst_last], dport),
                1 => { let mut v = Vec::new(); PacketBuilder::ethernet2([2; 6], [4; 6]).ipv4([203, 0, 113, 9], [198, 51, 100, dst_last], 64).udp(sport, dport).write(&mut v, b"ab").unwrap(); v }
                2 => { let mut v = Vec::new(); PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6(v6(9, 3), v6(dst_last, 2), 64).tcp(sport, dport, 1, 9).write(&mut v, b"").unwrap(); v }
                3 => icmp4_error([203, 0, 113, 254], [198, 51, 100, 1], &tcp4([198, 51, 100, dst_last], dport, [203, 0, 113, 9], sport)),
                4 => {
                    // ICMPv6 error quoting a TCP segment from the gateway.
                    let inner = { let mut v = Vec::new(); PacketBuilder::ipv6(v6(dst_last, 2), v6(9, 3), 64).tcp(dport, sport, 1, 9).write(&mut v, b"").unwrap(); v };
                    let mut v = Vec::new();
                    PacketBuilder::ethernet2([2; 6], [4; 6]).ipv6(v6(254, 3), v6(1, 2), 64)
                        .icmpv6(etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 }).write(&mut v, &inner).unwrap();
                    v
                }
                _ => udp6(v6(9, 3), sport, v6(dst_last, 2), dport),
            };
            if let Some((at, v)) = flip {
                let i = at.index(f.len());
                f[i] ^= v;
            }
            let keep = cut.index(f.len() + 1);
            f.truncate(keep.max(f.len().saturating_sub(8)).max(keep));
            let f = if keep < 30 { &f[..keep] } else { &f[..] };
            prop_assert_eq!(run_program(&d.program(iface), f), d.worker(iface, f) as u32);
        }
    }
}
