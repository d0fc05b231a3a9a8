//! Policy: the first rule that matches a new connection decides; otherwise the
//! default. Rules see the connection after destination NAT and before source
//! NAT (nftables' forward chain). Replies, NAT returns and FTP pinholes never
//! reach this: the connection table admits them.

use std::net::IpAddr;

use crate::config::{Action, IfIndex, Policy, Protocol, Rule};
use crate::wire::{PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP};

/// What the policy sees of a new connection.
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub from: IfIndex,
    pub to: IfIndex,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub dport: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    /// Index of the deciding rule; None for the default.
    pub rule: Option<usize>,
}

pub fn evaluate(policy: &Policy, f: &Flow) -> Decision {
    match policy.rules.iter().position(|r| matches(r, f)) {
        Some(i) => Decision { action: policy.rules[i].action, rule: Some(i) },
        None => Decision { action: policy.default, rule: None },
    }
}

fn matches(r: &Rule, f: &Flow) -> bool {
    if r.from.is_some_and(|i| i != f.from) || r.to.is_some_and(|i| i != f.to) {
        return false;
    }
    let proto_ok = match r.protocol {
        Protocol::Any => true,
        Protocol::Tcp => f.proto == PROTO_TCP,
        Protocol::Udp => f.proto == PROTO_UDP,
        Protocol::Icmp => f.proto == PROTO_ICMP || f.proto == PROTO_ICMPV6,
    };
    if !proto_ok {
        return false;
    }
    if !r.source.is_empty() && !r.source.iter().any(|n| n.contains(&f.src)) {
        return false;
    }
    if !r.destination.is_empty() && !r.destination.iter().any(|n| n.contains(&f.dst)) {
        return false;
    }
    if !r.ports.is_empty() {
        // Ports only mean something for TCP and UDP; a port rule never matches ICMP.
        if f.proto != PROTO_TCP && f.proto != PROTO_UDP {
            return false;
        }
        if !r.ports.iter().any(|&(lo, hi)| (lo..=hi).contains(&f.dport)) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, action: Action) -> Rule {
        Rule {
            name: name.into(),
            action,
            from: None,
            to: None,
            source: vec![],
            destination: vec![],
            protocol: Protocol::Any,
            ports: vec![],
        }
    }

    fn flow(dport: u16, proto: u8) -> Flow {
        Flow { from: 0, to: 1, src: "192.0.2.10".parse().unwrap(), dst: "198.51.100.20".parse().unwrap(), proto, dport }
    }

    #[test]
    fn first_match_wins_and_default_applies() {
        let mut ftp = rule("ftp", Action::Allow);
        ftp.protocol = Protocol::Tcp;
        ftp.ports = vec![(21, 21), (8000, 8100)];
        ftp.source = vec!["192.0.2.0/24".parse().unwrap()];
        let mut deny_all_tcp = rule("no-tcp", Action::Deny);
        deny_all_tcp.protocol = Protocol::Tcp;
        let p = Policy { default: Action::Allow, rules: vec![ftp, deny_all_tcp], pickup: false };
        assert_eq!(evaluate(&p, &flow(21, PROTO_TCP)), Decision { action: Action::Allow, rule: Some(0) });
        assert_eq!(evaluate(&p, &flow(8050, PROTO_TCP)).rule, Some(0));
        assert_eq!(evaluate(&p, &flow(22, PROTO_TCP)), Decision { action: Action::Deny, rule: Some(1) });
        assert_eq!(evaluate(&p, &flow(53, PROTO_UDP)), Decision { action: Action::Allow, rule: None });
    }

    #[test]
    fn interface_source_and_port_rules_exclude() {
        let mut r = rule("in-only", Action::Allow);
        r.from = Some(1);
        let p = Policy { default: Action::Deny, rules: vec![r], pickup: false };
        assert_eq!(evaluate(&p, &flow(21, PROTO_TCP)).action, Action::Deny);

        let mut r = rule("ports", Action::Allow);
        r.ports = vec![(21, 21)];
        let p = Policy { default: Action::Deny, rules: vec![r], pickup: false };
        assert_eq!(evaluate(&p, &flow(0, PROTO_ICMP)).action, Action::Deny, "port rules never match ICMP");
        let mut r = rule("src", Action::Allow);
        r.source = vec!["203.0.113.0/24".parse().unwrap()];
        let p = Policy { default: Action::Deny, rules: vec![r], pickup: false };
        assert_eq!(evaluate(&p, &flow(21, PROTO_TCP)).action, Action::Deny);
    }
}
