//! The node's nftables table `vmcloud_guests`: what user-mode guests may
//! reach. Their traffic leaves the node from host sockets of one
//! unprivileged account (passt runs as it), so the rules match that
//! account (`meta skuid`) and drop new connections to the host itself, to
//! loopback and link-local addresses, and to the operator's internal
//! networks; name servers the node uses stay reachable on port 53.

use std::net::IpAddr;
use std::process::Stdio;

use ipnet::IpNet;
use tokio::io::AsyncWriteExt;

use crate::driver::{Error, Result};

pub const TABLE: &str = "vmcloud_guests";

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
        let user = &self.user;
        format!(
            "table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n\
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
            .write_all(self.ruleset().as_bytes())
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
            "table inet vmcloud_guests\ndelete table inet vmcloud_guests\ntable inet vmcloud_guests {"
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
