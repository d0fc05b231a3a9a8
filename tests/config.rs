//! The YAML configuration: every shipped file compiles, the built-in
//! default has the properties the contract promises, defaults match the
//! contract, and bad files produce every problem at the right place.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use ftpgate::config::{
    self, Action, Config, ConfigError, Forward, Masquerade, OnViolation, PasvMismatch, PortMode, Protocol, ZeroAddress,
};
use ipnet::IpNet;

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn fixture(name: &str) -> Result<Config, Vec<ConfigError>> {
    config::load(&Path::new("tests/data/config").join(name))
}

fn errors(text: &str) -> Vec<ConfigError> {
    match config::from_str(text, "t.yaml") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e,
    }
}

/// Exactly one error; returns it.
fn one_error(text: &str) -> ConfigError {
    let e = errors(text);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap()
}

fn ok(text: &str) -> Config {
    config::from_str(text, "t.yaml").unwrap_or_else(|e| panic!("unexpected errors: {e:#?}"))
}

/// (line, column, path) of each error, for exact comparisons.
fn places(e: &[ConfigError]) -> Vec<(usize, usize, &str)> {
    e.iter().map(|e| (e.line, e.column, e.path.as_str())).collect()
}

const TWO: &str =
    "interfaces:\n  inside:\n    addresses: [192.0.2.1/24]\n  outside:\n    addresses: [198.51.100.1/24]\n";

// ------------------------------------------------------------ shipped files

#[test]
fn every_file_in_rules_compiles() {
    let mut seen = 0;
    for entry in std::fs::read_dir("rules").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            if let Err(e) = config::load(&path) {
                panic!(
                    "{} does not compile:\n{}",
                    path.display(),
                    e.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n")
                );
            }
            seen += 1;
        }
    }
    assert!(seen >= 5, "expected the five shipped files, found {seen}");
}

#[test]
fn builtin_default_has_the_contract_properties() {
    let c = config::builtin_default();
    assert_eq!(c, config::load(Path::new("rules/default.yaml")).unwrap());
    let names: Vec<&str> = c.interfaces.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["inside", "outside"]);
    assert!(c.nat.masquerade.is_empty() && c.nat.forward.is_empty(), "no NAT");
    assert_eq!(c.policy.default, Action::Allow);
    assert!(c.policy.rules.is_empty());

    // Every defence on.
    let f = &c.ftp;
    assert_eq!(f.control_ports, [21]);
    assert_eq!(f.third_party, Action::Deny);
    assert_eq!(f.privileged_data_ports, Action::Deny);
    assert_eq!(f.pasv_mismatch, PasvMismatch::Fix);
    assert_eq!(f.zero_address, ZeroAddress::Peer);
    assert_eq!(f.on_violation, OnViolation::Reset);

    // inside: private, shared, loopback, link-local, ULA and the inside
    // documentation ranges, all on-link.
    let inside = &c.interfaces[0];
    let want = [
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "192.0.2.0/24",
        "fc00::/7",
        "fe80::/10",
        "::1/128",
        "2001:db8:1::/48",
    ];
    let got: Vec<IpNet> = inside.routes.iter().map(|r| r.to).collect();
    assert_eq!(got, want.map(net));
    assert!(inside.routes.iter().all(|r| r.via.is_none()));
    assert!(inside.addresses.is_empty() && inside.gateway.is_none());

    // outside: on-link default routes for both versions.
    let outside = &c.interfaces[1];
    let got: Vec<IpNet> = outside.routes.iter().map(|r| r.to).collect();
    assert_eq!(got, [net("0.0.0.0/0"), net("::/0")]);
    assert!(outside.routes.iter().all(|r| r.via.is_none()));

    // The lab's outside ranges are not claimed by inside.
    for a in ["198.51.100.20", "203.0.113.5", "2001:db8:2::20"] {
        assert!(!inside.routes.iter().any(|r| r.to.contains(&ip(a))), "{a} must route outside");
    }
    for a in ["192.0.2.10", "10.1.2.3", "2001:db8:1::10", "fd00::1"] {
        assert!(inside.routes.iter().any(|r| r.to.contains(&ip(a))), "{a} must route inside");
    }
}

#[test]
fn lab_masquerade_matches_the_lab() {
    let c = config::load(Path::new("rules/lab-masquerade.yaml")).unwrap();
    let (inside, outside) = (&c.interfaces[0], &c.interfaces[1]);
    assert_eq!(inside.device.as_deref(), Some("veth-gw-in"));
    assert_eq!(outside.device.as_deref(), Some("veth-gw-out"));
    assert_eq!(inside.addresses, [net("192.0.2.1/24"), net("2001:db8:1::1/64")]);
    assert_eq!(outside.addresses, [net("198.51.100.1/24"), net("2001:db8:2::1/64")]);
    assert_eq!(c.nat.masquerade, [Masquerade { from: 0, to: 1 }]);
    assert_eq!(c.policy.default, Action::Deny);
    assert_eq!(c.interface_for_device("veth-gw-out"), Some(1));
    assert_eq!(c.interface_for_device("inside"), Some(0));
    assert_eq!(c.interface_for_device("eth9"), None);
}

#[test]
fn published_files_name_the_inside_server_in_rules() {
    for file in ["rules/lab-published.yaml", "rules/ftp-server-published.yaml"] {
        let c = config::load(Path::new(file)).unwrap();
        let outside = c.interface_index("outside").unwrap();
        let inside = c.interface_index("inside").unwrap();
        assert!(c.nat.forward.contains(&Forward {
            on: outside,
            protocol: Protocol::Tcp,
            port: 21,
            to: "192.0.2.20:21".parse().unwrap()
        }));
        let publish = c.policy.rules.iter().find(|r| r.name == "publish-ftp").unwrap();
        assert_eq!((publish.from, publish.to), (Some(outside), Some(inside)));
        assert!(publish.destination.contains(&net("192.0.2.20/32")));
        assert_eq!(publish.ports, [(21, 21)]);
    }
}

// ----------------------------------------------------------------- defaults

#[test]
fn defaults_match_the_contract() {
    let c = ok("interfaces:\n  inside:\n");
    let i = &c.interfaces[0];
    assert_eq!((i.name.as_str(), i.device.as_deref(), i.mtu, i.mac), ("inside", None, 1500, None));
    assert!(i.addresses.is_empty() && i.routes.is_empty() && i.gateway.is_none());
    assert_eq!(c.nat.ports, PortMode::Random);
    assert!(c.nat.masquerade.is_empty() && c.nat.forward.is_empty());
    let f = &c.ftp;
    assert_eq!(f.control_ports, [21]);
    assert_eq!((f.active, f.passive, f.third_party), (Action::Allow, Action::Allow, Action::Deny));
    assert_eq!(f.pasv_mismatch, PasvMismatch::Fix);
    assert_eq!(f.privileged_data_ports, Action::Deny);
    assert_eq!(f.zero_address, ZeroAddress::Peer);
    assert_eq!(f.pinhole_timeout, Duration::from_secs(30));
    assert_eq!(f.max_pinholes, 4);
    assert!(!f.strict);
    assert!(f.deny_commands.is_empty());
    assert_eq!(f.on_violation, OnViolation::Reset);
    assert_eq!(c.policy.default, Action::Deny);
    assert!(c.policy.rules.is_empty());
    assert_eq!(c.limits.max_connections, 1_000_000);
    assert_eq!(c.limits.max_connections_per_source, 20_000);
    assert_eq!(c.timeouts.tcp_established, Duration::from_secs(5 * 86_400));
    assert_eq!(c.timeouts.tcp_transitory, Duration::from_secs(120));
    assert_eq!(c.timeouts.udp, Duration::from_secs(30));
    assert_eq!(c.timeouts.icmp, Duration::from_secs(30));
    assert_eq!(c.ftp, config::Ftp::default());
    assert_eq!(c.limits, config::Limits::default());
    assert_eq!(c.timeouts, config::Timeouts::default());
}

#[test]
fn the_contract_example_compiles_to_what_it_says() {
    let c = fixture("contract.yaml").unwrap();
    // Writing every default explicitly changes nothing.
    assert_eq!(c.ftp, config::Ftp::default());
    assert_eq!(c.limits, config::Limits::default());
    assert_eq!(c.timeouts, config::Timeouts::default());
    assert_eq!(c.interfaces[1].gateway, Some(ip("198.51.100.254")));
    assert_eq!(c.nat.masquerade, [Masquerade { from: 0, to: 1 }]);
    assert_eq!(
        c.nat.forward,
        [Forward { on: 1, protocol: Protocol::Tcp, port: 21, to: "192.0.2.20:21".parse().unwrap() }]
    );
    let r = &c.policy.rules[0];
    assert_eq!((r.name.as_str(), r.action, r.from, r.to), ("lan-to-ftp", Action::Allow, Some(0), Some(1)));
    assert_eq!(r.source, [net("192.0.2.0/24")]);
    assert!(r.destination.is_empty(), "any is the empty list");
    assert_eq!(r.protocol, Protocol::Tcp);
    assert_eq!(r.ports, [(21, 21), (8000, 8100)]);
}

#[test]
fn every_value_can_be_changed() {
    let c = ok(&format!(
        "{TWO}    mac: 02:00:00:00:00:02\n    mtu: 9000\n    routes: [{{to: 203.0.113.0/24, via: 198.51.100.9}}, {{to: 100.64.0.0/10}}]\n\
         nat:\n  ports: preserve\n\
         ftp:\n  control_ports: [21, \"2121\"]\n  active: deny\n  passive: deny\n  third_party: allow\n  pasv_mismatch: deny\n  \
         privileged_data_ports: allow\n  zero_address: deny\n  pinhole_timeout: 1500ms\n  max_pinholes: 1\n  strict: true\n  \
         deny_commands: [site, DELE]\n  on_violation: drop\n\
         policy:\n  default: allow\n  rules:\n    - {{action: deny, protocol: udp, ports: 53}}\n    - {{action: deny, protocol: icmp, source: 203.0.113.7}}\n\
         limits: {{max_connections: 10, max_connections_per_source: 2}}\n\
         timeouts: {{tcp_established: 1h, tcp_transitory: 90, udp: 1m, icmp: 5s}}\n"
    ));
    let o = &c.interfaces[1];
    assert_eq!(o.mac, Some([2, 0, 0, 0, 0, 2]));
    assert_eq!(o.mtu, 9000);
    assert_eq!(o.routes[0].via, Some(ip("198.51.100.9")));
    assert_eq!(o.routes[1].via, None);
    assert_eq!(c.nat.ports, PortMode::Preserve);
    let f = &c.ftp;
    assert_eq!(f.control_ports, [21, 2121]);
    assert_eq!(
        (f.active, f.passive, f.third_party, f.privileged_data_ports),
        (Action::Deny, Action::Deny, Action::Allow, Action::Allow)
    );
    assert_eq!(
        (f.pasv_mismatch, f.zero_address, f.on_violation),
        (PasvMismatch::Deny, ZeroAddress::Deny, OnViolation::Drop)
    );
    assert_eq!(f.pinhole_timeout, Duration::from_millis(1500));
    assert_eq!(f.max_pinholes, 1);
    assert!(f.strict);
    assert_eq!(f.deny_commands, ["SITE", "DELE"]);
    assert_eq!(c.policy.default, Action::Allow);
    // Unnamed rules are named by position, 1-based.
    assert_eq!(c.policy.rules[0].name, "rule-1");
    assert_eq!(c.policy.rules[0].ports, [(53, 53)]);
    assert_eq!(c.policy.rules[1].source, [net("203.0.113.7/32")]);
    assert_eq!(c.policy.rules[1].protocol, Protocol::Icmp);
    assert_eq!((c.limits.max_connections, c.limits.max_connections_per_source), (10, 2));
    assert_eq!(c.timeouts.tcp_established, Duration::from_secs(3600));
    assert_eq!(c.timeouts.tcp_transitory, Duration::from_secs(90), "a bare number is seconds");
    assert_eq!(c.timeouts.udp, Duration::from_secs(60));
    assert_eq!(c.timeouts.icmp, Duration::from_secs(5));
}

// ------------------------------------------------------------ the fixtures

#[test]
fn fixture_unknown_key() {
    let e = fixture("unknown_key.yaml").unwrap_err();
    assert_eq!(places(&e), [(6, 3, "ftp.stricct")]);
    assert!(e[0].message.contains("unknown key 'stricct'"), "{}", e[0].message);
    assert!(e[0].message.contains("did you mean 'strict'?"), "{}", e[0].message);
    assert!(e[0].file.ends_with("tests/data/config/unknown_key.yaml"));
    assert!(e[0].to_string().starts_with(&format!("{}:6:3: unknown key 'stricct'", e[0].file)));
    assert!(e[0].to_string().ends_with(" (ftp.stricct)"));
}

#[test]
fn fixture_bad_cidr() {
    let e = fixture("bad_cidr.yaml").unwrap_err();
    assert_eq!(places(&e), [(10, 30, "policy.rules[0].source[1]")]);
    assert!(e[0].message.contains("'10.0.0.0/33' is not a CIDR"), "{}", e[0].message);
}

#[test]
fn fixture_unknown_interface() {
    let e = fixture("unknown_interface.yaml").unwrap_err();
    assert_eq!(places(&e), [(10, 13, "policy.rules[0].from")]);
    assert!(e[0].message.contains("unknown interface 'insde'"), "{}", e[0].message);
    assert!(e[0].message.contains("did you mean 'inside'?"), "{}", e[0].message);
}

#[test]
fn fixture_many_problems_reports_them_all_in_file_order() {
    let e = fixture("many_problems.yaml").unwrap_err();
    assert_eq!(
        places(&e),
        [
            (4, 5, "interfaces.inside.colour"),
            (9, 26, "nat.masquerade[0].to"),
            (11, 35, "nat.forward[0].to"),
            (13, 20, "ftp.pinhole_timeout"),
            (14, 17, "ftp.max_pinholes"),
            (16, 12, "policy.default"),
            (21, 19, "policy.rules[0].ports[1]"),
            (21, 32, "policy.rules[0].ports[2]"),
            (22, 13, "policy.rules[1].name"),
            (25, 8, "timeouts.udp"),
        ]
    );
    let msgs: Vec<&str> = e.iter().map(|e| e.message.as_str()).collect();
    assert!(msgs[1].contains("unknown interface 'dmz'"));
    assert!(msgs[2].contains("has no port"));
    assert!(msgs[3].contains("unknown unit 'seconds'"));
    assert!(msgs[4].contains("max_pinholes: 0"));
    assert_eq!(msgs[5], "unknown value 'permit' for default: expected allow | deny");
    assert!(msgs[6].contains("reversed"));
    assert!(msgs[7].contains("port 0"));
    assert!(msgs[8].contains("'web' is already used by policy.rules[0]"));
    assert!(msgs[9].contains("zero"));
}

// ---------------------------------------------------------- other problems

#[test]
fn empty_files_and_missing_interfaces() {
    for text in ["", "# nothing\n", "\n\n"] {
        let e = one_error(text);
        assert_eq!((e.line, e.column, e.path.as_str()), (1, 1, "interfaces"));
        assert!(e.message.contains("empty"), "{}", e.message);
    }
    let e = one_error("ftp:\n  strict: true\n");
    assert_eq!((e.line, e.column, e.path.as_str()), (1, 1, "interfaces"));
    let e = one_error("ftp: {}\ninterfaces:\n");
    assert_eq!((e.line, e.column, e.path.as_str()), (2, 1, "interfaces"));
    let e = one_error("interfaces: {}\n");
    assert_eq!((e.line, e.path.as_str()), (1, "interfaces"));
    let e = one_error("- a\n- b\n");
    assert!(e.message.contains("found a list"), "{}", e.message);
    let e = one_error("interfaces: [inside, outside]\n");
    assert!(e.message.contains("mapping of interface names"), "{}", e.message);
}

#[test]
fn yaml_syntax_errors_have_a_place_and_no_key_path() {
    let e = one_error("interfaces:\n  inside:\n    addresses: [192.0.2.1/24\n");
    assert_eq!(e.path, "");
    assert!(e.line >= 3);
    assert!(!e.to_string().ends_with(')'), "no empty key path: {e}");
    // A duplicate key: two interfaces with the same name.
    let e = one_error("interfaces:\n  inside: {}\n  inside: {}\n");
    assert_eq!((e.line, e.column), (3, 3));
    assert!(e.message.contains("'inside' appears twice"), "{}", e.message);
    let e = one_error("interfaces:\n  inside: {}\n---\ninterfaces:\n  outside: {}\n");
    assert!(e.message.contains("more than one YAML document"), "{}", e.message);
}

#[test]
fn wrong_types_are_reported_where_they_are() {
    let e = errors(&format!(
        "{TWO}ftp:\n  strict: maybe\n  max_pinholes: four\n  control_ports: {{a: 1}}\npolicy:\n  rules:\n    name: x\n"
    ));
    assert_eq!(
        places(&e),
        [(7, 11, "ftp.strict"), (8, 17, "ftp.max_pinholes"), (9, 18, "ftp.control_ports"), (12, 5, "policy.rules")]
    );
    assert!(e[0].message.contains("expected true or false"));
    assert!(e[1].message.contains("expected a whole number"));
    assert!(e[2].message.contains("found a mapping"));
    assert!(e[3].message.contains("expected rules (a list)"));
}

#[test]
fn unknown_enum_values_list_the_allowed_ones() {
    let cases = [
        ("policy:\n  rules:\n    - {action: permit}\n", "unknown value 'permit' for action: expected allow | deny"),
        ("ftp:\n  third_party: maybe\n", "unknown value 'maybe' for third_party: expected deny | allow"),
        ("ftp:\n  pasv_mismatch: rewrite\n", "unknown value 'rewrite' for pasv_mismatch: expected fix | deny | allow"),
        ("ftp:\n  zero_address: any\n", "unknown value 'any' for zero_address: expected peer | deny"),
        ("ftp:\n  on_violation: block\n", "unknown value 'block' for on_violation: expected reset | drop"),
        ("nat:\n  ports: keep\n", "unknown value 'keep' for ports: expected random | preserve"),
        (
            "policy:\n  rules:\n    - {action: deny, protocol: sctp}\n",
            "unknown value 'sctp' for protocol: expected tcp | udp | icmp | any",
        ),
        (
            "nat:\n  forward:\n    - {on: outside, protocol: icmp, port: 21, to: \"192.0.2.20:21\"}\n",
            "unknown value 'icmp' for protocol: expected tcp | udp",
        ),
        ("ftp:\n  active: alow\n", "unknown value 'alow' for active: expected allow | deny (did you mean 'allow'?)"),
    ];
    for (tail, msg) in cases {
        let e = one_error(&format!("{TWO}{tail}"));
        assert_eq!(e.message, msg);
    }
}

#[test]
fn addresses_and_routes_are_checked() {
    let bad = [
        ("    addresses: [192.0.2.0/24]\n", "network address"),
        ("    addresses: [\"192.0.2.1\"]\n    gateway: 192.0.2.254\n", "not on a connected network"),
        ("    addresses: [198.51.100.1/24]\n", "already on interface 'inside'"),
        ("    gateway: 192.0.2.254\n", "it has no addresses"),
        ("    addresses: [192.0.2.2/24]\n    gateway: 192.0.2.2\n", "own address"),
        ("    addresses: [192.0.2.2/24]\n    gateway: 192.0.2.0/24\n", "drop the /prefix"),
        ("    routes: [{to: 203.0.113.1/24}]\n", "host bits"),
        ("    routes: [{via: 192.0.2.9}]\n", "missing 'to'"),
        ("    addresses: [192.0.2.2/24]\n    routes: [{to: \"::/0\", via: 192.0.2.9}]\n", "different IP versions"),
        ("    mac: 01:00:5e:00:00:01\n", "multicast"),
        ("    mtu: 40\n", "68-65535"),
        ("    addresses: [\"2001:db8:9::1/64\"]\n    mtu: 1000\n", "1280"),
        ("    device: eth0:1\n", "not a Linux interface name"),
    ];
    for (body, want) in bad {
        let text = format!("interfaces:\n  inside:\n    addresses: [198.51.100.1/24]\n  other:\n{body}");
        let e = errors(&text);
        assert!(e.iter().any(|e| e.message.contains(want)), "{body:?}: want {want:?}, got {e:#?}");
    }
    // Same device twice; `any` as an interface name.
    let e = one_error("interfaces:\n  a: {device: eth0}\n  b: {device: eth0}\n");
    assert_eq!((e.line, e.column, e.path.as_str()), (3, 15, "interfaces.b.device"));
    let e = one_error("interfaces:\n  any: {}\n");
    assert_eq!((e.line, e.column), (2, 3));
    // A next hop reachable through an on-link route is fine.
    ok("interfaces:\n  outside:\n    routes: [{to: 203.0.113.0/24}, {to: 0.0.0.0/0, via: 203.0.113.1}]\n");
}

#[test]
fn nat_is_checked_against_the_interfaces() {
    let no_addr = "interfaces:\n  inside:\n    addresses: [192.0.2.1/24]\n  outside: {}\n";
    let e = one_error(&format!("{no_addr}nat:\n  masquerade:\n    - {{from: inside, to: outside}}\n"));
    assert_eq!((e.line, e.column, e.path.as_str()), (7, 26, "nat.masquerade[0].to"));
    assert!(e.message.contains("interface 'outside' has no address to masquerade to"), "{}", e.message);

    let e =
        one_error(&format!("{TWO}nat:\n  forward:\n    - {{on: outside, port: 21, to: \"[2001:db8:1::20]:21\"}}\n"));
    assert!(e.message.contains("no IPv6 address to publish"), "{}", e.message);

    let e = one_error(&format!("{TWO}nat:\n  masquerade: [{{from: inside, to: inside}}]\n"));
    assert!(e.message.contains("same interface"), "{}", e.message);
    let e = one_error(&format!("{TWO}nat:\n  masquerade: [{{from: any, to: outside}}]\n"));
    assert!(e.message.contains("not any"), "{}", e.message);
    let e = one_error(&format!("{TWO}nat:\n  masquerade: [{{from: inside}}]\n"));
    assert_eq!(e.path, "nat.masquerade[0].to");

    let fwd = "{on: outside, port: 21, to: \"192.0.2.20:21\"}";
    let e = one_error(&format!("{TWO}nat:\n  forward: [{fwd}, {fwd}]\n"));
    assert!(e.message.contains("already forwarded"), "{}", e.message);
    for to in ["\"192.0.2.20\"", "\"192.0.2.20:0\"", "server:21", "21"] {
        let e = one_error(&format!("{TWO}nat:\n  forward: [{{on: outside, port: 21, to: {to}}}]\n"));
        assert_eq!(e.path, "nat.forward[0].to", "{to}");
    }
    let e = one_error(&format!("{TWO}nat:\n  forward: [{{on: outside, port: 70000, to: \"192.0.2.20:21\"}}]\n"));
    assert_eq!(e.path, "nat.forward[0].port");
    // The default protocol of a forward is tcp.
    let c = ok(&format!("{TWO}nat:\n  forward: [{fwd}]\n"));
    assert_eq!(c.nat.forward[0].protocol, Protocol::Tcp);
}

#[test]
fn policy_rules_are_checked() {
    let cases = [
        ("- {action: allow, ports: [21]}", "policy.rules[0].ports", "ports apply to tcp and udp only"),
        ("- {action: allow, protocol: tcp, ports: []}", "policy.rules[0].ports", "empty list"),
        ("- {action: allow, source: []}", "policy.rules[0].source", "empty list"),
        ("- {action: allow, source: [any, 10.0.0.0/8]}", "policy.rules[0].source[0]", "cannot be combined"),
        ("- {action: allow, destination: 192.0.2.1/24}", "policy.rules[0].destination", "host bits"),
        ("- {from: inside}", "policy.rules[0].action", "missing 'action'"),
        ("- {action: allow, name: \"lan out\"}", "policy.rules[0].name", "may contain only"),
        ("- {action: allow, to: wan}", "policy.rules[0].to", "unknown interface 'wan'"),
        ("- {action: allow, protocol: tcp, ports: [\"21-\"]}", "policy.rules[0].ports[0]", "not a port number"),
        ("- {action: allow, protocol: tcp, ports: [65536]}", "policy.rules[0].ports[0]", "out of range"),
        ("- {action: allow, when: always}", "policy.rules[0].when", "unknown key 'when' in a rule"),
    ];
    for (rule, path, want) in cases {
        let e = one_error(&format!("{TWO}policy:\n  rules:\n    {rule}\n"));
        assert_eq!(e.path, path, "{rule}");
        assert!(e.message.contains(want), "{rule}: {}", e.message);
    }
    let c = ok(&format!(
        "{TWO}policy:\n  rules:\n    - {{action: allow, from: any, to: any, source: [any], destination: any}}\n"
    ));
    let r = &c.policy.rules[0];
    assert_eq!((r.from, r.to, r.source.len(), r.destination.len(), r.protocol), (None, None, 0, 0, Protocol::Any));
}

#[test]
fn durations_parse_and_reject() {
    let good =
        [("30s", 30_000), ("5d", 432_000_000), ("1500ms", 1500), ("2m", 120_000), ("3h", 10_800_000), ("45", 45_000)];
    for (text, ms) in good {
        let c = ok(&format!("{TWO}ftp:\n  pinhole_timeout: {text}\n"));
        assert_eq!(c.ftp.pinhole_timeout, Duration::from_millis(ms), "{text}");
    }
    for text in ["0", "0s", "-5s", "1.5s", "1.5", "30 sec", "5w", "s", "true", "[30s]"] {
        let e = one_error(&format!("{TWO}timeouts:\n  udp: {text}\n"));
        assert_eq!((e.line, e.column, e.path.as_str()), (7, 8, "timeouts.udp"), "{text}");
    }
}

#[test]
fn port_ranges_parse_and_reject() {
    let rule = |ports: &str| {
        format!("{TWO}policy:\n  rules:\n    - action: allow\n      protocol: tcp\n      ports: {ports}\n")
    };
    let c = ok(&rule("[21, \"8000-8100\", \"443\", 65535, \"1-1\"]"));
    assert_eq!(c.policy.rules[0].ports, [(21, 21), (8000, 8100), (443, 443), (65535, 65535), (1, 1)]);
    assert_eq!(ok(&rule("8000-8100")).policy.rules[0].ports, [(8000, 8100)]);
    for bad in ["[0]", "[65536]", "[\"8100-8000\"]", "[\"0-10\"]", "[\"1-70000\"]", "[\"a-b\"]", "[-1]", "[21.5]"] {
        let e = one_error(&rule(bad));
        assert_eq!((e.line, e.path.as_str()), (10, "policy.rules[0].ports[0]"), "{bad}: {e}");
    }
    // control_ports take single ports only.
    let e = one_error(&format!("{TWO}ftp:\n  control_ports: [\"21-22\"]\n"));
    assert!(e.message.contains("single port"), "{}", e.message);
}

#[test]
fn limits_and_ftp_counts_reject_zero() {
    let e = one_error(&format!("{TWO}limits:\n  max_connections: 0\n"));
    assert_eq!((e.line, e.column, e.path.as_str()), (7, 20, "limits.max_connections"));
    let e = one_error(&format!("{TWO}ftp:\n  max_pinholes: 0\n"));
    assert_eq!((e.line, e.column, e.path.as_str()), (7, 17, "ftp.max_pinholes"));
    let e = one_error(&format!("{TWO}ftp:\n  deny_commands: [\"SITE CHMOD\"]\n"));
    assert_eq!(e.path, "ftp.deny_commands[0]");
}

#[test]
fn load_reports_an_unreadable_file_at_1_1() {
    let e = config::load(Path::new("tests/data/config/no-such-file.yaml")).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].line, e[0].column), (1, 1));
    assert!(e[0].message.contains("cannot read"), "{}", e[0].message);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bin.yaml");
    std::fs::write(&p, b"interfaces:\n  in\xffside: {}\n").unwrap();
    let e = config::load(&p).unwrap_err();
    assert!(e[0].message.contains("not UTF-8"), "{}", e[0].message);
}

#[test]
fn each_problem_is_one_line() {
    let e = one_error("interfaces:\n  inside:\n    \"dev\\nice\": eth0\n");
    assert_eq!(e.path, "interfaces.inside.dev\\nice");
    assert!(!e.to_string().contains('\n'), "{e}");
}

#[test]
fn anchors_and_aliases_work() {
    let c = ok(&format!(
        "{TWO}policy:\n  rules:\n    - {{name: a, action: allow, source: &lan [192.0.2.0/24, 10.0.0.0/8]}}\n    - {{name: b, action: deny, destination: *lan}}\n"
    ));
    assert_eq!(c.policy.rules[0].source, c.policy.rules[1].destination);
    assert_eq!(c.policy.rules[1].destination.len(), 2);
}

#[test]
fn hostile_input_does_not_panic() {
    // Alias expansion ("billion laughs"), deep nesting, odd scalars.
    let laughs = "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n\
                  d: &d [*c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e]\n";
    assert!(config::from_str(laughs, "t").is_err());
    let deep = format!("interfaces: {}{}\n", "[".repeat(5000), "]".repeat(5000));
    assert!(config::from_str(&deep, "t").is_err());
    for text in [
        "interfaces:\n  inside:\n    mtu: 99999999999999999999999999999999999999999\n",
        "interfaces: !!binary aGk=\n",
        "? [a]\n: b\n",
        "\t\t",
        "interfaces:\n  inside: .nan\n",
    ] {
        let _ = config::from_str(text, "t");
    }
}

#[test]
fn datapath_section_sets_backend_and_workers_and_locates_errors() {
    use ftpgate::config::{from_str_with_operations, Backend};
    let base = "interfaces:\n  a:\n    addresses: [192.0.2.1/24]\n";
    let (_, ops) = from_str_with_operations(base, "t.yaml").unwrap();
    assert_eq!((ops.datapath.backend, ops.datapath.workers), (Backend::Ring, 1), "defaults");
    let (_, ops) = from_str_with_operations(
        &format!("{base}datapath:\n  backend: pnet\n  workers: 4\n  busy_poll_us: 50\n"),
        "t.yaml",
    )
    .unwrap();
    assert_eq!((ops.datapath.backend, ops.datapath.workers, ops.datapath.busy_poll_us), (Backend::Pnet, 4, 50));
    let (_, ops) = from_str_with_operations(&format!("{base}datapath: {{busy_poll_us: 0}}\n"), "t.yaml").unwrap();
    assert_eq!(ops.datapath.busy_poll_us, 0);
    let e = from_str_with_operations(&format!("{base}datapath: {{busy_poll_us: 20000}}\n"), "t.yaml").unwrap_err();
    assert!(e[0].message.contains("at most 10000"), "{e:?}");
    let e =
        from_str_with_operations(&format!("{base}datapath:\n  workers: 0\n  backend: xdp\n  worker: 2\n"), "t.yaml")
            .unwrap_err();
    let got: Vec<(usize, usize, &str)> = e.iter().map(|e| (e.line, e.column, e.path.as_str())).collect();
    assert!(got.contains(&(5, 12, "datapath.workers")), "{e:?}");
    assert!(got.contains(&(6, 12, "datapath.backend")), "{e:?}");
    assert!(e.iter().any(|e| e.line == 7 && e.message.contains("worker")), "unknown key reported: {e:?}");
    let e = from_str_with_operations(&format!("{base}datapath: {{workers: 65}}\n"), "t.yaml").unwrap_err();
    assert!(e[0].message.contains("at most 64"), "{e:?}");
}
