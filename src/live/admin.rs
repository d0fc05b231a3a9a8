//! The admin endpoint: plain HTTP/1.0 on a Unix socket or a loopback TCP
//! port, one request per connection, served off the packet path from the
//! copies the worker publishes. And its client, for `ftpgate sessions`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::config::AdminListen;

/// Longest request head accepted; the endpoint takes no bodies.
const MAX_HEAD: usize = 8 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// Without the query string.
    pub path: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }
    pub fn json(body: String) -> Response {
        Response { status: 200, content_type: "application/json", body }
    }
    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }
    pub fn to_bytes(&self, head_only: bool) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.0 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(self.body.as_bytes());
        }
        out
    }
}

/// Parse a request head (request line and headers, up to the blank line).
/// Headers are read and ignored; HTTP/1.0 and 1.1 are both accepted.
pub fn parse_request(head: &[u8]) -> Result<Request, Response> {
    let text = std::str::from_utf8(head).map_err(|_| Response::text(400, "request is not UTF-8\n"))?;
    let line = text.split("\r\n").next().unwrap_or("").trim_end_matches('\n');
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Response::text(400, "malformed request line\n"));
    };
    if !version.starts_with("HTTP/1.") {
        return Err(Response::text(400, "only HTTP/1.x is served\n"));
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Response::text(400, "malformed method\n"));
    }
    if !target.starts_with('/') {
        return Err(Response::text(400, "the target must be a path\n"));
    }
    let path = target.split(['?', '#']).next().unwrap_or("/").to_string();
    Ok(Request { method: method.to_string(), path })
}

/// Read a request head from a stream: up to the blank line, at most MAX_HEAD.
pub fn read_head(r: &mut impl Read) -> Result<Vec<u8>, Response> {
    let mut head = Vec::with_capacity(512);
    let mut reader = BufReader::new(r.take(MAX_HEAD as u64 + 1));
    loop {
        let before = head.len();
        match reader.read_until(b'\n', &mut head) {
            Ok(0) => return Err(Response::text(400, "incomplete request\n")),
            Ok(_) => {}
            Err(_) => return Err(Response::text(400, "could not read the request\n")),
        }
        if head.len() > MAX_HEAD {
            return Err(Response::text(431, "request head too large\n"));
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            return Ok(head);
        }
        if !line.ends_with(b"\n") {
            return Err(Response::text(400, "incomplete request\n"));
        }
    }
}

/// What the endpoint serves; implemented by the live gateway, and by tests.
pub trait Handler: Send + Sync {
    fn metrics(&self) -> String;
    /// None: the worker is not answering (stalled).
    fn healthy(&self) -> Result<(), String>;
    fn sessions_json(&self) -> Option<String>;
}

pub fn route(req: &Request, h: &dyn Handler) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return Response::text(405, "only GET and HEAD\n");
    }
    match req.path.as_str() {
        "/metrics" => {
            Response { status: 200, content_type: "text/plain; version=0.0.4; charset=utf-8", body: h.metrics() }
        }
        "/healthz" => match h.healthy() {
            Ok(()) => Response::text(200, "ok\n"),
            Err(why) => Response::text(503, format!("{why}\n")),
        },
        "/sessions" => match h.sessions_json() {
            Some(j) => Response::json(j),
            None => Response::text(503, "the packet worker did not answer in time\n"),
        },
        "/" => Response::text(200, "ftpgate admin endpoint: /metrics /healthz /sessions\n"),
        _ => Response::text(404, "not found: try /metrics, /healthz or /sessions\n"),
    }
}

fn serve_one<S: Read + Write>(mut s: S, h: &dyn Handler) {
    let (resp, head_only) = match read_head(&mut s).and_then(|head| parse_request(&head)) {
        Ok(req) => (route(&req, h), req.method == "HEAD"),
        Err(resp) => (resp, false),
    };
    let _ = s.write_all(&resp.to_bytes(head_only));
    let _ = s.flush();
}

pub enum Listener {
    Unix(UnixListener, PathBuf),
    Tcp(TcpListener),
}

impl Listener {
    /// Bind; a stale Unix socket file (nobody answering) is replaced, a live
    /// one means another gateway runs and is an error.
    pub fn bind(listen: &AdminListen) -> io::Result<Option<Listener>> {
        match listen {
            AdminListen::Off => Ok(None),
            AdminListen::Tcp(a) => Ok(Some(Listener::Tcp(TcpListener::bind(a)?))),
            AdminListen::Unix(path) => {
                if path.exists() {
                    if UnixStream::connect(path).is_ok() {
                        return Err(io::Error::new(
                            io::ErrorKind::AddrInUse,
                            "another process answers on this socket (is ftpgate already running?)",
                        ));
                    }
                    std::fs::remove_file(path)?;
                }
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let l = UnixListener::bind(path)?;
                // Owner and group only: the endpoint shows addresses and has no authentication.
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
                Ok(Some(Listener::Unix(l, path.clone())))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
            Listener::Tcp(l) => l.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        }
    }

    pub fn socket_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, p) => Some(p),
            Listener::Tcp(_) => None,
        }
    }

    /// Serve forever, one connection at a time (requests are tiny and rare).
    pub fn serve(self, h: Arc<dyn Handler>) {
        match self {
            Listener::Unix(l, _) => {
                for s in l.incoming().flatten() {
                    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                    serve_one(&s, &*h);
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
            Listener::Tcp(l) => {
                for s in l.incoming().flatten() {
                    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                    serve_one(&s, &*h);
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ client

/// GET `path` from the endpoint; the status and body.
pub fn get(listen: &AdminListen, path: &str) -> io::Result<(u16, String)> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: ftpgate\r\n\r\n");
    let raw = match listen {
        AdminListen::Off => {
            return Err(io::Error::new(io::ErrorKind::NotFound, "the admin endpoint is off in this configuration"))
        }
        AdminListen::Unix(p) => exchange(UnixStream::connect(p)?, &req)?,
        AdminListen::Tcp(a) => exchange(TcpStream::connect_timeout(a, IO_TIMEOUT)?, &req)?,
    };
    parse_response(&raw)
}

trait Timeouts {
    fn timeouts(&self) -> io::Result<()>;
}
impl Timeouts for UnixStream {
    fn timeouts(&self) -> io::Result<()> {
        self.set_read_timeout(Some(IO_TIMEOUT))?;
        self.set_write_timeout(Some(IO_TIMEOUT))
    }
}
impl Timeouts for TcpStream {
    fn timeouts(&self) -> io::Result<()> {
        self.set_read_timeout(Some(IO_TIMEOUT))?;
        self.set_write_timeout(Some(IO_TIMEOUT))
    }
}

fn exchange<S: Read + Write + Timeouts>(mut s: S, req: &str) -> io::Result<Vec<u8>> {
    s.timeouts()?;
    s.write_all(req.as_bytes())?;
    let mut out = Vec::new();
    s.take(256 << 20).read_to_end(&mut out)?;
    Ok(out)
}

pub fn parse_response(raw: &[u8]) -> io::Result<(u16, String)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response from ftpgate");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(bad)?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad())?;
    let status = head
        .split("\r\n")
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, String::from_utf8_lossy(&raw[split + 4..]).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;
    impl Handler for Fixed {
        fn metrics(&self) -> String {
            "ftpgate_up 1\n".into()
        }
        fn healthy(&self) -> Result<(), String> {
            Err("worker stalled for 5s".into())
        }
        fn sessions_json(&self) -> Option<String> {
            Some("{\"connections\":[]}".into())
        }
    }

    #[test]
    fn request_line_parses() {
        let r = parse_request(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(r, Request { method: "GET".into(), path: "/metrics".into() });
        assert_eq!(parse_request(b"HEAD / HTTP/1.0\n\n").unwrap().method, "HEAD");
    }

    #[test]
    fn bad_requests_get_4xx_not_panics() {
        for bad in [
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2\r\n\r\n",
            b"get / HTTP/1.0\r\n\r\n",
            b"GET x HTTP/1.0\r\n\r\n",
            b"\xff\xfe / HTTP/1.0\r\n\r\n",
            b"GET  / HTTP/1.0\r\n\r\n",
            b"",
        ] {
            let e = parse_request(bad).unwrap_err();
            assert_eq!(e.status, 400, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn head_reading_stops_at_blank_line_and_bounds_size() {
        let mut ok: &[u8] = b"GET / HTTP/1.0\r\nA: b\r\n\r\nBODY";
        assert_eq!(read_head(&mut ok).unwrap(), b"GET / HTTP/1.0\r\nA: b\r\n\r\n");
        let mut cut: &[u8] = b"GET / HTTP/1.0\r\nA: b";
        assert_eq!(read_head(&mut cut).unwrap_err().status, 400);
        let big = format!("GET / HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(read_head(&mut big.as_bytes()).unwrap_err().status, 431);
    }

    #[test]
    fn routes() {
        let req = |m: &str, p: &str| Request { method: m.into(), path: p.into() };
        assert_eq!(route(&req("GET", "/metrics"), &Fixed).body, "ftpgate_up 1\n");
        assert_eq!(route(&req("GET", "/healthz"), &Fixed).status, 503);
        let s = route(&req("GET", "/sessions"), &Fixed);
        assert_eq!((s.status, s.content_type), (200, "application/json"));
        assert_eq!(route(&req("POST", "/metrics"), &Fixed).status, 405);
        assert_eq!(route(&req("GET", "/nope"), &Fixed).status, 404);
    }

    #[test]
    fn response_round_trips_through_the_client_parser() {
        let r = Response::json("{\"a\":1}".into());
        let bytes = r.to_bytes(false);
        assert!(bytes.starts_with(b"HTTP/1.0 200 OK\r\n"));
        assert_eq!(parse_response(&bytes).unwrap(), (200, "{\"a\":1}".to_string()));
        let head = r.to_bytes(true);
        assert_eq!(parse_response(&head).unwrap(), (200, String::new()));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn serves_over_a_unix_socket_and_refuses_a_second_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/admin.sock");
        let listen = AdminListen::Unix(path.clone());
        let l = Listener::bind(&listen).unwrap().unwrap();
        assert_eq!(l.describe(), format!("unix:{}", path.display()));
        std::thread::spawn(move || l.serve(Arc::new(Fixed)));
        let (st, body) = get(&listen, "/metrics").unwrap();
        assert_eq!((st, body.as_str()), (200, "ftpgate_up 1\n"));
        assert_eq!(get(&listen, "/healthz").unwrap().0, 503);
        let e = Listener::bind(&listen).err().expect("live socket is refused");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }

    #[test]
    fn stale_socket_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        drop(UnixListener::bind(&path).unwrap()); // file stays, nobody listens
        assert!(path.exists());
        assert!(Listener::bind(&AdminListen::Unix(path)).unwrap().is_some());
    }
}
