//! Routing between the configured interfaces: connected networks (from each
//! interface's own addresses), static routes, and the default gateway.
//! Longest prefix wins. Lookups happen once per new connection (the result is
//! kept in the connection), so a sorted list is plenty.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{Config, IfIndex};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    pub iface: IfIndex,
    /// Where to send the frame: the destination itself when on-link, else the router.
    pub next_hop: IpAddr,
}

#[derive(Clone, Debug)]
struct Entry {
    net: IpNet,
    iface: IfIndex,
    via: Option<IpAddr>,
}

#[derive(Clone, Debug, Default)]
pub struct Routes {
    /// Most specific first.
    entries: Vec<Entry>,
    /// The gateway's own addresses and the interface holding each.
    local: Vec<(IpAddr, IfIndex)>,
}

impl Routes {
    pub fn new(cfg: &Config) -> Routes {
        let mut entries = Vec::new();
        let mut local = Vec::new();
        for (i, ifc) in cfg.interfaces.iter().enumerate() {
            for a in &ifc.addresses {
                local.push((a.addr(), i));
                entries.push(Entry { net: a.trunc(), iface: i, via: None });
            }
            for r in &ifc.routes {
                entries.push(Entry { net: r.to.trunc(), iface: i, via: r.via });
            }
            if let Some(gw) = ifc.gateway {
                let default: IpNet = match gw {
                    IpAddr::V4(_) => "0.0.0.0/0".parse().unwrap(),
                    IpAddr::V6(_) => "::/0".parse().unwrap(),
                };
                entries.push(Entry { net: default, iface: i, via: Some(gw) });
            }
        }
        // Stable sort keeps YAML order among equal prefixes: the first listed wins.
        entries.sort_by_key(|e| std::cmp::Reverse(e.net.prefix_len()));
        Routes { entries, local }
    }

    pub fn lookup(&self, dst: IpAddr) -> Option<Hop> {
        self.entries
            .iter()
            .find(|e| e.net.contains(&dst))
            .map(|e| Hop { iface: e.iface, next_hop: e.via.unwrap_or(dst) })
    }

    /// The interface holding `ip` when it is one of the gateway's own addresses.
    pub fn local_iface(&self, ip: IpAddr) -> Option<IfIndex> {
        self.local.iter().find(|(a, _)| *a == ip).map(|&(_, i)| i)
    }

    pub fn is_local(&self, ip: IpAddr) -> bool {
        self.local_iface(ip).is_some()
    }

    /// The interface a packet from `src` would have arrived on (reverse path).
    pub fn ingress_for_source(&self, src: IpAddr) -> Option<IfIndex> {
        self.local_iface(src).or_else(|| self.lookup(src).map(|h| h.iface))
    }
}

/// The first address of `ip`'s family that the interface holds (the masquerade source).
pub fn iface_address(cfg: &Config, iface: IfIndex, like: IpAddr) -> Option<IpAddr> {
    cfg.interfaces.get(iface)?.addresses.iter().map(|n| n.addr()).find(|a| {
        a.is_ipv4() == like.is_ipv4()
        // A link-local IPv6 address is no use as a masquerade source.
        && !matches!(a, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
    })
}
