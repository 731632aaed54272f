//! Tap devices and NAT for Firecracker guests.
//!
//! Each networked VM gets a tap device `frtap<slot>` and a /30 subnet carved
//! out of [`NatConfig::subnet`]: the host side of the tap holds the first
//! address and is the guest's gateway, the guest holds the second. The
//! guest learns its address from the standard `ip=` kernel parameter (the
//! image's init must apply it when the kernel lacks `CONFIG_IP_PNP`, as
//! Debian's cloud kernel does). Masquerading is only set up when
//! [`NatConfig::apply_rules`] is true; docs/firecracker.md lists the rules.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Mutex;

use tokio::process::Command;

use crate::backend::VmError;

/// Prefix of every tap device this backend creates.
pub const TAP_PREFIX: &str = "frtap";
/// The interface id given to Firecracker and the guest's device name.
pub const GUEST_IFACE: &str = "eth0";

/// How networked VMs are connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// A /16 (or larger) private range; slot `n` uses `subnet + 4n .. + 4n + 3`.
    pub subnet: Ipv4Addr,
    /// Whether to enable forwarding and add the masquerading rules.
    pub apply_rules: bool,
    /// The host's outgoing interface for masquerading (e.g. `eth0`).
    pub uplink: Option<String>,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            subnet: Ipv4Addr::new(172, 16, 0, 0),
            apply_rules: false,
            uplink: None,
        }
    }
}

/// The addresses of one tap slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TapPlan {
    /// The slot number.
    pub slot: u16,
    /// The tap device's name.
    pub name: String,
    /// The host side's address (the guest's gateway).
    pub host_ip: Ipv4Addr,
    /// The guest's address.
    pub guest_ip: Ipv4Addr,
    /// The guest's MAC address: `06:00` followed by the guest address.
    pub guest_mac: String,
}

impl TapPlan {
    /// The plan for `slot` within `subnet`.
    pub fn for_slot(subnet: Ipv4Addr, slot: u16) -> Self {
        let base = u32::from(subnet) + u32::from(slot) * 4;
        let host_ip = Ipv4Addr::from(base + 1);
        let guest_ip = Ipv4Addr::from(base + 2);
        let [a, b, c, d] = guest_ip.octets();
        Self {
            slot,
            name: format!("{TAP_PREFIX}{slot}"),
            host_ip,
            guest_ip,
            guest_mac: format!("06:00:{a:02x}:{b:02x}:{c:02x}:{d:02x}"),
        }
    }

    /// The kernel's `ip=` parameter configuring the guest side statically.
    pub fn kernel_ip_arg(&self) -> String {
        format!(
            "ip={}::{}:255.255.255.252::{GUEST_IFACE}:off",
            self.guest_ip, self.host_ip
        )
    }
}

/// Serializes slot allocation within this process.
static ALLOCATION: Mutex<()> = Mutex::new(());

/// The highest slot tried (a /16 holds 16384 /30 subnets).
const MAX_SLOT: u16 = 16383;

/// Creates a tap device in the first free slot, owned by `owner_uid` when
/// given (so a jailed Firecracker can open it), with the host address set
/// and the link up.
pub async fn create_tap(config: &NatConfig, owner_uid: Option<u32>) -> Result<TapPlan, VmError> {
    for slot in 0..=MAX_SLOT {
        let plan = TapPlan::for_slot(config.subnet, slot);
        let claimed = {
            let _guard = ALLOCATION
                .lock()
                .unwrap_or_else(|poison| poison.into_inner());
            if Path::new("/sys/class/net").join(&plan.name).exists() {
                continue;
            }
            let mut add = vec!["tuntap", "add", "dev", &plan.name, "mode", "tap"];
            let uid_text = owner_uid.map(|uid| uid.to_string());
            if let Some(uid) = &uid_text {
                add.extend(["user", uid]);
            }
            // Run synchronously under the lock so two VMs never pick one slot.
            std::process::Command::new("ip").args(&add).output()
        };
        let out = claimed.map_err(|err| VmError::Spawn {
            program: "ip".into(),
            source: err,
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("exists") || stderr.contains("busy") {
                continue;
            }
            return Err(command_failed("ip tuntap add", &stderr));
        }
        let configured = async {
            run_ip(&[
                "addr",
                "add",
                &format!("{}/30", plan.host_ip),
                "dev",
                &plan.name,
            ])
            .await?;
            run_ip(&["link", "set", "dev", &plan.name, "up"]).await
        }
        .await;
        if let Err(err) = configured {
            let _ = delete_tap(&plan.name).await;
            return Err(err);
        }
        return Ok(plan);
    }
    Err(command_failed("ip tuntap add", "no free tap slot"))
}

/// Gives tap `name` the host address of `original` instead of its own (a
/// restored guest keeps the address and gateway it was snapshotted with).
pub async fn readdress_tap(name: &str, original: &TapPlan) -> Result<(), VmError> {
    run_ip(&["addr", "flush", "dev", name]).await?;
    run_ip(&[
        "addr",
        "add",
        &format!("{}/30", original.host_ip),
        "dev",
        name,
    ])
    .await
}

/// Deletes a tap device (a missing device is not an error).
pub async fn delete_tap(name: &str) -> Result<(), VmError> {
    if !Path::new("/sys/class/net").join(name).exists() {
        return Ok(());
    }
    run_ip(&["link", "del", "dev", name]).await
}

/// The iptables rules masquerading the guests' traffic out of `uplink`,
/// each as an argument list for `iptables` (without the `-A`/`-C` verb).
pub fn nat_rules(config: &NatConfig, uplink: &str) -> Vec<Vec<String>> {
    let source = format!("{}/16", config.subnet);
    let taps = format!("{TAP_PREFIX}+");
    let rules: [&[&str]; 3] = [
        &[
            "-t",
            "nat",
            "POSTROUTING",
            "-s",
            &source,
            "-o",
            uplink,
            "-j",
            "MASQUERADE",
        ],
        &["FORWARD", "-i", &taps, "-o", uplink, "-j", "ACCEPT"],
        &[
            "FORWARD",
            "-o",
            &taps,
            "-m",
            "conntrack",
            "--ctstate",
            "RELATED,ESTABLISHED",
            "-j",
            "ACCEPT",
        ],
    ];
    rules
        .iter()
        .map(|rule| rule.iter().map(|arg| arg.to_string()).collect())
        .collect()
}

/// Enables IPv4 forwarding and adds each of [`nat_rules`] that is not there
/// yet (checked with `iptables -C`).
pub async fn apply_nat_rules(config: &NatConfig) -> Result<(), VmError> {
    let uplink = config
        .uplink
        .as_deref()
        .ok_or_else(|| command_failed("NAT setup", "apply_rules needs an uplink interface"))?;
    tokio::fs::write("/proc/sys/net/ipv4/ip_forward", "1\n")
        .await
        .map_err(|err| VmError::io("enable net.ipv4.ip_forward", err))?;
    for rule in nat_rules(config, uplink) {
        let (table, chain_and_match) = match rule.first().map(String::as_str) {
            Some("-t") => (rule[..2].to_vec(), rule[2..].to_vec()),
            _ => (Vec::new(), rule.clone()),
        };
        let with_verb = |verb: &str| {
            let mut args = table.clone();
            args.push(verb.to_string());
            args.extend(chain_and_match.iter().cloned());
            args
        };
        let present = Command::new("iptables")
            .args(with_verb("-C"))
            .output()
            .await
            .map_err(|err| VmError::Spawn {
                program: "iptables".into(),
                source: err,
            })?;
        if present.status.success() {
            continue;
        }
        let added = Command::new("iptables")
            .args(with_verb("-A"))
            .output()
            .await
            .map_err(|err| VmError::Spawn {
                program: "iptables".into(),
                source: err,
            })?;
        if !added.status.success() {
            return Err(command_failed(
                &format!("iptables {}", with_verb("-A").join(" ")),
                &String::from_utf8_lossy(&added.stderr),
            ));
        }
    }
    Ok(())
}

async fn run_ip(args: &[&str]) -> Result<(), VmError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|err| VmError::Spawn {
            program: "ip".into(),
            source: err,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(command_failed(
            &format!("ip {}", args.join(" ")),
            &String::from_utf8_lossy(&out.stderr),
        ))
    }
}

fn command_failed(what: &str, stderr: &str) -> VmError {
    VmError::io(
        what.to_string(),
        std::io::Error::other(stderr.trim().to_string()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_disjoint_slash_30s() {
        let subnet = Ipv4Addr::new(172, 16, 0, 0);
        let first = TapPlan::for_slot(subnet, 0);
        assert_eq!(first.name, "frtap0");
        assert_eq!(first.host_ip, Ipv4Addr::new(172, 16, 0, 1));
        assert_eq!(first.guest_ip, Ipv4Addr::new(172, 16, 0, 2));
        assert_eq!(first.guest_mac, "06:00:ac:10:00:02");
        let later = TapPlan::for_slot(subnet, 70);
        assert_eq!(later.host_ip, Ipv4Addr::new(172, 16, 1, 25));
        assert_eq!(later.guest_ip, Ipv4Addr::new(172, 16, 1, 26));
        let last = TapPlan::for_slot(subnet, MAX_SLOT);
        assert_eq!(last.guest_ip, Ipv4Addr::new(172, 16, 255, 254));
    }

    #[test]
    fn kernel_ip_argument() {
        let plan = TapPlan::for_slot(Ipv4Addr::new(172, 16, 0, 0), 1);
        assert_eq!(
            plan.kernel_ip_arg(),
            "ip=172.16.0.6::172.16.0.5:255.255.255.252::eth0:off"
        );
    }

    #[test]
    fn masquerading_rules() {
        let rules = nat_rules(&NatConfig::default(), "ens3");
        assert_eq!(
            rules[0].join(" "),
            "-t nat POSTROUTING -s 172.16.0.0/16 -o ens3 -j MASQUERADE"
        );
        assert_eq!(rules[1].join(" "), "FORWARD -i frtap+ -o ens3 -j ACCEPT");
        assert_eq!(
            rules[2].join(" "),
            "FORWARD -o frtap+ -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
        );
    }
}
