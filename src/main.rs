//! The `ftpgate` command line: argument parsing, exit codes and one-line
//! error messages. The work is done by the library (`replay::run`, `config::load`).

use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use ftpgate::config;
use ftpgate::replay::{self, DEFAULT_SEED};

const ABOUT: &str = "A stateful FTP-aware firewall and NAT application-layer gateway";

const MAIN_HELP: &str = "\
Exit codes: 0 success; 1 invalid configuration; 2 unreadable or corrupt input, or an
operating-system error (always with a one-line message naming the file and the cause).

Examples:
  ftpgate replay capture.pcap                       what the FTP defences alone do to a capture
  ftpgate replay -c gw.yaml -o out.pcapng --events ev.jsonl capture.pcapng
  ftpgate check -c gw.yaml";

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
Examples:
  ftpgate run -c /etc/ftpgate/gw.yaml
  kill -HUP $(pidof ftpgate)        reload the configuration";

const SESSIONS_HELP: &str = "\
Examples:
  ftpgate sessions
  ftpgate sessions --json | jq '.[] | select(.pinholes | length > 0)'";

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
    },
    /// List the live gateway's connections, NAT mappings and FTP pinholes
    #[command(after_help = SESSIONS_HELP)]
    Sessions {
        /// JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Replay { config, out, events, seed, quiet, input } => {
            replay_cmd(&replay::Options { input, config, out, events, seed, quiet })
        }
        Command::Check { config } => check(&config),
        Command::Run { .. } => not_built("run"),
        Command::Sessions { .. } => not_built("sessions"),
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

fn not_built(cmd: &str) -> ExitCode {
    eprintln!("ftpgate: {cmd}: the live gateway is not available in this build; use `ftpgate replay` to run captures through the engine");
    ExitCode::from(2)
}

/// A closed stdout (`ftpgate ... | head`) is not worth a panic.
fn stdout_line(s: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{s}");
}
