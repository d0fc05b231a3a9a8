//! `ftpgate run` / `ftpgate sessions` as users meet them without a live
//! network: exit codes and messages, the `admin:` / `log:` configuration
//! keys, and `sessions` against a stand-in admin endpoint. The live path
//! itself is tested in network namespaces by tests/lab/live-e2e.sh.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::process::{Command, Output};

use ftpgate::config::{self, AdminListen, LogFormat};

const BIN: &str = env!("CARGO_BIN_EXE_ftpgate");

fn ftpgate(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run ftpgate")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

const TWO: &str = "interfaces:\n  inside:\n    device: veth-a\n    addresses: [192.0.2.1/24]\n  outside:\n    device: veth-b\n    addresses: [198.51.100.1/24]\n";

#[test]
fn admin_and_log_keys_parse_with_defaults() {
    let (_, ops) = config::from_str_with_operations(TWO, "t.yaml").unwrap();
    assert_eq!(ops.admin, AdminListen::Unix("/run/ftpgate/ftpgate.sock".into()));
    assert_eq!((ops.log.format, ops.log.level.as_str(), ops.log.events.as_ref()), (LogFormat::Text, "info", None));

    let y = format!("{TWO}admin:\n  listen: \"127.0.0.1:9180\"\nlog:\n  format: json\n  level: debug\n  events: /var/log/ftpgate/ev.jsonl\n");
    let (_, ops) = config::from_str_with_operations(&y, "t.yaml").unwrap();
    assert_eq!(ops.admin, AdminListen::Tcp("127.0.0.1:9180".parse().unwrap()));
    assert_eq!(ops.log.format, LogFormat::Json);
    assert_eq!(ops.log.level, "debug");
    assert_eq!(ops.log.events.as_deref(), Some(std::path::Path::new("/var/log/ftpgate/ev.jsonl")));
    let (_, ops) = config::from_str_with_operations(&format!("{TWO}admin: {{listen: off}}\n"), "t.yaml").unwrap();
    assert_eq!(ops.admin, AdminListen::Off);
    // The engine's configuration is the same with or without them.
    assert_eq!(config::from_str(&y, "t.yaml").unwrap(), config::from_str(TWO, "t.yaml").unwrap());
}

#[test]
fn bad_admin_and_log_values_are_located() {
    let y = format!("{TWO}admin:\n  listen: \"192.0.2.1:9180\"\n  lisen: x\nlog:\n  format: xml\n  level: loud\n");
    let errs = config::from_str(&y, "t.yaml").unwrap_err();
    let lines: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert_eq!(errs.len(), 4, "{lines:#?}");
    assert!(lines[0].starts_with("t.yaml:9:11: 192.0.2.1:9180 is not a loopback address"), "{}", lines[0]);
    assert!(lines[1].contains("unknown key 'lisen' in admin (did you mean 'listen'?)"), "{}", lines[1]);
    assert!(lines[2].contains("unknown value 'xml' for format: expected text | json"), "{}", lines[2]);
    assert!(lines[3].ends_with("(log.level)"), "{}", lines[3]);
    let e = config::from_str(&format!("{TWO}admin: {{listen: \"unix:run/x.sock\"}}\n"), "t.yaml").unwrap_err();
    assert!(e[0].message.contains("must be absolute"), "{e:?}");
}

#[test]
fn shipped_example_gateway_yaml_checks_ok() {
    let out = ftpgate(&["check", "-c", "packaging/gateway.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
}

#[test]
fn run_exit_codes() {
    // Unreadable: 2, naming the file.
    let out = ftpgate(&["run", "-c", "no/such/gw.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("ftpgate: cannot read config no/such/gw.yaml: "), "{}", text(&out.stderr));
    // Invalid: 1, FILE:LINE:COLUMN lines.
    let out = ftpgate(&["run", "-c", "tests/data/config/bad_cidr.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).lines().all(|l| l.starts_with("ftpgate: tests/data/config/bad_cidr.yaml:")),
        "{}",
        text(&out.stderr)
    );
    // A bad --admin: 2 before anything is opened.
    let out = ftpgate(&["run", "-c", "rules/default.yaml", "--admin", "203.0.113.1:80"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("not a loopback address"), "{}", text(&out.stderr));
}

#[test]
fn run_names_devices_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("gw.yaml");
    std::fs::write(&cfg, TWO.replace("veth-a", "ftpgate-nodev0").replace("veth-b", "ftpgate-nodev1")).unwrap();
    let out = ftpgate(&["run", "-c", cfg.to_str().unwrap(), "--admin", "off"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    // As root the device check speaks; without CAP_NET_RAW the permission check does first.
    if err.contains("CAP_NET_RAW") {
        assert_eq!(err.lines().count(), 1, "{err}");
    } else {
        let lines: Vec<&str> = err.lines().filter(|l| !l.contains("WARN")).collect();
        assert_eq!(
            lines,
            vec![
                "ftpgate: ftpgate-nodev0: no such network device (interface inside)",
                "ftpgate: ftpgate-nodev1: no such network device (interface outside)"
            ],
            "{err}"
        );
    }
}

/// A one-shot admin endpoint that answers `/sessions` with `body`.
fn fake_endpoint(body: &'static str) -> (tempfile::TempDir, String, std::thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let l = UnixListener::bind(&path).unwrap();
    let h = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut req = [0u8; 1024];
        let n = s.read(&mut req).unwrap();
        let resp = format!(
            "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(resp.as_bytes()).unwrap();
        String::from_utf8_lossy(&req[..n]).into_owned()
    });
    (dir, format!("unix:{}", path.display()), h)
}

const SESSIONS: &str = r#"{"ts":1.0,"truncated":false,"connections":[{"id":0,"protocol":"tcp","state":"established","from":"inside","to":"outside","src":"192.0.2.10:40000","dst":"198.51.100.20:21","nat":{"src":"198.51.100.1:61000","dst":"198.51.100.20:21"},"expires_in":300.0,"ftp":true}],"ftp_sessions":[{"session":"192.0.2.10:40000→198.51.100.20:21","control":0,"encrypted":false,"pinholes":[{"peer":"198.51.100.20","address":"198.51.100.1","port":50001,"target":"192.0.2.10:50001","expires_in":29.0}]}]}"#;

#[test]
fn sessions_prints_a_table_from_the_endpoint() {
    let (_d, addr, h) = fake_endpoint(SESSIONS);
    let out = ftpgate(&["sessions", "--admin", &addr]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(t.contains("192.0.2.10:40000") && t.contains("198.51.100.1:61000 > 198.51.100.20:21"), "{t}");
    assert!(t.contains("pinhole 198.51.100.1:50001 from 198.51.100.20 -> 192.0.2.10:50001"), "{t}");
    assert!(h.join().unwrap().starts_with("GET /sessions HTTP/1.0\r\n"));
}

#[test]
fn sessions_json_passes_the_endpoint_json_through() {
    let (_d, addr, _h) = fake_endpoint(SESSIONS);
    let out = ftpgate(&["sessions", "--json", "--admin", &addr]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ftp_sessions"][0]["pinholes"][0]["port"], 50001);
}

#[test]
fn sessions_finds_the_endpoint_in_the_configuration() {
    let (d, addr, _h) = fake_endpoint(SESSIONS);
    let cfg = d.path().join("gw.yaml");
    std::fs::write(&cfg, format!("{TWO}admin:\n  listen: \"{addr}\"\n")).unwrap();
    let out = ftpgate(&["sessions", "-c", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("1 connections, 1 FTP sessions"));
}

#[test]
fn sessions_without_a_gateway_says_where_it_looked() {
    let out = ftpgate(&["sessions", "--admin", "unix:/nonexistent/ftpgate.sock"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1);
    assert!(err.contains("unix:/nonexistent/ftpgate.sock") && err.contains("is `ftpgate run` running"), "{err}");
}
