//! The `ftpgate` command line: argument parsing, exit codes and one-line
//! error messages. The work is done by the library (`replay::run`, `config::load`).

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ftpgate::config::{self, AdminListen, LogFormat};
use ftpgate::live;
use ftpgate::replay::{self, DEFAULT_SEED};

const ABOUT: &str = "A stateful FTP-aware firewall and NAT application-layer gateway";

const MAIN_HELP: &str = "\
Exit codes: 0 success; 1 invalid configuration; 2 unreadable or corrupt input, or an
operating-system error (always with a one-line message naming the file and the cause).

Examples:
  ftpgate replay capture.pcap                       what the FTP defences alone do to a capture
  ftpgate replay -c gw.yaml -o out.pcapng --events ev.jsonl capture.pcapng
  ftpgate check -c gw.yaml
  ftpgate run -c /etc/ftpgate/gateway.yaml          the live gateway (see docs/operations.md)
  ftpgate sessions";

const REPLAY_HELP: &str = "\
The capture's timestamps are the clock. Frames are written to OUT on the interface the
gateway sends them from (one pcapng interface block per configured interface); the summary
on stdout ends with `frames: N in, N out, N dropped, N gateway-generated`.

A frame arrives on the configured interface whose `device` (or name) equals its pcapng
interface name; otherwise on the interface whose networks or routes hold its source address.

Examples:
  ftpgate replay ../shared/pcaps/public/zeek/ipv6-retr-samba.pcap -o out.pcapng --events ev.jsonl
  ftpgate replay -c gw.yaml --quiet ../shared/pcaps/public/suricata-verify/ftp-bounce.pcap
  ftpgate replay -c gw.yaml --seed 7 -o out.pcapng trace.pcapng && tshark -r out.pcapng";

const CHECK_HELP: &str = "\
Prints `CONFIG: ok`, or one line per problem (`FILE:LINE:COLUMN: what is wrong (key path)`)
and exits 1.

Examples:
  ftpgate check -c gw.yaml
  ftpgate check -c rules/default.yaml && ftpgate run -c rules/default.yaml";

const RUN_HELP: &str = "\
Runs in the foreground until SIGINT/SIGTERM (exit 0). SIGHUP re-reads CONFIG: a bad file is
reported (FILE:LINE:COLUMN lines) and the running configuration stays. ftpgate owns the
gateway's addresses on its devices (it answers ARP/ND/ping itself); see docs/operations.md
for preparing the interfaces (no kernel addresses or forwarding on them; offloads may stay
on with the default ring datapath, must be off with --datapath pnet).

Examples:
  ftpgate run -c /etc/ftpgate/gateway.yaml
  ftpgate run -c gw.yaml --workers 4    four packet threads, frames spread by the kernel
  ftpgate run -c gw.yaml --events /var/log/ftpgate/events.jsonl --log-format json
  kill -HUP $(pidof ftpgate)        reload the configuration
  curl --unix-socket /run/ftpgate/ftpgate.sock http://ftpgate/metrics";

const SESSIONS_HELP: &str = "\
Asks the running gateway's admin endpoint (the configuration's `admin: {listen: ...}`,
default unix:/run/ftpgate/ftpgate.sock) for its connections, NAT mappings and FTP pinholes.

Examples:
  ftpgate sessions
  ftpgate sessions -c /etc/ftpgate/gateway.yaml
  ftpgate sessions --admin 127.0.0.1:9180 --json | jq '.ftp_sessions[] | select(.pinholes | length > 0)'";

#[derive(Parser)]
#[command(name = "ftpgate", version, about = ABOUT, after_help = MAIN_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Feed every frame of a pcap or pcapng file through the gateway engine
    #[command(after_help = REPLAY_HELP)]
    Replay {
        /// Configuration file [default: the built-in one: no NAT, everything allowed,
        /// FTP inspection on port 21 with every defence on]
        #[arg(short, long, value_name = "CONFIG")]
        config: Option<PathBuf>,
        /// Write the frames the gateway would transmit here (pcapng)
        #[arg(short, long, value_name = "OUT.pcapng")]
        out: Option<PathBuf>,
        /// Write the event log here (JSON lines)
        #[arg(long, value_name = "EVENTS.jsonl")]
        events: Option<PathBuf>,
        /// Seed for NAT port choice. Fixed by default so a replay is reproducible
        /// (`run` draws a random seed)
        #[arg(long, value_name = "N", default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// No progress line on stderr
        #[arg(short, long)]
        quiet: bool,
        /// Simulate N packet workers, splitting frames among them exactly as
        /// `run` does [default: the configuration's datapath.workers, else 1]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: Option<u16>,
        /// The capture (pcap or pcapng)
        #[arg(value_name = "INPUT")]
        input: PathBuf,
    },
    /// Validate a configuration without running it
    #[command(after_help = CHECK_HELP)]
    Check {
        #[arg(short, long, value_name = "CONFIG")]
        config: PathBuf,
    },
    /// Run the live gateway on the Linux interfaces named in CONFIG
    #[command(after_help = RUN_HELP)]
    Run {
        #[arg(short, long, value_name = "CONFIG")]
        config: PathBuf,
        /// Also write the event log here (JSON lines, appended), as `replay --events` does
        #[arg(long, value_name = "EVENTS.jsonl")]
        events: Option<PathBuf>,
        /// Log format on stderr [default: the configuration's log.format, else text]
        #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
        log_format: Option<String>,
        /// Log level: error, warn, info, debug (every event), trace [default: info]
        #[arg(long, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
        log_level: Option<String>,
        /// Admin endpoint: unix:/PATH, 127.0.0.1:PORT or off [default: the configuration's admin.listen]
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
        /// Seed for NAT port choice [default: random]
        #[arg(long, value_name = "N")]
        seed: Option<u64>,
        /// Packet workers (threads, each with its own connection table)
        /// [default: the configuration's datapath.workers, else 1]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: Option<u16>,
        /// Frame I/O: ring (PACKET_MMAP, GSO-aware) or pnet
        /// [default: the configuration's datapath.backend, else ring]
        #[arg(long, value_name = "BACKEND", value_parser = ["ring", "pnet"])]
        datapath: Option<String>,
    },
    /// List the live gateway's connections, NAT mappings and FTP pinholes
    #[command(after_help = SESSIONS_HELP)]
    Sessions {
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
        /// Find the admin endpoint in this configuration
        #[arg(short, long, value_name = "CONFIG", conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// The admin endpoint: unix:/PATH or 127.0.0.1:PORT [default: unix:/run/ftpgate/ftpgate.sock]
        #[arg(long, value_name = "ADDR")]
        admin: Option<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Replay { config, out, events, seed, quiet, workers, input } => {
            replay_cmd(&replay::Options { input, config, out, events, seed, quiet, workers })
        }
        Command::Check { config } => check(&config),
        Command::Run { config, events, log_format, log_level, admin, seed, workers, datapath } => {
            let admin = match admin.as_deref().map(admin_arg).transpose() {
                Ok(a) => a,
                Err(code) => return code,
            };
            let log_format = log_format.map(|f| if f == "json" { LogFormat::Json } else { LogFormat::Text });
            let backend = datapath.map(|d| if d == "pnet" { config::Backend::Pnet } else { config::Backend::Ring });
            run_cmd(&live::Options { config, events, log_format, log_level, admin, seed, workers, backend })
        }
        Command::Sessions { json, config, admin } => sessions_cmd(json, config, admin),
    }
}

fn replay_cmd(opts: &replay::Options) -> ExitCode {
    match replay::run(opts) {
        Ok(summary) => {
            for w in &summary.warnings {
                eprintln!("ftpgate: warning: {w}");
            }
            stdout_line(&summary.to_string());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("ftpgate: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    // Unreadable is an OS problem (exit 2), not an invalid configuration.
    if let Err(e) = File::open(path) {
        eprintln!("ftpgate: cannot read config {}: {}", path.display(), ftpgate::capture::strip_os_error(&e));
        return ExitCode::from(2);
    }
    match config::load(path) {
        Ok(_) => {
            stdout_line(&format!("{}: ok", path.display()));
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in errors {
                stdout_line(&e.to_string());
            }
            ExitCode::from(1)
        }
    }
}

fn admin_arg(text: &str) -> Result<AdminListen, ExitCode> {
    config::parse_admin_listen(text).map_err(|e| {
        eprintln!("ftpgate: --admin: {e}");
        ExitCode::from(2)
    })
}

fn run_cmd(opts: &live::Options) -> ExitCode {
    match live::run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            for line in e.to_string().lines() {
                eprintln!("ftpgate: {line}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn sessions_cmd(json: bool, config: Option<PathBuf>, admin: Option<String>) -> ExitCode {
    let listen = match (admin, config) {
        (Some(a), _) => match admin_arg(&a) {
            Ok(l) => l,
            Err(code) => return code,
        },
        (None, Some(path)) => match live::load(&path) {
            Ok((_, ops)) => ops.admin,
            Err(e) => {
                for line in e.to_string().lines() {
                    eprintln!("ftpgate: {line}");
                }
                return ExitCode::from(e.exit_code());
            }
        },
        (None, None) => config::Operations::default().admin,
    };
    let shown = match &listen {
        AdminListen::Unix(p) => format!("unix:{}", p.display()),
        AdminListen::Tcp(a) => a.to_string(),
        AdminListen::Off => "off".to_string(),
    };
    let body = match live::admin::get(&listen, "/sessions") {
        Ok((200, body)) => body,
        Ok((status, body)) => {
            eprintln!("ftpgate: admin endpoint {shown}: HTTP {status}: {}", body.trim());
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!(
                "ftpgate: admin endpoint {shown}: {} (is `ftpgate run` running, and is this its admin address?)",
                ftpgate::capture::strip_os_error(&e)
            );
            return ExitCode::from(2);
        }
    };
    if json {
        stdout_line(body.trim_end());
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<live::snapshot::Sessions>(&body) {
        Ok(s) => {
            let mut out = io::stdout().lock();
            let _ = out.write_all(live::snapshot::render_table(&s).as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ftpgate: admin endpoint {shown}: unexpected answer: {e}");
            ExitCode::from(2)
        }
    }
}

/// A closed stdout (`ftpgate ... | head`) is not worth a panic.
fn stdout_line(s: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{s}");
}
