//! What the platform asks a node to run. Serializable so the platform can store
//! it with the instance and the node can keep it beside the VM's disk.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::driver::{Error, Result};

pub const MAX_VCPUS: u32 = 255;
pub const MIN_MEMORY_MIB: u64 = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub id: Uuid,
    /// Display name; the guest's host name comes from `cloud_init.hostname`.
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    /// qcow2 image the VM's disk is a copy-on-write overlay of. Must stay in
    /// place, unchanged, for as long as any VM uses it.
    pub base_image: PathBuf,
    pub cloud_init: CloudInit,
    pub network: Network,
}

/// Contents of the NoCloud seed the guest reads at first boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudInit {
    /// Changing it makes cloud-init run its once-per-instance steps again.
    pub instance_id: String,
    pub hostname: String,
    pub ssh_authorized_keys: Vec<String>,
    /// The customer's own user-data (any format cloud-init accepts), combined
    /// with ours as a MIME multipart.
    pub user_data: Option<String>,
    /// Network config (v1 or v2) used verbatim instead of the generated one.
    pub network_config: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Network {
    /// QEMU user-mode networking (NAT, no privileges); only SSH is reachable,
    /// through `bind:ssh_host_port` on the node.
    User {
        mac: MacAddress,
        bind: IpAddr,
        ssh_host_port: u16,
    },
    /// A tap device of the driver's making ([`tap_name`]) on an existing
    /// bridge of the node, for a VM with an address of its own.
    Bridge {
        mac: MacAddress,
        bridge: String,
        /// `None`: the guest asks DHCP.
        ipv4: Option<StaticIpv4>,
    },
}

impl Network {
    pub fn mac(&self) -> MacAddress {
        match self {
            Self::User { mac, .. } | Self::Bridge { mac, .. } => *mac,
        }
    }
}

/// The tap device of a bridged VM: `vmc` and the last 12 hex digits of its
/// id (the random part of a UUIDv7), within the kernel's 15 characters.
pub fn tap_name(id: Uuid) -> String {
    let hex = id.simple().to_string();
    format!("vmc{}", &hex[hex.len() - 12..])
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticIpv4 {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<Ipv4Addr>,
    pub nameservers: Vec<IpAddr>,
}

impl VmSpec {
    /// Rejects what would make QEMU, qemu-img or cloud-init fail later, with a
    /// message the platform can show.
    pub fn validate(&self) -> Result<()> {
        let invalid = |message: String| Err(Error::InvalidArgument(message));
        if self.name.trim().is_empty() {
            return invalid("name must not be empty".into());
        }
        validate_size(self.vcpus, self.memory_mib)?;
        if self.disk_gib == 0 {
            return invalid("disk_gib must be at least 1".into());
        }
        if !self.base_image.is_absolute() {
            return invalid(format!(
                "base_image must be an absolute path, got {}",
                self.base_image.display()
            ));
        }
        self.cloud_init.validate()?;
        match &self.network {
            Network::User { ssh_host_port, .. } if *ssh_host_port == 0 => {
                invalid("ssh_host_port must not be 0".into())
            }
            Network::Bridge { bridge, .. } if !is_interface_name(bridge) => invalid(format!(
                "bridge must be a network interface name (1-15 of A-Z a-z 0-9 . _ -), got {bridge:?}"
            )),
            Network::Bridge {
                ipv4: Some(ipv4), ..
            } if ipv4.prefix_len == 0 || ipv4.prefix_len > 32 => invalid(format!(
                "ipv4.prefix_len must be 1-32, got {}",
                ipv4.prefix_len
            )),
            _ => Ok(()),
        }
    }
}

pub(crate) fn validate_size(vcpus: u32, memory_mib: u64) -> Result<()> {
    if !(1..=MAX_VCPUS).contains(&vcpus) {
        return Err(Error::InvalidArgument(format!(
            "vcpus must be 1-{MAX_VCPUS}, got {vcpus}"
        )));
    }
    if memory_mib < MIN_MEMORY_MIB {
        return Err(Error::InvalidArgument(format!(
            "memory_mib must be at least {MIN_MEMORY_MIB}, got {memory_mib}"
        )));
    }
    Ok(())
}

impl CloudInit {
    fn validate(&self) -> Result<()> {
        let single_line = |field: &str, value: &str| {
            if value.trim().is_empty() || value.contains(['\n', '\r']) {
                Err(Error::InvalidArgument(format!(
                    "{field} must be one non-empty line"
                )))
            } else {
                Ok(())
            }
        };
        single_line("cloud_init.instance_id", &self.instance_id)?;
        if !is_hostname(&self.hostname) {
            return Err(Error::InvalidArgument(format!(
                "cloud_init.hostname must be a DNS name (labels of 1-63 letters, digits and inner hyphens), got {:?}",
                self.hostname
            )));
        }
        self.ssh_authorized_keys
            .iter()
            .try_for_each(|key| single_line("each of cloud_init.ssh_authorized_keys", key))
    }
}

/// RFC 1123 host names: dot-separated labels of 1-63 letters, digits and
/// inner hyphens, 253 characters in all.
pub fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// A Linux network interface name: 1 to 15 of A-Z a-z 0-9 . _ -.
pub fn is_interface_name(name: &str) -> bool {
    (1..=15).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// An Ethernet address, written `52:54:00:12:34:56`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddress(pub [u8; 6]);

impl MacAddress {
    /// A stable address for a VM, in the locally administered `52:54:00` range
    /// QEMU uses, so a VM keeps its MAC (and DHCP lease) across restarts.
    pub fn for_vm(id: Uuid) -> Self {
        let [.., a, b, c] = *id.as_bytes();
        Self([0x52, 0x54, 0x00, a, b, c])
    }
}

impl fmt::Display for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<_> = self.0.iter().map(|byte| format!("{byte:02x}")).collect();
        f.write_str(&hex.join(":"))
    }
}

impl fmt::Debug for MacAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddress({self})")
    }
}

impl FromStr for MacAddress {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = || Error::InvalidArgument(format!("not a MAC address: {text:?}"));
        let mut bytes = [0u8; 6];
        let mut parts = text.split(':');
        for byte in &mut bytes {
            let part = parts.next().filter(|p| p.len() == 2).ok_or_else(invalid)?;
            *byte = u8::from_str_radix(part, 16).map_err(|_| invalid())?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(bytes))
    }
}

impl Serialize for MacAddress {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddress {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn example_spec() -> VmSpec {
        let id = Uuid::from_u128(0x0192_7a3c_5e4f_7abc_8def_0123_4567_89ab);
        VmSpec {
            id,
            name: "web-1".into(),
            vcpus: 2,
            memory_mib: 1024,
            disk_gib: 10,
            base_image: "/var/lib/vmcloud/images/debian-12.qcow2".into(),
            cloud_init: CloudInit {
                instance_id: id.to_string(),
                hostname: "web-1".into(),
                ssh_authorized_keys: vec![
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop".into(),
                ],
                user_data: None,
                network_config: None,
            },
            network: Network::User {
                mac: MacAddress::for_vm(id),
                bind: Ipv4Addr::LOCALHOST.into(),
                ssh_host_port: 2222,
            },
        }
    }

    fn rejected(spec: &VmSpec) -> String {
        match spec.validate() {
            Err(Error::InvalidArgument(message)) => message,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn example_spec_is_valid() {
        example_spec().validate().expect("validate");
    }

    #[test]
    fn spec_round_trips_through_json() {
        let spec = example_spec();
        let json = serde_json::to_value(&spec).expect("to value");
        assert_eq!(json["network"]["mode"], "user");
        assert_eq!(json["network"]["mac"], "52:54:00:67:89:ab");
        let back: VmSpec = serde_json::from_value(json).expect("from value");
        assert_eq!(back, spec);
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut spec = example_spec();
        spec.vcpus = 0;
        assert!(rejected(&spec).contains("vcpus"));

        let mut spec = example_spec();
        spec.memory_mib = 32;
        assert!(rejected(&spec).contains("memory_mib"));

        let mut spec = example_spec();
        spec.base_image = "images/debian.qcow2".into();
        assert!(rejected(&spec).contains("absolute"));

        let mut spec = example_spec();
        spec.cloud_init.hostname = "-bad-".into();
        assert!(rejected(&spec).contains("hostname"));

        let mut spec = example_spec();
        spec.cloud_init.ssh_authorized_keys = vec!["ssh-ed25519 AAAA\nruncmd: [reboot]".into()];
        assert!(rejected(&spec).contains("ssh_authorized_keys"));

        let mut spec = example_spec();
        spec.network = Network::Bridge {
            mac: MacAddress::for_vm(spec.id),
            bridge: "bridge-with-a-much-too-long-name".into(),
            ipv4: None,
        };
        assert!(rejected(&spec).contains("bridge"));
    }

    #[test]
    fn tap_names_fit_the_kernel_limit_and_differ_per_vm() {
        let first: Uuid = "01927a3c-5e4f-7abc-8def-0123456789ab"
            .parse()
            .expect("uuid");
        let second: Uuid = "01927a3c-5e4f-7abc-8def-0123456789ac"
            .parse()
            .expect("uuid");
        assert_eq!(tap_name(first), "vmc0123456789ab");
        assert!(is_interface_name(&tap_name(first)));
        assert_ne!(tap_name(first), tap_name(second));
    }

    #[test]
    fn hostnames_follow_dns_rules() {
        assert!(is_hostname("web-1"));
        assert!(is_hostname("web-1.example.com"));
        assert!(!is_hostname(""));
        assert!(!is_hostname("web_1"));
        assert!(!is_hostname("a..b"));
        assert!(!is_hostname(&"a".repeat(64)));
    }

    #[test]
    fn mac_addresses_parse_and_print() {
        let mac: MacAddress = "52:54:00:AB:cd:01".parse().expect("valid literal");
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:01");
        for bad in [
            "",
            "52:54:00:ab:cd",
            "52:54:00:ab:cd:01:02",
            "52:54:00:ab:cd:1",
            "zz:54:00:ab:cd:01",
        ] {
            assert!(bad.parse::<MacAddress>().is_err(), "{bad:?} parsed");
        }
    }
}
