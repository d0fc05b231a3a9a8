//! The schema: walks the YAML tree (yaml.rs), checks every key and value,
//! and builds the `Config` the engine uses. Every problem is recorded and
//! the walk carries on with a default in place of the bad value, so one run
//! of `ftpgate check` lists them all.
//!
//! Key lists and defaults here mirror /work/shared/spec/CONTRACT.md; the
//! user-facing description is docs/configuration.md. Keep the three in step.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde_saphyr::{Location, Spanned};

use super::parse as p;
use super::yaml::{line_col, Node, SNode};
use super::*;

pub(crate) struct Ctx<'f> {
    file: &'f str,
    pub errors: Vec<ConfigError>,
    /// The `admin:` / `log:` sections, kept beside the `Config` (extension).
    pub ops: Operations,
}

impl<'f> Ctx<'f> {
    pub fn new(file: &'f str) -> Self {
        Ctx { file, errors: Vec::new(), ops: Operations::default() }
    }

    pub fn err_at(&mut self, line: usize, column: usize, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line,
            column,
            message: one_line(&message.into()),
            path: one_line(path),
        });
    }

    fn err(&mut self, at: &Location, path: &str, message: impl Into<String>) {
        let (line, column) = line_col(at);
        self.err_at(line, column, path, message);
    }
}

/// `check` prints one line per problem, and keys and values come from the
/// file: control characters are shown escaped, never emitted.
fn one_line(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn comma_list(items: &[&str]) -> String {
    items.join(", ")
}

// ---------------------------------------------------------------- mappings

/// The keys of one YAML mapping, already checked against the allowed set.
struct Fields<'n> {
    entries: &'n [(Spanned<String>, SNode)],
    at: Location,
    path: String,
}

impl<'n> Fields<'n> {
    /// The value under `key`, or None when absent or written empty (`key:`),
    /// which both mean "use the default".
    fn get(&self, key: &str) -> Option<&'n SNode> {
        self.entries.iter().find(|(k, _)| k.value == key).map(|(_, v)| v).filter(|v| !matches!(v.value, Node::Null))
    }

    fn path(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn require(&self, cx: &mut Ctx, key: &str, hint: &str) -> Option<&'n SNode> {
        let v = self.get(key);
        if v.is_none() {
            cx.err(&self.at, &self.path(key), format!("missing '{key}': {hint}"));
        }
        v
    }
}

/// Opens a mapping and reports every key not in `allowed`. An empty value
/// (`nat:` with nothing under it) is an empty mapping.
fn fields<'n>(cx: &mut Ctx, node: &'n SNode, path: &str, what: &str, allowed: &[&str]) -> Option<Fields<'n>> {
    let entries: &[(Spanned<String>, SNode)] = match &node.value {
        Node::Map(m) => m,
        Node::Null => &[],
        other => {
            cx.err(&node.referenced, path, format!("expected {what} (a mapping of keys), found {}", other.kind()));
            return None;
        }
    };
    for (k, _) in entries {
        if !allowed.contains(&k.value.as_str()) {
            let hint = match p::suggest(&k.value, allowed) {
                Some(s) => format!(" (did you mean '{s}'?)"),
                None => String::new(),
            };
            cx.err(
                &k.referenced,
                &join(path, &k.value),
                format!("unknown key '{}' in {what}{hint}: expected one of {}", k.value, comma_list(allowed)),
            );
        }
    }
    Some(Fields { entries, at: node.referenced, path: path.to_owned() })
}

// ------------------------------------------------------------------ leaves

fn string<'n>(cx: &mut Ctx, node: &'n SNode, path: &str, what: &str) -> Option<&'n str> {
    match &node.value {
        Node::Str(s) => Some(s),
        other => {
            cx.err(&node.referenced, path, format!("expected {what}, found {}", other.kind()));
            None
        }
    }
}

/// A keyword from a fixed set; the message lists the set in the contract's order.
fn choice<T: Copy>(cx: &mut Ctx, node: &SNode, path: &str, key: &str, options: &[(&str, T)]) -> Option<T> {
    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
    let expected = names.join(" | ");
    match &node.value {
        Node::Str(s) => {
            if let Some((_, v)) = options.iter().find(|(n, _)| n == s) {
                return Some(*v);
            }
            let hint = match p::suggest(s, &names) {
                Some(h) => format!(" (did you mean '{h}'?)"),
                None => String::new(),
            };
            cx.err(&node.referenced, path, format!("unknown value '{s}' for {key}: expected {expected}{hint}"));
        }
        other => cx.err(&node.referenced, path, format!("expected {expected} for {key}, found {}", other.kind())),
    }
    None
}

fn boolean(cx: &mut Ctx, node: &SNode, path: &str, key: &str) -> Option<bool> {
    match &node.value {
        Node::Bool(b) => Some(*b),
        other => {
            cx.err(&node.referenced, path, format!("expected true or false for {key}, found {}", other.kind()));
            None
        }
    }
}

fn whole(node: &SNode) -> Option<i128> {
    match &node.value {
        Node::Int(n) => Some(*n),
        // `021` reaches us as a float; an integral value is what was meant.
        Node::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e30 => Some(*f as i128),
        _ => None,
    }
}

fn count(cx: &mut Ctx, node: &SNode, path: &str, key: &str, zero_hint: &str) -> Option<u32> {
    let Some(n) = whole(node) else {
        cx.err(&node.referenced, path, format!("expected a whole number for {key}, found {}", node.value.kind()));
        return None;
    };
    match u32::try_from(n) {
        Ok(0) => cx.err(&node.referenced, path, format!("{key}: 0 {zero_hint}")),
        Ok(v) => return Some(v),
        Err(_) => cx.err(&node.referenced, path, format!("{key}: {n} is out of range: use 1-{}", u32::MAX)),
    }
    None
}

fn duration(cx: &mut Ctx, node: &SNode, path: &str) -> Option<Duration> {
    let r = match (&node.value, whole(node)) {
        (Node::Str(s), _) => p::duration(s),
        (_, Some(n)) => p::duration_secs(n),
        (Node::Float(f), None) => {
            Err(format!("{f} is not a whole number: use a smaller unit, e.g. 1500ms rather than 1.5"))
        }
        (other, None) => Err(format!("expected a duration such as 30s, 2m or 5d, found {}", other.kind())),
    };
    r.map_err(|m| cx.err(&node.referenced, path, m)).ok()
}

/// A single port: a number or its digits in quotes.
fn port(cx: &mut Ctx, node: &SNode, path: &str) -> Option<u16> {
    let r = match (&node.value, whole(node)) {
        (_, Some(n)) => p::port_number(n),
        (Node::Str(s), _) if s.contains('-') => Err(format!("'{s}' is a range: a single port is needed here")),
        (Node::Str(s), _) => p::port_range(s).map(|(lo, _)| lo),
        (other, None) => Err(format!("expected a port number (1-65535), found {}", other.kind())),
    };
    r.map_err(|m| cx.err(&node.referenced, path, m)).ok()
}

fn port_range(cx: &mut Ctx, node: &SNode, path: &str) -> Option<(u16, u16)> {
    let r = match (&node.value, whole(node)) {
        (_, Some(n)) => p::port_number(n).map(|p| (p, p)),
        (Node::Str(s), _) => p::port_range(s),
        (other, None) => Err(format!("expected a port (21) or a range (\"8000-8100\"), found {}", other.kind())),
    };
    r.map_err(|m| cx.err(&node.referenced, path, m)).ok()
}

fn with_str<T>(
    cx: &mut Ctx,
    node: &SNode,
    path: &str,
    what: &str,
    f: impl FnOnce(&str) -> Result<T, String>,
) -> Option<T> {
    let s = string(cx, node, path, what)?;
    f(s).map_err(|m| cx.err(&node.referenced, path, m)).ok()
}

/// The items of a list with their paths. Where `scalar_ok`, a single value
/// stands for a one-item list (`ports: 21`).
fn list<'n>(cx: &mut Ctx, node: &'n SNode, path: &str, what: &str, scalar_ok: bool) -> Vec<(String, &'n SNode)> {
    match &node.value {
        Node::Seq(items) => items.iter().enumerate().map(|(i, n)| (format!("{path}[{i}]"), n)).collect(),
        Node::Null => Vec::new(),
        Node::Map(_) => {
            cx.err(&node.referenced, path, format!("expected {what} (a list), found a mapping"));
            Vec::new()
        }
        _ if scalar_ok => vec![(path.to_owned(), node)],
        other => {
            cx.err(&node.referenced, path, format!("expected {what} (a list), found {}", other.kind()));
            Vec::new()
        }
    }
}

/// `any`, one network, or a list of networks; empty result = any.
fn networks(cx: &mut Ctx, node: &SNode, path: &str) -> Vec<IpNet> {
    if let Node::Str(s) = &node.value {
        if s == "any" {
            return Vec::new();
        }
    }
    if let Node::Seq(items) = &node.value {
        if items.is_empty() {
            cx.err(&node.referenced, path, "an empty list would match nothing: write any, or list networks");
            return Vec::new();
        }
        if items.len() == 1 && matches!(&items[0].value, Node::Str(s) if s == "any") {
            return Vec::new();
        }
    }
    let mut out = Vec::new();
    for (ip, item) in list(cx, node, path, "networks", true) {
        if matches!(&item.value, Node::Str(s) if s == "any") {
            cx.err(
                &item.referenced,
                &ip,
                "'any' cannot be combined with networks: write any alone, or list only networks",
            );
            continue;
        }
        if let Some(n) = with_str(cx, item, &ip, "a network such as 192.0.2.0/24, or any", p::network) {
            out.push(n);
        }
    }
    out
}

// ----------------------------------------------------------------- options

const ALLOW_DENY: &[(&str, Action)] = &[("allow", Action::Allow), ("deny", Action::Deny)];
const DENY_ALLOW: &[(&str, Action)] = &[("deny", Action::Deny), ("allow", Action::Allow)];

// --------------------------------------------------------------- top level

const TOP_KEYS: &[&str] = &["interfaces", "nat", "ftp", "policy", "limits", "timeouts", "admin", "log", "datapath"];

pub(crate) fn compile(cx: &mut Ctx, root: &SNode) -> Config {
    let empty_hint = "a configuration needs at least an 'interfaces:' section (see docs/configuration.md)";
    let top = match &root.value {
        Node::Null => {
            cx.err_at(1, 1, "interfaces", format!("the file is empty: {empty_hint}"));
            None
        }
        _ => fields(cx, root, "", "the configuration", TOP_KEYS),
    };
    let top = top.unwrap_or(Fields { entries: &[], at: root.referenced, path: String::new() });
    let has_keys = !top.entries.is_empty();

    let ifaces = match top.entries.iter().find(|(k, _)| k.value == "interfaces") {
        Some((k, n)) if matches!(n.value, Node::Null) => {
            cx.err(&k.referenced, "interfaces", "'interfaces:' is empty: define at least one interface under it");
            Ifaces::default()
        }
        Some((_, n)) => interfaces(cx, n),
        None => {
            if has_keys {
                cx.err_at(1, 1, "interfaces", format!("no 'interfaces:' section: {empty_hint}"));
            }
            Ifaces::default()
        }
    };
    let nat = nat(cx, top.get("nat"), &ifaces);
    let ftp = ftp(cx, top.get("ftp"));
    let policy = policy(cx, top.get("policy"), &ifaces);
    let limits = limits(cx, top.get("limits"));
    let timeouts = timeouts(cx, top.get("timeouts"));
    cx.ops = operations(cx, top.get("admin"), top.get("log"));
    if let Some(d) = top.get("datapath") {
        cx.ops.datapath = datapath(cx, d);
    }
    Config { interfaces: ifaces.list, nat, ftp, policy, limits, timeouts }
}

// -------------------------------------------------------------- interfaces

#[derive(Default)]
struct Ifaces {
    list: Vec<Interface>,
}

impl Ifaces {
    fn names(&self) -> String {
        self.list.iter().map(|i| i.name.as_str()).collect::<Vec<_>>().join(", ")
    }

    fn find(&self, name: &str) -> Option<IfIndex> {
        self.list.iter().position(|i| i.name == name)
    }

    /// An interface name where `any` is allowed (policy rules): None = any.
    fn resolve_or_any(&self, cx: &mut Ctx, node: &SNode, path: &str, key: &str) -> Option<Option<IfIndex>> {
        let name = string(cx, node, path, &format!("an interface name or any for {key}"))?;
        if name == "any" {
            return Some(None);
        }
        self.resolve_name(cx, node, path, key, name, " (or write any)").map(Some)
    }

    /// An interface name where a real interface is needed (NAT).
    fn resolve(&self, cx: &mut Ctx, node: &SNode, path: &str, key: &str) -> Option<IfIndex> {
        let name = string(cx, node, path, &format!("an interface name for {key}"))?;
        if name == "any" {
            cx.err(
                &node.referenced,
                path,
                format!("{key} needs one interface, not any: write one of {}", self.names()),
            );
            return None;
        }
        self.resolve_name(cx, node, path, key, name, "")
    }

    fn resolve_name(
        &self,
        cx: &mut Ctx,
        node: &SNode,
        path: &str,
        key: &str,
        name: &str,
        or_any: &str,
    ) -> Option<IfIndex> {
        let found = self.find(name);
        if found.is_none() {
            let msg = if self.list.is_empty() {
                format!("unknown interface '{name}' in {key}: no interfaces are defined")
            } else {
                let names: Vec<&str> = self.list.iter().map(|i| i.name.as_str()).collect();
                let hint = match p::suggest(name, &names) {
                    Some(h) => format!(" (did you mean '{h}'?)"),
                    None => String::new(),
                };
                format!("unknown interface '{name}' in {key}{hint}: the interfaces are {}{or_any}", self.names())
            };
            cx.err(&node.referenced, path, msg);
        }
        found
    }
}

const IFACE_KEYS: &[&str] = &["device", "addresses", "gateway", "routes", "mac", "mtu"];
const ROUTE_KEYS: &[&str] = &["to", "via"];

fn interfaces(cx: &mut Ctx, node: &SNode) -> Ifaces {
    let mut out = Ifaces::default();
    let entries = match &node.value {
        Node::Map(m) => m,
        other => {
            cx.err(
                &node.referenced,
                "interfaces",
                format!("expected a mapping of interface names (e.g. inside:, outside:), found {}", other.kind()),
            );
            return out;
        }
    };
    if entries.is_empty() {
        cx.err(&node.referenced, "interfaces", "no interfaces are defined: a gateway needs at least one");
    }
    // Where each own address and device was first seen, to report repeats.
    let mut own_addrs: HashMap<IpAddr, String> = HashMap::new();
    let mut devices: HashMap<String, String> = HashMap::new();

    for (key, body) in entries {
        let name = key.value.as_str();
        let path = join("interfaces", name);
        if let Err(m) = p::name(name) {
            cx.err(&key.referenced, &path, format!("interface name {m}"));
        }
        if name == "any" {
            cx.err(&key.referenced, &path, "'any' cannot name an interface: rules use it to mean every interface");
        }
        let mut iface = Interface {
            name: name.to_owned(),
            device: None,
            addresses: Vec::new(),
            gateway: None,
            routes: Vec::new(),
            mac: None,
            mtu: 1500,
        };
        let Some(f) = fields(cx, body, &path, &format!("interface '{name}'"), IFACE_KEYS) else {
            out.list.push(iface);
            continue;
        };

        if let Some(n) = f.get("device") {
            let dp = f.path("device");
            if let Some(d) = with_str(cx, n, &dp, "a Linux interface name such as eth0", |s| {
                p::device_name(s).map(|()| s.to_owned())
            }) {
                if let Some(first) = devices.get(&d) {
                    cx.err(
                        &n.referenced,
                        &dp,
                        format!(
                            "device '{d}' is already used by interface '{first}': each interface needs its own device"
                        ),
                    );
                } else {
                    devices.insert(d.clone(), name.to_owned());
                }
                iface.device = Some(d);
            }
        }

        if let Some(n) = f.get("addresses") {
            for (ap, item) in list(cx, n, &f.path("addresses"), "addresses such as 192.0.2.1/24", true) {
                let Some(a) =
                    with_str(cx, item, &ap, "an address with prefix such as 192.0.2.1/24", p::interface_address)
                else {
                    continue;
                };
                if let Some(first) = own_addrs.get(&a.addr()) {
                    cx.err(
                        &item.referenced,
                        &ap,
                        format!(
                            "address {} is already on interface '{first}': an address belongs to one interface",
                            a.addr()
                        ),
                    );
                    continue;
                }
                own_addrs.insert(a.addr(), name.to_owned());
                iface.addresses.push(a);
            }
        }

        // Next hops, checked once the routes are known: they must be
        // reachable on this link, or the gateway could never find their MAC.
        let mut hops: Vec<(IpAddr, String, Location)> = Vec::new();
        if let Some(n) = f.get("gateway") {
            let gp = f.path("gateway");
            iface.gateway = with_str(cx, n, &gp, "the next-hop address", p::ip);
            if let Some(g) = iface.gateway {
                hops.push((g, gp, n.referenced));
            }
        }
        if let Some(n) = f.get("routes") {
            for (rp, item) in
                list(cx, n, &f.path("routes"), "routes such as {to: 203.0.113.0/24, via: 198.51.100.9}", false)
            {
                let Some(rf) = fields(cx, item, &rp, "a route", ROUTE_KEYS) else {
                    continue;
                };
                let to = rf
                    .require(cx, "to", "a route needs a destination network, e.g. to: 203.0.113.0/24")
                    .and_then(|n| with_str(cx, n, &rf.path("to"), "a network such as 203.0.113.0/24", p::network));
                let via_node = rf.get("via");
                let via = via_node.and_then(|n| with_str(cx, n, &rf.path("via"), "a next-hop address", p::ip));
                let Some(to) = to else { continue };
                if let (Some(v), Some(vn)) = (via, via_node) {
                    if to.addr().is_ipv4() != v.is_ipv4() {
                        cx.err(
                            &vn.referenced,
                            &rf.path("via"),
                            format!("next hop {v} and destination {to} are different IP versions"),
                        );
                        continue;
                    }
                    hops.push((v, rf.path("via"), vn.referenced));
                }
                iface.routes.push(Route { to, via });
            }
        }
        for (hop, hp, at) in hops {
            if iface.addresses.iter().any(|a| a.addr() == hop) {
                cx.err(&at, &hp, format!("{hop} is this gateway's own address: the next hop must be another router"));
            } else if !on_link(&iface, hop) {
                let have = if iface.addresses.is_empty() {
                    "it has no addresses".to_owned()
                } else {
                    let list: Vec<String> = iface.addresses.iter().map(|a| a.to_string()).collect();
                    format!("its addresses: {}", list.join(", "))
                };
                cx.err(&at, &hp, format!("next hop {hop} is not on a connected network of interface '{name}' ({have}): add an address in its network or fix the next hop"));
            }
        }

        if let Some(n) = f.get("mac") {
            iface.mac = with_str(cx, n, &f.path("mac"), "a MAC address such as 02:00:00:00:00:01", p::mac);
        }

        if let Some(n) = f.get("mtu") {
            let mp = f.path("mtu");
            match whole(n).map(u16::try_from) {
                Some(Ok(m)) if m >= 68 => {
                    if m < 1280 && iface.addresses.iter().any(|a| a.addr().is_ipv6()) {
                        cx.err(
                            &n.referenced,
                            &mp,
                            format!(
                                "mtu {m} is below 1280, the minimum for IPv6, and this interface has an IPv6 address"
                            ),
                        );
                    }
                    iface.mtu = m;
                }
                Some(_) => cx.err(&n.referenced, &mp, "mtu must be 68-65535 (Ethernet is 1500)"),
                None => {
                    cx.err(&n.referenced, &mp, format!("expected a whole number for mtu, found {}", n.value.kind()))
                }
            }
        }
        out.list.push(iface);
    }
    out
}

fn on_link(iface: &Interface, hop: IpAddr) -> bool {
    iface.addresses.iter().any(|a| a.contains(&hop))
        || iface.routes.iter().any(|r| r.via.is_none() && r.to.contains(&hop))
}

// --------------------------------------------------------------------- nat

const NAT_KEYS: &[&str] = &["masquerade", "forward", "ports"];
const MASQ_KEYS: &[&str] = &["from", "to"];
const FWD_KEYS: &[&str] = &["on", "protocol", "port", "to"];

fn nat(cx: &mut Ctx, node: Option<&SNode>, ifaces: &Ifaces) -> Nat {
    let mut out = Nat { masquerade: Vec::new(), forward: Vec::new(), ports: PortMode::Random };
    let Some(node) = node else { return out };
    let Some(f) = fields(cx, node, "nat", "nat", NAT_KEYS) else {
        return out;
    };

    if let Some(n) = f.get("masquerade") {
        for (mp, item) in
            list(cx, n, &f.path("masquerade"), "masquerade entries such as {from: inside, to: outside}", false)
        {
            let Some(mf) = fields(cx, item, &mp, "a masquerade entry", MASQ_KEYS) else {
                continue;
            };
            let from = mf
                .require(cx, "from", "name the interface whose hosts are translated, e.g. from: inside")
                .and_then(|n| ifaces.resolve(cx, n, &mf.path("from"), "from"));
            let to_node = mf.require(cx, "to", "name the interface whose address they leave with, e.g. to: outside");
            let to = to_node.and_then(|n| ifaces.resolve(cx, n, &mf.path("to"), "to"));
            let (Some(from), Some(to), Some(to_node)) = (from, to, to_node) else {
                continue;
            };
            let to_name = &ifaces.list[to].name;
            if from == to {
                cx.err(
                    &to_node.referenced,
                    &mf.path("to"),
                    "from and to are the same interface: masquerade translates traffic leaving through another one",
                );
                continue;
            }
            if ifaces.list[to].addresses.is_empty() {
                cx.err(
                    &to_node.referenced,
                    &mf.path("to"),
                    format!("interface '{to_name}' has no address to masquerade to: add one under interfaces.{to_name}.addresses"),
                );
                continue;
            }
            let m = Masquerade { from, to };
            if out.masquerade.contains(&m) {
                cx.err(&item.referenced, &mp, "this masquerade entry repeats an earlier one: remove it");
                continue;
            }
            out.masquerade.push(m);
        }
    }

    if let Some(n) = f.get("forward") {
        let protos: &[(&str, Protocol)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
        for (fp, item) in list(
            cx,
            n,
            &f.path("forward"),
            "forwards such as {on: outside, protocol: tcp, port: 21, to: \"192.0.2.20:21\"}",
            false,
        ) {
            let Some(ff) = fields(cx, item, &fp, "a forward", FWD_KEYS) else {
                continue;
            };
            let on_node = ff.require(cx, "on", "name the interface the service is published on, e.g. on: outside");
            let on = on_node.and_then(|n| ifaces.resolve(cx, n, &ff.path("on"), "on"));
            let protocol = match ff.get("protocol") {
                Some(n) => choice(cx, n, &ff.path("protocol"), "protocol", protos),
                None => Some(Protocol::Tcp),
            };
            let port_ = ff
                .require(cx, "port", "give the published port, e.g. port: 21")
                .and_then(|n| port(cx, n, &ff.path("port")));
            let to_node = ff.require(cx, "to", "give the inside server as ADDRESS:PORT, e.g. to: \"192.0.2.20:21\"");
            let to = to_node.and_then(|n| {
                with_str(cx, n, &ff.path("to"), "ADDRESS:PORT such as \"192.0.2.20:21\"", p::socket_addr)
            });
            let (Some(on), Some(protocol), Some(port), Some(to), Some(on_node)) = (on, protocol, port_, to, on_node)
            else {
                continue;
            };
            let on_iface = &ifaces.list[on];
            // No NAT64: the published address is the `on` interface's own
            // address of the server's IP version.
            if !on_iface.addresses.iter().any(|a| a.addr().is_ipv4() == to.is_ipv4()) {
                let v = if to.is_ipv4() { "IPv4" } else { "IPv6" };
                cx.err(
                    &on_node.referenced,
                    &ff.path("on"),
                    format!(
                        "interface '{}' has no {v} address to publish {to} on: add one under interfaces.{}.addresses",
                        on_iface.name, on_iface.name
                    ),
                );
                continue;
            }
            let fwd = Forward { on, protocol, port, to };
            if out
                .forward
                .iter()
                .any(|o| o.on == on && o.protocol == protocol && o.port == port && o.to.is_ipv4() == to.is_ipv4())
            {
                cx.err(&item.referenced, &fp, format!("port {port} on '{}' is already forwarded for this IP version: each published port goes to one server", on_iface.name));
                continue;
            }
            out.forward.push(fwd);
        }
    }

    if let Some(n) = f.get("ports") {
        if let Some(m) =
            choice(cx, n, &f.path("ports"), "ports", &[("random", PortMode::Random), ("preserve", PortMode::Preserve)])
        {
            out.ports = m;
        }
    }
    out
}

// --------------------------------------------------------------------- ftp

const FTP_KEYS: &[&str] = &[
    "control_ports",
    "active",
    "passive",
    "third_party",
    "pasv_mismatch",
    "privileged_data_ports",
    "zero_address",
    "pinhole_timeout",
    "max_pinholes",
    "strict",
    "deny_commands",
    "on_violation",
];

pub(crate) fn ftp_defaults() -> Ftp {
    Ftp {
        control_ports: vec![21],
        active: Action::Allow,
        passive: Action::Allow,
        third_party: Action::Deny,
        pasv_mismatch: PasvMismatch::Fix,
        privileged_data_ports: Action::Deny,
        zero_address: ZeroAddress::Peer,
        pinhole_timeout: Duration::from_secs(30),
        max_pinholes: 4,
        strict: false,
        deny_commands: Vec::new(),
        on_violation: OnViolation::Reset,
    }
}

fn ftp(cx: &mut Ctx, node: Option<&SNode>) -> Ftp {
    let mut out = ftp_defaults();
    let Some(node) = node else { return out };
    let Some(f) = fields(cx, node, "ftp", "ftp", FTP_KEYS) else {
        return out;
    };

    if let Some(n) = f.get("control_ports") {
        let mut ports = Vec::new();
        for (pp, item) in list(cx, n, &f.path("control_ports"), "ports such as [21]", true) {
            if let Some(p) = port(cx, item, &pp) {
                if !ports.contains(&p) {
                    ports.push(p);
                }
            }
        }
        out.control_ports = ports;
    }
    let mut pick = |key: &str, options: &[(&str, Action)], slot: &mut Action| {
        if let Some(n) = f.get(key) {
            if let Some(v) = choice(cx, n, &f.path(key), key, options) {
                *slot = v;
            }
        }
    };
    pick("active", ALLOW_DENY, &mut out.active);
    pick("passive", ALLOW_DENY, &mut out.passive);
    pick("third_party", DENY_ALLOW, &mut out.third_party);
    pick("privileged_data_ports", DENY_ALLOW, &mut out.privileged_data_ports);

    if let Some(n) = f.get("pasv_mismatch") {
        let o = &[("fix", PasvMismatch::Fix), ("deny", PasvMismatch::Deny), ("allow", PasvMismatch::Allow)];
        if let Some(v) = choice(cx, n, &f.path("pasv_mismatch"), "pasv_mismatch", o) {
            out.pasv_mismatch = v;
        }
    }
    if let Some(n) = f.get("zero_address") {
        let o = &[("peer", ZeroAddress::Peer), ("deny", ZeroAddress::Deny)];
        if let Some(v) = choice(cx, n, &f.path("zero_address"), "zero_address", o) {
            out.zero_address = v;
        }
    }
    if let Some(n) = f.get("on_violation") {
        let o = &[("reset", OnViolation::Reset), ("drop", OnViolation::Drop)];
        if let Some(v) = choice(cx, n, &f.path("on_violation"), "on_violation", o) {
            out.on_violation = v;
        }
    }
    if let Some(n) = f.get("pinhole_timeout") {
        if let Some(d) = duration(cx, n, &f.path("pinhole_timeout")) {
            out.pinhole_timeout = d;
        }
    }
    if let Some(n) = f.get("max_pinholes") {
        let hint = "would refuse every data connection: use at least 1 (to forbid data connections, set active: deny and passive: deny)";
        if let Some(v) = count(cx, n, &f.path("max_pinholes"), "max_pinholes", hint) {
            out.max_pinholes = v;
        }
    }
    if let Some(n) = f.get("strict") {
        if let Some(b) = boolean(cx, n, &f.path("strict"), "strict") {
            out.strict = b;
        }
    }
    if let Some(n) = f.get("deny_commands") {
        for (cp, item) in list(cx, n, &f.path("deny_commands"), "FTP commands such as [SITE, DELE]", true) {
            if let Some(v) = with_str(cx, item, &cp, "an FTP command such as SITE", p::ftp_verb) {
                if !out.deny_commands.contains(&v) {
                    out.deny_commands.push(v);
                }
            }
        }
    }
    out
}

// ------------------------------------------------------------------ policy

const POLICY_KEYS: &[&str] = &["default", "rules", "pickup"];
const RULE_KEYS: &[&str] = &["name", "action", "from", "to", "source", "destination", "protocol", "ports"];

fn policy(cx: &mut Ctx, node: Option<&SNode>, ifaces: &Ifaces) -> Policy {
    let mut out = Policy { default: Action::Deny, rules: Vec::new(), pickup: false };
    let Some(node) = node else { return out };
    let Some(f) = fields(cx, node, "policy", "policy", POLICY_KEYS) else {
        return out;
    };
    if let Some(n) = f.get("default") {
        if let Some(a) = choice(cx, n, &f.path("default"), "default", ALLOW_DENY) {
            out.default = a;
        }
    }
    if let Some(n) = f.get("pickup") {
        if let Some(b) = boolean(cx, n, &f.path("pickup"), "pickup") {
            out.pickup = b;
        }
    }
    let Some(n) = f.get("rules") else { return out };
    let protos: &[(&str, Protocol)] =
        &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp), ("icmp", Protocol::Icmp), ("any", Protocol::Any)];
    let mut names: HashMap<String, String> = HashMap::new();

    for (i, (rp, item)) in list(cx, n, &f.path("rules"), "rules", false).into_iter().enumerate() {
        let Some(rf) = fields(cx, item, &rp, "a rule", RULE_KEYS) else {
            continue;
        };
        let name = match rf.get("name") {
            Some(nn) => with_str(cx, nn, &rf.path("name"), "a rule name", |s| {
                p::name(s).map(|()| s.to_owned()).map_err(|m| format!("rule name {m}"))
            }),
            None => Some(format!("rule-{}", i + 1)),
        };
        let name = name.unwrap_or_else(|| format!("rule-{}", i + 1));
        if let Some(first) = names.get(&name) {
            let at = rf.get("name").map(|n| n.referenced).unwrap_or(item.referenced);
            cx.err(&at, &rf.path("name"), format!("rule name '{name}' is already used by {first}: names appear in drop events, so each must be unique"));
        } else {
            names.insert(name.clone(), rp.clone());
        }
        let action = rf
            .require(cx, "action", "every rule needs action: allow or action: deny")
            .and_then(|n| choice(cx, n, &rf.path("action"), "action", ALLOW_DENY))
            .unwrap_or(Action::Deny);
        let from = rf.get("from").and_then(|n| ifaces.resolve_or_any(cx, n, &rf.path("from"), "from")).flatten();
        let to = rf.get("to").and_then(|n| ifaces.resolve_or_any(cx, n, &rf.path("to"), "to")).flatten();
        let source = rf.get("source").map(|n| networks(cx, n, &rf.path("source"))).unwrap_or_default();
        let destination = rf.get("destination").map(|n| networks(cx, n, &rf.path("destination"))).unwrap_or_default();
        let protocol = rf
            .get("protocol")
            .and_then(|n| choice(cx, n, &rf.path("protocol"), "protocol", protos))
            .unwrap_or(Protocol::Any);
        let mut ports = Vec::new();
        if let Some(pn) = rf.get("ports") {
            let pp = rf.path("ports");
            if matches!(&pn.value, Node::Seq(v) if v.is_empty()) {
                cx.err(&pn.referenced, &pp, "an empty list would match nothing: leave ports out to match every port");
            }
            for (ip, it) in list(cx, pn, &pp, "ports such as [21, \"8000-8100\"]", true) {
                if let Some(r) = port_range(cx, it, &ip) {
                    ports.push(r);
                }
            }
            if !matches!(protocol, Protocol::Tcp | Protocol::Udp) {
                cx.err(
                    &pn.referenced,
                    &pp,
                    "ports apply to tcp and udp only: set protocol: tcp or protocol: udp (write two rules for both)",
                );
            }
        }
        out.rules.push(Rule { name, action, from, to, source, destination, protocol, ports });
    }
    out
}

// ------------------------------------------------------ limits and timeouts

const LIMIT_KEYS: &[&str] = &["max_connections", "max_connections_per_source"];
const TIMEOUT_KEYS: &[&str] = &["tcp_established", "tcp_transitory", "udp", "icmp"];

pub(crate) fn limits_defaults() -> Limits {
    Limits { max_connections: 1_000_000, max_connections_per_source: 20_000 }
}

pub(crate) fn timeouts_defaults() -> Timeouts {
    // Linux conntrack: nf_conntrack_tcp_timeout_established 5 days; the
    // closing states (FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT) and SYN_SENT
    // are 2 minutes; nf_conntrack_udp_timeout and icmp_timeout 30 s.
    Timeouts {
        tcp_established: Duration::from_secs(5 * 86_400),
        tcp_transitory: Duration::from_secs(120),
        udp: Duration::from_secs(30),
        icmp: Duration::from_secs(30),
    }
}

fn limits(cx: &mut Ctx, node: Option<&SNode>) -> Limits {
    let mut out = limits_defaults();
    let Some(node) = node else { return out };
    let Some(f) = fields(cx, node, "limits", "limits", LIMIT_KEYS) else {
        return out;
    };
    let hint = "would refuse every connection: use at least 1";
    if let Some(n) = f.get("max_connections") {
        if let Some(v) = count(cx, n, &f.path("max_connections"), "max_connections", hint) {
            out.max_connections = v;
        }
    }
    if let Some(n) = f.get("max_connections_per_source") {
        if let Some(v) = count(cx, n, &f.path("max_connections_per_source"), "max_connections_per_source", hint) {
            out.max_connections_per_source = v;
        }
    }
    out
}

fn timeouts(cx: &mut Ctx, node: Option<&SNode>) -> Timeouts {
    let mut out = timeouts_defaults();
    let Some(node) = node else { return out };
    let Some(f) = fields(cx, node, "timeouts", "timeouts", TIMEOUT_KEYS) else {
        return out;
    };
    for (key, slot) in [
        ("tcp_established", &mut out.tcp_established),
        ("tcp_transitory", &mut out.tcp_transitory),
        ("udp", &mut out.udp),
        ("icmp", &mut out.icmp),
    ] {
        if let Some(n) = f.get(key) {
            if let Some(d) = duration(cx, n, &f.path(key)) {
                *slot = d;
            }
        }
    }
    out
}

// ------------------------------------------------ admin and log (extension)

const ADMIN_KEYS: &[&str] = &["listen"];
const LOG_KEYS: &[&str] = &["format", "level", "events"];
const LOG_LEVELS: &[(&str, &str)] =
    &[("error", "error"), ("warn", "warn"), ("info", "info"), ("debug", "debug"), ("trace", "trace")];

fn operations(cx: &mut Ctx, admin: Option<&SNode>, log: Option<&SNode>) -> Operations {
    let mut out = Operations::default();
    if let Some(f) = admin.and_then(|n| fields(cx, n, "admin", "admin", ADMIN_KEYS)) {
        if let Some(n) = f.get("listen") {
            // YAML 1.1 readers turn a bare `off` into false; both mean off.
            if matches!(n.value, Node::Bool(false)) {
                out.admin = AdminListen::Off;
            } else if let Some(l) = with_str(cx, n, &f.path("listen"), "a listen address", admin_listen) {
                out.admin = l;
            }
        }
    }
    if let Some(f) = log.and_then(|n| fields(cx, n, "log", "log", LOG_KEYS)) {
        if let Some(n) = f.get("format") {
            let formats = [("text", LogFormat::Text), ("json", LogFormat::Json)];
            if let Some(v) = choice(cx, n, &f.path("format"), "format", &formats) {
                out.log.format = v;
            }
        }
        if let Some(n) = f.get("level") {
            if let Some(v) = choice(cx, n, &f.path("level"), "level", LOG_LEVELS) {
                out.log.level = v.to_owned();
            }
        }
        if let Some(n) = f.get("events") {
            if let Some(v) = string(cx, n, &f.path("events"), "a file path") {
                if v.is_empty() {
                    cx.err(&n.referenced, &f.path("events"), "an empty path: leave 'events' out to write no event log");
                } else {
                    out.log.events = Some(v.into());
                }
            }
        }
    }
    out
}

const DATAPATH_KEYS: &[&str] = &["backend", "workers", "busy_poll_us"];
/// A worker that spins longer than this between frames is just burning a core.
pub const MAX_BUSY_POLL_US: u32 = 10_000;
/// More workers than this gain nothing (one per core) and thin the table.
pub const MAX_WORKERS: u32 = 64;

fn datapath(cx: &mut Ctx, node: &SNode) -> Datapath {
    let mut out = Datapath::default();
    if let Some(f) = fields(cx, node, "datapath", "datapath", DATAPATH_KEYS) {
        if let Some(n) = f.get("backend") {
            let kinds = [("ring", Backend::Ring), ("pnet", Backend::Pnet)];
            if let Some(v) = choice(cx, n, &f.path("backend"), "backend", &kinds) {
                out.backend = v;
            }
        }
        if let Some(n) = f.get("workers") {
            let hint = "at least one worker runs the packet path; leave 'workers' out for 1";
            if let Some(v) = count(cx, n, &f.path("workers"), "workers", hint) {
                if v > MAX_WORKERS {
                    cx.err(
                        &n.referenced,
                        &f.path("workers"),
                        format!("{v} workers: at most {MAX_WORKERS} (one per core is the useful most)"),
                    );
                } else {
                    out.workers = v as u16;
                }
            }
        }
        if let Some(n) = f.get("busy_poll_us") {
            let hint = "0 is allowed: leave 'busy_poll_us' out to always sleep";
            if matches!(n.value, Node::Int(0)) {
                out.busy_poll_us = 0;
            } else if let Some(v) = count(cx, n, &f.path("busy_poll_us"), "busy_poll_us", hint) {
                if v > MAX_BUSY_POLL_US {
                    cx.err(&n.referenced, &f.path("busy_poll_us"), format!("{v} µs: at most {MAX_BUSY_POLL_US}"));
                } else {
                    out.busy_poll_us = v;
                }
            }
        }
    }
    out
}

/// `unix:/run/ftpgate/ftpgate.sock`, `127.0.0.1:9180`, `"[::1]:9180"` or `off`.
pub(crate) fn admin_listen(text: &str) -> Result<AdminListen, String> {
    let t = text.trim();
    if t == "off" {
        return Ok(AdminListen::Off);
    }
    if let Some(path) = t.strip_prefix("unix:") {
        if !path.starts_with('/') {
            return Err(format!("'{text}': the socket path must be absolute, e.g. unix:/run/ftpgate/ftpgate.sock"));
        }
        return Ok(AdminListen::Unix(path.into()));
    }
    match t.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => Ok(AdminListen::Tcp(a)),
        Ok(a) => Err(format!(
            "{a} is not a loopback address: the admin endpoint has no authentication, so it listens on \
             127.0.0.1, [::1] or a Unix socket (put a reverse proxy in front to expose it)"
        )),
        Err(_) => {
            Err(format!("'{text}' is not a listen address: write unix:/PATH, 127.0.0.1:PORT, \"[::1]:PORT\" or off"))
        }
    }
}
