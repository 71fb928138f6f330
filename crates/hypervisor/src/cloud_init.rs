//! The cloud-init NoCloud seed: a small FAT disk labelled `cidata` holding
//! `meta-data`, `user-data` and `network-config`, written in Rust (no mkfs or
//! mtools needed on the node).
//!
//! User-data: ours is a `#cloud-config` with the host name and SSH keys. When
//! the customer brings their own, the two go in one MIME multipart (ours
//! first), which cloud-init handles for every user-data format: a customer
//! `#cloud-config` is merged into ours with lists appended (their SSH keys add
//! to ours) and their scalars winning; scripts, boothooks and MIME documents
//! run as they would alone.
//!
//! Every string we write into YAML is a JSON string, which YAML reads as a
//! double-quoted scalar: no value can break out of its field.

use std::io::{Cursor, Write};

use uuid::Uuid;

use crate::spec::{CloudInit, Network};

const LABEL: [u8; 11] = *b"cidata     ";
const MIB: usize = 1024 * 1024;

/// Merge rules for a customer `#cloud-config` part (see the module docs).
const CUSTOMER_MERGE_TYPE: &str = "dict(recurse_array,replace)+list(append)+str()";

pub(crate) struct SeedFiles {
    pub meta_data: String,
    pub user_data: String,
    pub network_config: String,
}

impl SeedFiles {
    pub fn new(cloud_init: &CloudInit, network: &Network) -> Self {
        Self {
            meta_data: meta_data(cloud_init),
            user_data: user_data(cloud_init),
            network_config: cloud_init
                .network_config
                .clone()
                .unwrap_or_else(|| network_config(network)),
        }
    }

    /// The FAT image, sized to its contents.
    pub fn fat_image(&self) -> std::io::Result<Vec<u8>> {
        let files = [
            ("meta-data", &self.meta_data),
            ("user-data", &self.user_data),
            ("network-config", &self.network_config),
        ];
        let content: usize = files.iter().map(|(_, text)| text.len()).sum();
        // Twice the content leaves room for FAT tables, directory entries and
        // cluster rounding.
        let size = (content * 2).div_ceil(MIB).max(1) * MIB;
        let mut image = Cursor::new(vec![0; size]);
        fatfs::format_volume(
            &mut image,
            fatfs::FormatVolumeOptions::new().volume_label(LABEL),
        )?;
        {
            let fs = fatfs::FileSystem::new(&mut image, fatfs::FsOptions::new())?;
            for (name, text) in files {
                fs.root_dir()
                    .create_file(name)?
                    .write_all(text.as_bytes())?;
            }
            fs.unmount()?;
        }
        Ok(image.into_inner())
    }
}

fn quoted(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

fn meta_data(cloud_init: &CloudInit) -> String {
    format!(
        "instance-id: {}\nlocal-hostname: {}\n",
        quoted(&cloud_init.instance_id),
        quoted(&cloud_init.hostname)
    )
}

fn our_cloud_config(cloud_init: &CloudInit) -> String {
    let hostname = format!(
        "#cloud-config\nhostname: {}\n",
        quoted(&cloud_init.hostname)
    );
    if cloud_init.ssh_authorized_keys.is_empty() {
        return hostname;
    }
    let keys: Vec<_> = cloud_init
        .ssh_authorized_keys
        .iter()
        .map(|key| format!("  - {}\n", quoted(key)))
        .collect();
    format!("{hostname}ssh_authorized_keys:\n{}", keys.concat())
}

fn user_data(cloud_init: &CloudInit) -> String {
    let ours = our_cloud_config(cloud_init);
    let Some(theirs) = &cloud_init.user_data else {
        return ours;
    };
    let boundary = loop {
        let candidate = format!("==vmcloud-{}==", Uuid::new_v4().simple());
        if !theirs.contains(&candidate) {
            break candidate;
        }
    };
    let their_part = if is_mime(theirs) {
        // Already a MIME entity with its own headers: nest it as it is.
        theirs.clone()
    } else {
        let content_type = content_type(theirs);
        let merge_type = if content_type == "text/cloud-config" {
            format!("Merge-Type: {CUSTOMER_MERGE_TYPE}\n")
        } else {
            String::new()
        };
        format!(
            "Content-Type: {content_type}; charset=\"utf-8\"\n\
             Content-Disposition: attachment; filename=\"user-data\"\n\
             {merge_type}\n{theirs}"
        )
    };
    format!(
        "Content-Type: multipart/mixed; boundary=\"{boundary}\"\nMIME-Version: 1.0\n\n\
         --{boundary}\n\
         Content-Type: text/cloud-config; charset=\"utf-8\"\n\
         Content-Disposition: attachment; filename=\"vmcloud.cfg\"\n\n\
         {ours}\n\
         --{boundary}\n\
         {their_part}\n\
         --{boundary}--\n"
    )
}

fn is_mime(user_data: &str) -> bool {
    let head = user_data.trim_start().to_ascii_lowercase();
    head.starts_with("content-type:") || head.starts_with("mime-version:")
}

/// The MIME type cloud-init itself infers from a user-data's first line.
fn content_type(user_data: &str) -> &'static str {
    const BY_PREFIX: [(&str, &str); 8] = [
        ("#cloud-config-archive", "text/cloud-config-archive"),
        ("#cloud-config-jsonp", "text/cloud-config-jsonp"),
        ("#cloud-config", "text/cloud-config"),
        ("#cloud-boothook", "text/cloud-boothook"),
        ("#include", "text/x-include-url"),
        ("#part-handler", "text/part-handler"),
        ("## template: jinja", "text/jinja2"),
        ("#!", "text/x-shellscript"),
    ];
    BY_PREFIX
        .iter()
        .find(|(prefix, _)| user_data.starts_with(prefix))
        .map_or("text/plain", |(_, content_type)| content_type)
}

/// Network config v2 for the VM's one NIC, matched by MAC address so the
/// guest's interface naming does not matter.
fn network_config(network: &Network) -> String {
    let nic = format!(
        "version: 2\nethernets:\n  primary:\n    match:\n      macaddress: {}\n",
        quoted(&network.mac().to_string())
    );
    let Network::Bridge {
        ipv4: Some(ipv4), ..
    } = network
    else {
        return format!("{nic}    dhcp4: true\n");
    };
    let address = quoted(&format!("{}/{}", ipv4.address, ipv4.prefix_len));
    let route = ipv4.gateway.map_or(String::new(), |gateway| {
        format!(
            "    routes:\n      - to: \"default\"\n        via: {}\n",
            quoted(&gateway.to_string())
        )
    });
    let nameservers = if ipv4.nameservers.is_empty() {
        String::new()
    } else {
        let servers: Vec<_> = ipv4
            .nameservers
            .iter()
            .map(|server| quoted(&server.to_string()))
            .collect();
        format!(
            "    nameservers:\n      addresses: [{}]\n",
            servers.join(", ")
        )
    };
    format!("{nic}    addresses:\n      - {address}\n{route}{nameservers}")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::spec::tests::example_spec;
    use crate::spec::{MacAddress, StaticIpv4};

    fn files_with_user_data(user_data: Option<&str>) -> SeedFiles {
        let spec = example_spec();
        let cloud_init = CloudInit {
            user_data: user_data.map(str::to_owned),
            ..spec.cloud_init
        };
        SeedFiles::new(&cloud_init, &spec.network)
    }

    fn read_back(image: Vec<u8>) -> (String, Vec<(String, String)>) {
        let fs = fatfs::FileSystem::new(Cursor::new(image), fatfs::FsOptions::new())
            .expect("FAT filesystem");
        let label = fs.volume_label();
        let mut files = Vec::new();
        for entry in fs.root_dir().iter() {
            let entry = entry.expect("directory entry");
            let mut text = String::new();
            entry
                .to_file()
                .read_to_string(&mut text)
                .expect("read to string");
            files.push((entry.file_name(), text));
        }
        (label, files)
    }

    #[test]
    fn meta_data_names_the_instance_and_host() {
        let files = files_with_user_data(None);
        assert_eq!(
            files.meta_data,
            "instance-id: \"01927a3c-5e4f-7abc-8def-0123456789ab\"\nlocal-hostname: \"web-1\"\n"
        );
    }

    #[test]
    fn without_customer_data_user_data_is_our_cloud_config() {
        let files = files_with_user_data(None);
        assert_eq!(
            files.user_data,
            "#cloud-config\nhostname: \"web-1\"\nssh_authorized_keys:\n  - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample me@laptop\"\n"
        );
    }

    #[test]
    fn values_cannot_escape_their_yaml_field() {
        let spec = example_spec();
        let cloud_init = CloudInit {
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA \"quoted\" \\ # not a comment".into()],
            ..spec.cloud_init
        };
        let user_data = SeedFiles::new(&cloud_init, &spec.network).user_data;
        assert!(user_data.contains(r#"  - "ssh-ed25519 AAAA \"quoted\" \\ # not a comment""#));
    }

    #[test]
    fn customer_cloud_config_is_merged_through_a_multipart() {
        let theirs =
            "#cloud-config\npackages: [nginx]\nssh_authorized_keys:\n  - ssh-rsa AAAB theirs\n";
        let user_data = files_with_user_data(Some(theirs)).user_data;
        let boundary = user_data
            .split("boundary=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("boundary in the header");
        let parts: Vec<_> = user_data.split(&format!("--{boundary}")).collect();
        // Preamble, ours, theirs, closing.
        assert_eq!(parts.len(), 4, "{user_data}");
        assert!(parts[0].starts_with("Content-Type: multipart/mixed;"));
        assert!(parts[1].contains("Content-Type: text/cloud-config"));
        assert!(parts[1].contains("\n\n#cloud-config\nhostname: \"web-1\"\n"));
        assert!(parts[2].contains(&format!("Merge-Type: {CUSTOMER_MERGE_TYPE}\n\n{theirs}")));
        assert_eq!(parts[3], "--\n");
    }

    #[test]
    fn customer_scripts_and_mime_documents_keep_their_meaning() {
        let script = files_with_user_data(Some("#!/bin/sh\necho hi\n")).user_data;
        assert!(script.contains("Content-Type: text/x-shellscript; charset=\"utf-8\"\n"));
        assert!(!script.contains("Merge-Type"));

        let mime = "Content-Type: multipart/mixed; boundary=\"inner\"\nMIME-Version: 1.0\n\n--inner\nContent-Type: text/x-shellscript\n\n#!/bin/sh\n--inner--\n";
        let nested = files_with_user_data(Some(mime)).user_data;
        assert!(nested.contains(&format!("\n{mime}")));
    }

    #[test]
    fn content_type_follows_cloud_init_prefixes() {
        assert_eq!(content_type("#cloud-config\n"), "text/cloud-config");
        assert_eq!(
            content_type("#cloud-config-archive\n"),
            "text/cloud-config-archive"
        );
        assert_eq!(content_type("#cloud-boothook\n"), "text/cloud-boothook");
        assert_eq!(
            content_type("#!/usr/bin/env python3\n"),
            "text/x-shellscript"
        );
        assert_eq!(content_type("hello"), "text/plain");
    }

    #[test]
    fn network_config_uses_dhcp_unless_a_static_address_is_given() {
        let dhcp = files_with_user_data(None).network_config;
        assert_eq!(
            dhcp,
            "version: 2\nethernets:\n  primary:\n    match:\n      macaddress: \"52:54:00:67:89:ab\"\n    dhcp4: true\n"
        );

        let fixed = network_config(&Network::Bridge {
            mac: MacAddress([0x52, 0x54, 0, 1, 2, 3]),
            bridge: "br0".into(),
            ipv4: Some(StaticIpv4 {
                address: "192.0.2.10".parse().expect("valid literal"),
                prefix_len: 24,
                gateway: Some("192.0.2.1".parse().expect("valid literal")),
                nameservers: vec![
                    "192.0.2.53".parse().expect("valid literal"),
                    "2001:db8::53".parse().expect("valid literal"),
                ],
            }),
        });
        assert_eq!(
            fixed,
            "version: 2\nethernets:\n  primary:\n    match:\n      macaddress: \"52:54:00:01:02:03\"\n    addresses:\n      - \"192.0.2.10/24\"\n    routes:\n      - to: \"default\"\n        via: \"192.0.2.1\"\n    nameservers:\n      addresses: [\"192.0.2.53\", \"2001:db8::53\"]\n"
        );
    }

    #[test]
    fn customer_network_config_is_used_verbatim() {
        let spec = example_spec();
        let custom = "version: 1\nconfig: []\n";
        let cloud_init = CloudInit {
            network_config: Some(custom.into()),
            ..spec.cloud_init
        };
        assert_eq!(
            SeedFiles::new(&cloud_init, &spec.network).network_config,
            custom
        );
    }

    #[test]
    fn fat_image_is_labelled_cidata_and_holds_the_three_files() {
        let files = files_with_user_data(Some("#!/bin/sh\necho hi\n"));
        let image = files.fat_image().expect("fat image");
        assert_eq!(image.len(), MIB);
        let (label, contents) = read_back(image);
        assert_eq!(label, "cidata");
        assert_eq!(
            contents,
            [
                ("meta-data".to_owned(), files.meta_data.clone()),
                ("user-data".to_owned(), files.user_data.clone()),
                ("network-config".to_owned(), files.network_config.clone()),
            ]
        );
    }

    #[test]
    fn fat_image_grows_with_large_user_data() {
        let big = format!("#!/bin/sh\n# {}\n", "x".repeat(3 * MIB));
        let files = files_with_user_data(Some(&big));
        let image = files.fat_image().expect("fat image");
        assert!(image.len() > 6 * MIB);
        let (_, contents) = read_back(image);
        assert_eq!(contents[1].1, files.user_data);
    }
}
