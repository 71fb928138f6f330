//! The node's nftables table `vmcloud_guests_<account>`: what user-mode
//! guests may reach. Their traffic leaves the node from host sockets of one
//! unprivileged account (passt runs as `vmcloud-guest`; libvirt runs QEMU
//! and its slirp as `libvirt-qemu`), so the rules match that account
//! (`meta skuid`) and drop new connections to the host itself, to loopback
//! and link-local addresses, and to the operator's internal networks; name
//! servers the node uses stay reachable on port 53.

use std::net::IpAddr;
use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;

use crate::driver::{Error, Result};

/// Never reachable, whatever the operator marks internal: "this host",
/// loopback, link-local (cloud metadata services live at 169.254.169.254).
const ALWAYS_BLOCKED: [&str; 5] = [
    "0.0.0.0/8",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "::/127",
    "fe80::/10",
];

/// The default internal networks: RFC 1918, carrier-grade NAT and IPv6
/// unique local addresses, where a node's databases, caches and management
/// interfaces usually are.
pub const DEFAULT_INTERNAL_NETWORKS: [&str; 5] = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

pub fn default_internal_networks() -> Vec<IpNet> {
    DEFAULT_INTERNAL_NETWORKS
        .iter()
        .map(|network| network.parse().expect("valid literal"))
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestFirewall {
    /// The account whose sockets carry guest traffic.
    pub user: String,
    pub internal_networks: Vec<IpNet>,
    /// Name servers guests may query although they are internal or local.
    pub resolvers: Vec<IpAddr>,
}

impl GuestFirewall {
    /// The rules for `user`'s traffic, with the name servers of this host.
    pub async fn for_account(user: &str, internal_networks: &[IpNet]) -> Self {
        let resolv_conf = tokio::fs::read_to_string("/etc/resolv.conf")
            .await
            .unwrap_or_default();
        Self {
            user: user.to_owned(),
            internal_networks: internal_networks.to_vec(),
            resolvers: resolvers_of(&resolv_conf),
        }
    }

    /// One table per account, so the drivers of one host keep to their own.
    pub fn table(&self) -> String {
        let account: String = self
            .user
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("vmcloud_guests_{account}")
    }

    /// The table as an `nft -f` script that replaces any earlier version in
    /// one transaction.
    pub fn ruleset(&self) -> String {
        let mut blocked: Vec<IpNet> = ALWAYS_BLOCKED
            .iter()
            .map(|network| network.parse().expect("valid literal"))
            .collect();
        blocked.extend(self.internal_networks.iter().map(IpNet::trunc));
        let (blocked_v4, blocked_v6): (Vec<IpNet>, Vec<IpNet>) = blocked
            .into_iter()
            .partition(|network| matches!(network, IpNet::V4(_)));
        let (resolvers_v4, resolvers_v6): (Vec<IpAddr>, Vec<IpAddr>) =
            self.resolvers.iter().partition(|address| address.is_ipv4());
        let (user, table) = (&self.user, self.table());
        format!(
            "table inet {table}\ndelete table inet {table}\ntable inet {table} {{\n\
             {}{}{}{}\
             \tchain output {{\n\
             \t\ttype filter hook output priority filter; policy accept;\n\
             \t\tmeta skuid \"{user}\" jump guest_traffic\n\
             \t}}\n\
             \tchain guest_traffic {{\n\
             \t\tct state established,related accept\n\
             \t\tmeta l4proto {{ tcp, udp }} th dport 53 ip daddr @resolvers_v4 accept\n\
             \t\tmeta l4proto {{ tcp, udp }} th dport 53 ip6 daddr @resolvers_v6 accept\n\
             \t\tfib daddr type local drop\n\
             \t\tip daddr @blocked_v4 drop\n\
             \t\tip6 daddr @blocked_v6 drop\n\
             \t}}\n}}\n",
            nft_set("blocked_v4", "ipv4_addr", true, &blocked_v4),
            nft_set("blocked_v6", "ipv6_addr", true, &blocked_v6),
            nft_set("resolvers_v4", "ipv4_addr", false, &resolvers_v4),
            nft_set("resolvers_v6", "ipv6_addr", false, &resolvers_v6),
        )
    }

    /// Installs (or replaces) the table. Needs CAP_NET_ADMIN and `nft`.
    pub async fn apply(&self) -> Result<()> {
        nft(&self.ruleset()).await
    }
}

/// Mark of frames that came from a bridged guest's tap, for the host's
/// input chain.
const FROM_GUEST_MARK: &str = "0x766d6301";

/// A bridged VM's port on the node bridge: only its MAC, and its static
/// address if it has one, may send from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BridgePort {
    pub tap: String,
    pub mac: crate::spec::MacAddress,
    pub ipv4: Option<std::net::Ipv4Addr>,
}

impl BridgePort {
    /// The port of a bridged VM; `None` for user networking.
    pub fn of(spec: &crate::spec::VmSpec) -> Option<Self> {
        let crate::spec::Network::Bridge { mac, ipv4, .. } = &spec.network else {
            return None;
        };
        Some(Self {
            tap: crate::spec::tap_name(spec.id),
            mac: *mac,
            ipv4: ipv4.as_ref().map(|static_ipv4| static_ipv4.address),
        })
    }

    /// `verb` (`add` or `delete`) the port's set elements.
    fn elements(&self, verb: &str) -> String {
        let Self { tap, mac, ipv4 } = self;
        let mut elements = vec![format!("port_macs {{ \"{tap}\" . {mac} }}")];
        if let Some(ipv4) = ipv4 {
            elements.push(format!("static_ports {{ \"{tap}\" }}"));
            elements.push(format!("port_ipv4 {{ \"{tap}\" . {ipv4} }}"));
        }
        let lines: Vec<_> = elements
            .iter()
            .map(|element| format!("{verb} element bridge vmcloud_bridged {element}\n"))
            .collect();
        lines.concat()
    }

    /// Lets the port send (as itself only). Called before QEMU opens the tap.
    pub async fn allow(&self) -> Result<()> {
        nft(&self.elements("add")).await
    }

    /// Takes the port's elements out, with its VM.
    pub async fn forget(&self) -> Result<()> {
        nft(&self.elements("delete")).await
    }
}

/// The bridged guests' tables, installed or updated in place: the ports'
/// elements stay, since other drivers on this host may have VMs running.
///
/// `bridge vmcloud_bridged` drops frames from a guest tap (`vmc*`) whose
/// Ethernet or ARP source is not the VM's MAC, and for VMs with a static
/// address IPv4 and ARP from another address; it marks the rest.
/// `inet vmcloud_bridged_host` drops marked traffic to the host itself
/// except replies, DHCP and neighbour discovery, so a bridged guest cannot
/// reach the node's services on its bridge address (routing through the
/// node is not affected).
pub(crate) fn bridge_ruleset() -> String {
    format!(
        "table bridge vmcloud_bridged {{\n\
         \tset port_macs {{\n\t\ttype ifname . ether_addr\n\t}}\n\
         \tset static_ports {{\n\t\ttype ifname\n\t}}\n\
         \tset port_ipv4 {{\n\t\ttype ifname . ipv4_addr\n\t}}\n\
         \tchain from_guests {{\n\
         \t\ttype filter hook prerouting priority -200; policy accept;\n\
         \t}}\n}}\n\
         flush chain bridge vmcloud_bridged from_guests\n\
         table bridge vmcloud_bridged {{\n\
         \tchain from_guests {{\n\
         \t\tiifname != \"vmc*\" accept\n\
         \t\tiifname . ether saddr != @port_macs drop\n\
         \t\tiifname . arp saddr ether != @port_macs drop\n\
         \t\tiifname @static_ports iifname . arp saddr ip != @port_ipv4 drop\n\
         \t\tiifname @static_ports iifname . ip saddr != @port_ipv4 drop\n\
         \t\tmeta mark set {FROM_GUEST_MARK}\n\
         \t}}\n}}\n\
         table inet vmcloud_bridged_host\ndelete table inet vmcloud_bridged_host\n\
         table inet vmcloud_bridged_host {{\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tmeta mark != {FROM_GUEST_MARK} accept\n\
         \t\tct state established,related accept\n\
         \t\ticmpv6 type {{ nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit }} accept\n\
         \t\tudp dport 67 accept\n\
         \t\tdrop\n\
         \t}}\n}}\n"
    )
}

/// Lets a bridged VM's port send, before its tap is used.
pub(crate) async fn allow_bridge_port(spec: &crate::spec::VmSpec) -> Result<()> {
    let Some(port) = BridgePort::of(spec) else {
        return Ok(());
    };
    port.allow().await.map_err(|error| {
        Error::Unavailable(format!(
            "the anti-spoofing rules of VM {}'s bridge port could not be set (nftables): {error}",
            spec.id
        ))
    })
}

/// Takes a destroyed VM's port out of the bridge rules.
pub(crate) async fn forget_bridge_port(spec: &crate::spec::VmSpec) {
    if let Some(port) = BridgePort::of(spec)
        && let Err(error) = port.forget().await
    {
        tracing::warn!(id = %spec.id, %error, "the destroyed VM's bridge port rules stay");
    }
}

pub(crate) async fn install_bridge_tables() -> Result<()> {
    nft(&bridge_ruleset()).await
}

/// Runs an `nft -f` script in one transaction.
async fn nft(script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(Error::io("cannot run nft"))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(Error::io("writing the ruleset to nft"))?;
    drop(stdin);
    let output = child
        .wait_with_output()
        .await
        .map_err(Error::io("running nft"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            program: "nft".into(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

/// A named set; `interval` sets hold networks.
fn nft_set<T: std::fmt::Display>(name: &str, kind: &str, interval: bool, elements: &[T]) -> String {
    let flags = if interval { "\t\tflags interval\n" } else { "" };
    // nft refuses an empty element list.
    let elements = if elements.is_empty() {
        String::new()
    } else {
        let listed: Vec<_> = elements.iter().map(ToString::to_string).collect();
        format!("\t\telements = {{ {} }}\n", listed.join(", "))
    };
    format!("\tset {name} {{\n\t\ttype {kind}\n{flags}{elements}\t}}\n")
}

/// The name servers in resolv.conf, which guests are told to use.
pub fn resolvers_of(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // A scoped IPv6 address (fe80::1%eth0) is not an nft element.
            words.next()?.split('%').next()?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn firewall() -> GuestFirewall {
        GuestFirewall {
            user: "vmcloud-guest".into(),
            internal_networks: vec![
                "10.0.0.0/8".parse().expect("net"),
                "fc00::/7".parse().expect("net"),
                // Host bits are dropped: nft refuses them in an interval set.
                "192.168.1.7/24".parse().expect("net"),
            ],
            resolvers: vec!["10.255.255.53".parse().expect("ip")],
        }
    }

    #[test]
    fn the_ruleset_drops_new_guest_connections_to_the_host_and_internal_networks() {
        let ruleset = firewall().ruleset();
        assert!(ruleset.starts_with(
            "table inet vmcloud_guests_vmcloud_guest\ndelete table inet vmcloud_guests_vmcloud_guest\n\
             table inet vmcloud_guests_vmcloud_guest {"
        ));
        assert!(ruleset.contains("meta skuid \"vmcloud-guest\" jump guest_traffic"));
        assert!(ruleset.contains(
            "elements = { 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 10.0.0.0/8, 192.168.1.0/24 }"
        ));
        assert!(ruleset.contains("elements = { ::/127, fe80::/10, fc00::/7 }"));
        assert!(ruleset.contains("elements = { 10.255.255.53 }"));
        // Replies to inbound connections (SSH forwarding) and DNS come first.
        let order = [
            "ct state established,related accept",
            "ip daddr @resolvers_v4 accept",
            "fib daddr type local drop",
            "ip daddr @blocked_v4 drop",
        ];
        let positions: Vec<_> = order
            .iter()
            .map(|rule| ruleset.find(rule).expect(rule))
            .collect();
        assert!(positions.is_sorted(), "{ruleset}");
        // An empty set has no elements line, which nft would refuse.
        assert!(ruleset.contains("set resolvers_v6 {\n\t\ttype ipv6_addr\n\t}"));
    }

    #[test]
    fn bridge_ports_may_send_from_their_own_mac_and_static_address_only() {
        let script = bridge_ruleset();
        assert!(script.contains("iifname . ether saddr != @port_macs drop"));
        assert!(script.contains("iifname @static_ports iifname . ip saddr != @port_ipv4 drop"));
        // Updated in place: the ports of running VMs stay.
        assert!(!script.contains("delete table bridge"));
        let with_address = BridgePort {
            tap: "vmc0123456789ab".into(),
            mac: "52:54:00:01:02:03".parse().expect("mac"),
            ipv4: Some("10.213.0.7".parse().expect("ip")),
        };
        assert_eq!(
            with_address.elements("add"),
            "add element bridge vmcloud_bridged port_macs { \"vmc0123456789ab\" . 52:54:00:01:02:03 }\n\
             add element bridge vmcloud_bridged static_ports { \"vmc0123456789ab\" }\n\
             add element bridge vmcloud_bridged port_ipv4 { \"vmc0123456789ab\" . 10.213.0.7 }\n"
        );
        let with_dhcp = BridgePort {
            ipv4: None,
            ..with_address
        };
        assert_eq!(
            with_dhcp.elements("delete"),
            "delete element bridge vmcloud_bridged port_macs { \"vmc0123456789ab\" . 52:54:00:01:02:03 }\n"
        );
        // Guest traffic to the host: replies, DHCP and neighbour discovery only.
        let input = &script[script.find("chain input").expect("input chain")..];
        assert!(
            input.contains("ct state established,related accept\n"),
            "{input}"
        );
        assert!(input.ends_with("\t\tdrop\n\t}\n}\n"), "{input}");
    }

    #[test]
    fn resolvers_come_from_nameserver_lines() {
        let conf = "# generated\nsearch example.org\nnameserver 10.255.255.53\nnameserver fe80::1%eth0\nnameserver bogus\noptions ndots:1\n";
        assert_eq!(
            resolvers_of(conf),
            vec![
                "10.255.255.53".parse::<IpAddr>().expect("ip"),
                "fe80::1".parse().expect("ip")
            ]
        );
    }
}
