//! The YAML configuration: loading with serde-saphyr (errors carry
//! line:column), validation, and compilation into the form the engine uses
//! (interface names resolved to indices, CIDRs parsed, durations in
//! `std::time::Duration`). See docs/configuration.md for every key.
//!
//! Layers: `yaml` reads the text into a tree of located values; `compile`
//! checks it against the schema and builds these types, collecting every
//! problem; `parse` holds the small value parsers (durations, ports, ...).

mod compile;
pub mod parse;
mod yaml;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

/// Index of an interface in `Config::interfaces` (YAML order).
pub type IfIndex = usize;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub interfaces: Vec<Interface>,
    pub nat: Nat,
    pub ftp: Ftp,
    pub policy: Policy,
    pub limits: Limits,
    pub timeouts: Timeouts,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Interface {
    pub name: String,
    /// Linux device for `run`; replay matches pcapng interface names against it.
    pub device: Option<String>,
    /// The gateway's own addresses; each prefix is a connected network.
    pub addresses: Vec<IpNet>,
    /// Next hop for destinations not on a connected network or route.
    pub gateway: Option<IpAddr>,
    pub routes: Vec<Route>,
    /// Optional fixed MAC (extension); `run` reads the device's own otherwise.
    pub mac: Option<[u8; 6]>,
    /// Optional MTU (extension), default 1500.
    pub mtu: u16,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub to: IpNet,
    /// None: the destination is on-link.
    pub via: Option<IpAddr>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Nat {
    pub masquerade: Vec<Masquerade>,
    pub forward: Vec<Forward>,
    pub ports: PortMode,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Masquerade {
    pub from: IfIndex,
    pub to: IfIndex,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forward {
    pub on: IfIndex,
    pub protocol: Protocol,
    pub port: u16,
    pub to: SocketAddr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortMode {
    Random,
    Preserve,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Any,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PasvMismatch {
    Fix,
    Deny,
    Allow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ZeroAddress {
    Peer,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnViolation {
    Reset,
    Drop,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ftp {
    pub control_ports: Vec<u16>,
    pub active: Action,
    pub passive: Action,
    pub third_party: Action,
    pub pasv_mismatch: PasvMismatch,
    pub privileged_data_ports: Action,
    pub zero_address: ZeroAddress,
    pub pinhole_timeout: Duration,
    pub max_pinholes: u32,
    pub strict: bool,
    /// Upper-cased command verbs.
    pub deny_commands: Vec<String>,
    pub on_violation: OnViolation,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub default: Action,
    pub rules: Vec<Rule>,
    /// Extension: a TCP connection already under way (no SYN seen) may be
    /// admitted, subject to the rules, as Linux's nf_conntrack_tcp_loose=1.
    pub pickup: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub name: String,
    pub action: Action,
    /// None: any interface.
    pub from: Option<IfIndex>,
    pub to: Option<IfIndex>,
    /// Empty: any.
    pub source: Vec<IpNet>,
    pub destination: Vec<IpNet>,
    pub protocol: Protocol,
    /// Inclusive destination port ranges; empty: any.
    pub ports: Vec<(u16, u16)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_connections: u32,
    pub max_connections_per_source: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    pub tcp_established: Duration,
    pub tcp_transitory: Duration,
    pub udp: Duration,
    pub icmp: Duration,
}

/// Extension: how `run` is operated (admin endpoint, logging). Not part of
/// `Config` so that the engine's configuration stays what the contract names;
/// `load_with_operations` returns both. `replay` and `check` validate these
/// keys and otherwise ignore them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operations {
    pub admin: AdminListen,
    pub log: Log,
    pub datapath: Datapath,
}

/// Extension: how `run` moves frames (`datapath:`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datapath {
    pub backend: Backend,
    /// Packet workers, each with its own connection table; the kernel
    /// spreads frames over them (see `dispatch`). `replay` simulates the same
    /// split so its output is what `run` would do.
    pub workers: u16,
    /// Ring backend: after frames came, keep looking for more this long
    /// without sleeping (lower latency, a busy core); 0 sleeps in poll.
    pub busy_poll_us: u32,
}

impl Default for Datapath {
    fn default() -> Self {
        Datapath { backend: Backend::Ring, workers: 1, busy_poll_us: 0 }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// PACKET_MMAP rings (TPACKET_V2), GSO-aware.
    Ring,
    /// pnet's AF_PACKET socket with recvmmsg/sendmmsg.
    Pnet,
}

/// Where the admin endpoint (`/metrics`, `/healthz`, `/sessions`) listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminListen {
    Unix(std::path::PathBuf),
    /// Loopback only: the endpoint has no authentication.
    Tcp(SocketAddr),
    Off,
}

/// The admin endpoint's default: a Unix socket only root can reach.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/ftpgate/ftpgate.sock";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    pub format: LogFormat,
    /// error | warn | info | debug | trace
    pub level: String,
    /// The contract's JSON-lines event log, as `replay --events` writes it.
    pub events: Option<std::path::PathBuf>,
}

impl Default for Operations {
    fn default() -> Self {
        Operations {
            admin: AdminListen::Unix(DEFAULT_ADMIN_SOCKET.into()),
            log: Log { format: LogFormat::Text, level: "info".into(), events: None },
            datapath: Datapath::default(),
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// Dotted key path, e.g. `policy.rules[0].source[1]`.
    pub path: String,
}

impl fmt::Display for ConfigError {
    /// `FILE:LINE:COLUMN: message (path)`; the ` (path)` part is left out
    /// when there is no key to name (YAML syntax errors, unreadable file).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file, self.line, self.column, self.message)?;
        if !self.path.is_empty() {
            write!(f, " ({})", self.path)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The interface called `name` in the YAML.
    pub fn interface_index(&self, name: &str) -> Option<IfIndex> {
        self.interfaces.iter().position(|i| i.name == name)
    }

    /// The interface whose `device` is `dev`, or failing that whose name is
    /// `dev`: how replay matches pcapng interface blocks (see CONTRACT.md).
    pub fn interface_for_device(&self, dev: &str) -> Option<IfIndex> {
        self.interfaces.iter().position(|i| i.device.as_deref() == Some(dev)).or_else(|| self.interface_index(dev))
    }
}

impl Default for Ftp {
    /// The contract's defaults.
    fn default() -> Self {
        compile::ftp_defaults()
    }
}

impl Default for Limits {
    fn default() -> Self {
        compile::limits_defaults()
    }
}

impl Default for Timeouts {
    /// Linux conntrack's defaults.
    fn default() -> Self {
        compile::timeouts_defaults()
    }
}

/// Parse, validate and compile YAML text. `file` names it in errors.
/// Every problem found is returned, not just the first, in file order.
pub fn from_str(text: &str, file: &str) -> Result<Config, Vec<ConfigError>> {
    from_str_with_operations(text, file).map(|(c, _)| c)
}

/// As `from_str`, with the `admin:` and `log:` sections (extension) for `run`.
pub fn from_str_with_operations(text: &str, file: &str) -> Result<(Config, Operations), Vec<ConfigError>> {
    let mut cx = compile::Ctx::new(file);
    let root = match yaml::parse(text) {
        Ok(root) => root,
        Err(e) => {
            cx.err_at(e.line, e.column, "", e.message);
            return Err(cx.errors);
        }
    };
    let config = compile::compile(&mut cx, &root);
    if cx.errors.is_empty() {
        Ok((config, cx.ops))
    } else {
        let mut errors = cx.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        Err(errors)
    }
}

/// Read and compile a configuration file. An unreadable file is one error at 1:1.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    load_with_operations(path).map(|(c, _)| c)
}

/// As `load`, with the `admin:` and `log:` sections (extension) for `run`.
pub fn load_with_operations(path: &Path) -> Result<(Config, Operations), Vec<ConfigError>> {
    let file = path.display().to_string();
    let unreadable =
        |message: String| vec![ConfigError { file: file.clone(), line: 1, column: 1, message, path: String::new() }];
    // A configuration is a few kilobytes; refuse to pull a huge file into memory.
    const MAX_BYTES: u64 = 16 << 20;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, MAX_BYTES + 1), &mut bytes))
        .map_err(|e| unreadable(format!("cannot read the file: {e}")))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(unreadable("the file is larger than 16 MiB: this is not a configuration".into()));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        unreadable(format!("the file is not UTF-8 text (bad byte at offset {})", e.utf8_error().valid_up_to()))
    })?;
    from_str_with_operations(&text, &file)
}

/// The text of rules/default.yaml, compiled into the binary.
pub const BUILTIN_DEFAULT_YAML: &str = include_str!("../../rules/default.yaml");

/// The built-in default used by `replay` without `-c`: compiled from rules/default.yaml.
pub fn builtin_default() -> Config {
    from_str(BUILTIN_DEFAULT_YAML, "rules/default.yaml").expect("rules/default.yaml is valid (tested)")
}

/// Parse an admin listen address as the `admin.listen` key takes it
/// (`unix:/PATH`, loopback `IP:PORT`, `off`), for command-line flags.
pub fn parse_admin_listen(text: &str) -> Result<AdminListen, String> {
    compile::admin_listen(text)
}
