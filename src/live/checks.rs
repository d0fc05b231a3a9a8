//! What `run` checks about the host before it starts: devices, permission,
//! addresses the kernel would answer for, forwarding, offloads. Each finding
//! says what is wrong and the command that fixes it.

use std::io;
use std::net::IpAddr;

use crate::config::Config;

/// A finding about one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// Fatal: exit 2.
    Error(String),
    Warning(String),
}

/// Whether this process may open AF_PACKET sockets.
pub fn packet_permission() -> Result<(), String> {
    // SAFETY: socket(2) then close(2) on the returned fd.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd >= 0 {
        unsafe { libc::close(fd) };
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Err("no permission to open packet sockets (CAP_NET_RAW): run as root, use the systemd unit \
             (packaging/ftpgate.service grants CAP_NET_RAW and CAP_NET_ADMIN), or \
             `setcap cap_net_raw,cap_net_admin+ep $(command -v ftpgate)`"
                .into())
        }
        _ => Err(format!("cannot open a packet socket: {}", crate::capture::strip_os_error(&e))),
    }
}

/// The kernel's view of a device.
#[derive(Clone, Debug, Default)]
pub struct DeviceInfo {
    pub name: String,
    pub up: bool,
    pub mtu: Option<u32>,
    pub addresses: Vec<IpAddr>,
    pub forwarding_v4: bool,
    pub forwarding_v6: bool,
    /// Offloads that are on, by ethtool's names (gro, gso, tso, tx).
    pub offloads_on: Vec<&'static str>,
}

pub fn device_info(name: &str) -> Option<DeviceInfo> {
    let ifc = pnet_datalink::interfaces().into_iter().find(|i| i.name == name)?;
    let read = |p: String| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    Some(DeviceInfo {
        name: name.to_string(),
        up: ifc.is_up(),
        mtu: read(format!("/sys/class/net/{name}/mtu")).and_then(|s| s.parse().ok()),
        addresses: ifc.ips.iter().map(|n| n.ip()).collect(),
        forwarding_v4: read(format!("/proc/sys/net/ipv4/conf/{name}/forwarding")).as_deref() == Some("1"),
        forwarding_v6: read(format!("/proc/sys/net/ipv6/conf/{name}/forwarding")).as_deref() == Some("1"),
        offloads_on: offloads_on(name),
    })
}

/// The legacy ethtool get commands (still served by every driver).
const OFFLOADS: [(u32, &str); 4] = [(0x2b, "gro"), (0x23, "gso"), (0x1e, "tso"), (0x16, "tx")];
const SIOCETHTOOL: libc::c_ulong = 0x8946;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReq {
    name: [libc::c_char; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

fn offloads_on(dev: &str) -> Vec<&'static str> {
    let mut on = Vec::new();
    if dev.len() >= libc::IFNAMSIZ {
        return on;
    }
    // SAFETY: a datagram socket only used for ioctl, closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return on;
    }
    for (cmd, name) in OFFLOADS {
        let mut val = EthtoolValue { cmd, data: 0 };
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: &mut val as *mut EthtoolValue as *mut libc::c_void,
            _pad: [0; 16],
        };
        for (d, s) in req.name.iter_mut().zip(dev.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live ethtool_value.
        let r = unsafe { libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq) };
        if r == 0 && val.data != 0 {
            on.push(name);
        }
    }
    unsafe { libc::close(fd) };
    on
}

/// Compare the configuration with what the kernel has on each device.
/// `info` is indexed like `config.interfaces` (None: the device is missing).
/// `gso_aware`: the datapath takes merged (GRO/GSO) frames and partial
/// checksums (the ring backend), so offloads left on are not a problem.
pub fn findings(config: &Config, info: &[Option<DeviceInfo>], gso_aware: bool) -> Vec<Finding> {
    let mut out = Vec::new();
    for (ifc, info) in config.interfaces.iter().zip(info) {
        let Some(dev) = ifc.device.as_deref() else {
            out.push(Finding::Error(format!(
                "interface {}: no 'device:' in the configuration: `run` needs the Linux device to use",
                ifc.name
            )));
            continue;
        };
        let Some(info) = info else {
            out.push(Finding::Error(format!("{dev}: no such network device (interface {})", ifc.name)));
            continue;
        };
        if !info.up {
            out.push(Finding::Warning(format!("{dev}: the device is down: `ip link set {dev} up`")));
        }
        let held: Vec<IpAddr> = ifc.addresses.iter().map(|n| n.addr()).filter(|a| info.addresses.contains(a)).collect();
        if !held.is_empty() {
            let list = held.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
            out.push(Finding::Warning(format!(
                "{dev}: the kernel also holds {list}: it will answer connections to NAT ports with RST \
                 unless its input is filtered. Remove the address (`ip addr del ADDR/LEN dev {dev}`) or \
                 drop the device's frames at the kernel's ingress, which ftpgate still sees (`nft add table \
                 netdev ftpgate_host; nft add chain netdev ftpgate_host {dev}_in '{{ type filter hook ingress \
                 device \"{dev}\" priority filter; policy drop; }}'`); see docs/operations.md, step 2"
            )));
            let v4 = held.iter().any(IpAddr::is_ipv4) && info.forwarding_v4;
            let v6 = held.iter().any(IpAddr::is_ipv6) && info.forwarding_v6;
            if v4 || v6 {
                let key = if v4 { "net.ipv4.ip_forward=0" } else { "net.ipv6.conf.all.forwarding=0" };
                out.push(Finding::Warning(format!(
                    "{dev}: the kernel forwards on this device and holds the gateway's addresses: it would \
                     forward frames beside ftpgate, around its policy. `sysctl -w {key}`"
                )));
            }
        }
        if !info.offloads_on.is_empty() && !gso_aware {
            out.push(Finding::Warning(format!(
                "{dev}: offloads on ({}): the kernel hands over merged or checksum-less frames that cannot \
                 be forwarded as they are (they are dropped and counted). `ethtool -K {dev} gro off gso off \
                 tso off tx off`",
                info.offloads_on.join(", ")
            )));
        }
        if let Some(mtu) = info.mtu {
            if mtu != u32::from(ifc.mtu) {
                out.push(Finding::Warning(format!(
                    "{dev}: device MTU {mtu} differs from the configured {} (interface {}): frames larger \
                     than the device MTU are dropped",
                    ifc.mtu, ifc.name
                )));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        crate::config::from_str(
            "interfaces:\n  inside:\n    device: veth-a\n    addresses: [192.0.2.1/24]\n  outside:\n    device: veth-b\n    addresses: [198.51.100.1/24]\n",
            "t.yaml",
        )
        .unwrap()
    }

    fn dev(name: &str) -> DeviceInfo {
        DeviceInfo { name: name.into(), up: true, mtu: Some(1500), ..Default::default() }
    }

    #[test]
    fn clean_host_has_no_findings() {
        assert_eq!(findings(&cfg(), &[Some(dev("veth-a")), Some(dev("veth-b"))], false), vec![]);
    }

    #[test]
    fn missing_device_is_an_error_naming_it() {
        let f = findings(&cfg(), &[Some(dev("veth-a")), None], false);
        assert_eq!(f, vec![Finding::Error("veth-b: no such network device (interface outside)".into())]);
    }

    #[test]
    fn kernel_address_offloads_and_forwarding_are_warned_with_the_fix() {
        let mut a = dev("veth-a");
        a.addresses = vec!["192.0.2.1".parse().unwrap()];
        a.forwarding_v4 = true;
        a.offloads_on = vec!["gro", "tso"];
        let f = findings(&cfg(), &[Some(a.clone()), Some(dev("veth-b"))], false);
        assert_eq!(f.len(), 3, "{f:?}");
        // The ring datapath carries GSO frames: offloads are then no finding.
        let ring = findings(&cfg(), &[Some(a), Some(dev("veth-b"))], true);
        assert_eq!(ring.len(), 2, "{ring:?}");
        assert!(ring.iter().all(|x| !format!("{x:?}").contains("ethtool")));
        let text: Vec<String> = f.iter().map(|x| format!("{x:?}")).collect();
        assert!(text[0].contains("kernel also holds 192.0.2.1") && text[0].contains("ip addr del"));
        assert!(text[1].contains("net.ipv4.ip_forward=0"));
        assert!(text[2].contains("ethtool -K veth-a gro off gso off tso off tx off") && text[2].contains("gro, tso"));
        assert!(f.iter().all(|x| matches!(x, Finding::Warning(_))));
    }

    #[test]
    fn loopback_reports_its_offload_state_without_failing() {
        // Whatever lo has, reading it must not fail or panic.
        let _ = offloads_on("lo");
        assert!(offloads_on("a-name-longer-than-ifnamsiz").is_empty());
    }
}
