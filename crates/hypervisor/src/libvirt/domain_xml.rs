//! The XML libvirt takes (domains, storage pool, volumes, snapshots) and the
//! few values the driver reads back out of libvirt's XML.
//!
//! Reading is done with plain string search: libvirt writes its XML itself,
//! in a stable layout, and the driver only needs single values from it.

use std::fmt::Write as _;
use std::net::IpAddr;

use uuid::Uuid;

use crate::driver::{Error, Result};
use crate::qemu::accel::Accel;
use crate::spec::{Network, VmSpec, tap_name};

/// Namespace of the `<metadata>` element that stores the VmSpec as JSON.
pub(crate) const SPEC_NAMESPACE: &str = "https://vmcloud.dev/xmlns/libvirt/vmspec/1";
pub(crate) const DISK_TARGET: &str = "vda";
pub(crate) const SEED_TARGET: &str = "vdb";
/// User-chosen alias of the user-mode NIC; QEMU's netdev id is `host<alias>`.
const NIC_ALIAS: &str = "ua-vmcloud-nic";

/// Every domain the driver makes is called this, so `list` can tell them
/// from other domains on the host.
pub(crate) fn domain_name(id: Uuid) -> String {
    format!("{DOMAIN_PREFIX}{id}")
}

pub(crate) const DOMAIN_PREFIX: &str = "vmcloud-";

/// Where the VM's files are on the libvirt host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DomainFiles {
    pub disk: String,
    pub seed: String,
    pub serial_log: String,
}

pub(crate) fn domain_xml(spec: &VmSpec, accel: Accel, files: &DomainFiles) -> Result<String> {
    let spec_json = serde_json::to_string(spec).map_err(|error| Error::Io {
        context: "serializing the spec".into(),
        source: error.into(),
    })?;
    let (domain_type, cpu) = match accel {
        Accel::Kvm => ("kvm", "<cpu mode='host-passthrough'/>"),
        // libvirt's default model under TCG: every guest boots with it.
        Accel::Tcg => ("qemu", ""),
    };
    let mut xml = String::new();
    let _ = write!(
        xml,
        "<domain type='{domain_type}'>\n\
         \x20 <name>{name}</name>\n\
         \x20 <uuid>{id}</uuid>\n\
         \x20 <title>{title}</title>\n\
         \x20 <metadata>\n\
         \x20   <vmcloud:spec xmlns:vmcloud='{SPEC_NAMESPACE}'>{spec_json}</vmcloud:spec>\n\
         \x20 </metadata>\n\
         \x20 <memory unit='MiB'>{memory}</memory>\n\
         \x20 <vcpu>{vcpus}</vcpu>\n\
         \x20 <os>\n\
         \x20   <type arch='x86_64' machine='q35'>hvm</type>\n\
         \x20   <boot dev='hd'/>\n\
         \x20   <bios useserial='yes'/>\n\
         \x20 </os>\n\
         \x20 <features><acpi/><apic/></features>\n\
         \x20 {cpu}\n\
         \x20 <on_poweroff>destroy</on_poweroff>\n\
         \x20 <on_reboot>restart</on_reboot>\n\
         \x20 <on_crash>destroy</on_crash>\n\
         \x20 <devices>\n\
         \x20   <disk type='file' device='disk'>\n\
         \x20     <driver name='qemu' type='qcow2' discard='unmap'/>\n\
         \x20     <source file='{disk}'/>\n\
         \x20     <target dev='{DISK_TARGET}' bus='virtio'/>\n\
         \x20   </disk>\n\
         \x20   <disk type='file' device='disk' snapshot='no'>\n\
         \x20     <driver name='qemu' type='raw'/>\n\
         \x20     <source file='{seed}'/>\n\
         \x20     <target dev='{SEED_TARGET}' bus='virtio'/>\n\
         \x20     <readonly/>\n\
         \x20   </disk>\n\
         {interface}\
         \x20   <serial type='pty'>\n\
         \x20     <log file='{serial_log}' append='on'/>\n\
         \x20     <target port='0'/>\n\
         \x20   </serial>\n\
         \x20   <console type='pty'><target type='serial' port='0'/></console>\n\
         \x20   <graphics type='vnc'><listen type='socket'/></graphics>\n\
         \x20   <video><model type='vga'/></video>\n\
         \x20   <input type='tablet' bus='usb'/>\n\
         \x20   <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>\n\
         \x20 </devices>\n\
         </domain>\n",
        name = domain_name(spec.id),
        id = spec.id,
        title = escape(&spec.name),
        spec_json = escape(&spec_json),
        memory = spec.memory_mib,
        vcpus = spec.vcpus,
        disk = escape(&files.disk),
        seed = escape(&files.seed),
        serial_log = escape(&files.serial_log),
        interface = interface_xml(spec),
    );
    Ok(xml)
}

fn interface_xml(spec: &VmSpec) -> String {
    let mac = spec.network.mac();
    match &spec.network {
        // libvirt 9.0 (Debian 12) has no port forwards for user networking
        // (they need the passt backend, libvirt >= 9.2): the forward is added
        // through the monitor once QEMU runs, see `hostfwd_command`.
        Network::User { .. } => format!(
            "    <interface type='user'>\n      <mac address='{mac}'/>\n      <model type='virtio'/>\n      <alias name='{NIC_ALIAS}'/>\n    </interface>\n"
        ),
        // libvirt makes the tap, named like the QEMU driver's, so that
        // statistics read the same device.
        Network::Bridge { bridge, .. } => format!(
            "    <interface type='bridge'>\n      <mac address='{mac}'/>\n      <source bridge='{}'/>\n      <target dev='{}'/>\n      <model type='virtio'/>\n    </interface>\n",
            escape(bridge),
            tap_name(spec.id)
        ),
    }
}

/// The HMP command that forwards the VM's SSH port, for user networking.
pub(crate) fn hostfwd_command(network: &Network) -> Option<String> {
    let Network::User {
        bind,
        ssh_host_port,
        ..
    } = network
    else {
        return None;
    };
    let bind = match bind {
        IpAddr::V4(address) => address.to_string(),
        IpAddr::V6(address) => format!("[{address}]"),
    };
    Some(format!(
        "hostfwd_add host{NIC_ALIAS} tcp:{bind}:{ssh_host_port}-:22"
    ))
}

pub(crate) fn pool_xml(name: &str, path: &str) -> String {
    format!(
        "<pool type='dir'>\n  <name>{}</name>\n  <target>\n    <path>{}</path>\n    <permissions><mode>0711</mode></permissions>\n  </target>\n</pool>\n",
        escape(name),
        escape(path)
    )
}

/// A raw volume of exactly `bytes`, to be filled by an upload.
pub(crate) fn raw_volume_xml(name: &str, bytes: u64) -> String {
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{bytes}</capacity>\n  <target><format type='raw'/></target>\n</volume>\n",
        escape(name)
    )
}

/// A qcow2 volume whose unwritten blocks read from the qcow2 at `backing_path`.
/// Version 3 (`compat` 1.1) explicitly: some libvirt versions default to
/// version 2, which qemu-img cannot grow once it holds snapshots.
pub(crate) fn overlay_volume_xml(name: &str, bytes: u64, backing_path: &str) -> String {
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{bytes}</capacity>\n  <target><format type='qcow2'/><compat>1.1</compat></target>\n  <backingStore>\n    <path>{}</path>\n    <format type='qcow2'/>\n  </backingStore>\n</volume>\n",
        escape(name),
        escape(backing_path)
    )
}

pub(crate) fn snapshot_xml(name: &str) -> String {
    format!(
        "<domainsnapshot>\n  <name>{}</name>\n</domainsnapshot>\n",
        escape(name)
    )
}

/// The spec stored in a domain's metadata element, as `virDomainGetMetadata`
/// returns it: `<spec xmlns="…">JSON</spec>`.
pub(crate) fn spec_from_metadata(element: &str) -> Result<VmSpec> {
    let unreadable = |why: &str| Error::Libvirt(format!("unreadable VmSpec metadata ({why})"));
    let start = element.find('>').ok_or_else(|| unreadable("no element"))? + 1;
    let end = element
        .rfind("</")
        .ok_or_else(|| unreadable("no end tag"))?;
    let json = unescape(element.get(start..end).ok_or_else(|| unreadable("empty"))?);
    serde_json::from_str(&json).map_err(|error| unreadable(&error.to_string()))
}

/// The text of the first `<tag>` element.
pub(crate) fn element_text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..end])
}

/// An attribute of the first element starting with `element_start` (e.g.
/// `<graphics type='vnc'`), in either quote style.
pub(crate) fn attribute(xml: &str, element_start: &str, name: &str) -> Option<String> {
    let element = &xml[xml.find(element_start)?..];
    let element = &element[..element.find('>')?];
    let at = element.find(&format!(" {name}="))? + name.len() + 2;
    let quote = element[at..].chars().next()?;
    let value = &element[at + 1..];
    Some(unescape(&value[..value.find(quote)?]))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::MacAddress;
    use crate::spec::tests::example_spec;

    fn files() -> DomainFiles {
        DomainFiles {
            disk: "/pool/vm-disk.qcow2".into(),
            seed: "/pool/vm-seed.img".into(),
            serial_log: "/var/log/libvirt/qemu/vm-serial.log".into(),
        }
    }

    #[test]
    fn domain_is_named_after_the_vm_and_runs_under_the_chosen_accelerator() {
        let spec = example_spec();
        let tcg = domain_xml(&spec, Accel::Tcg, &files()).expect("xml");
        assert!(tcg.starts_with("<domain type='qemu'>"), "{tcg}");
        assert!(tcg.contains("<name>vmcloud-01927a3c-5e4f-7abc-8def-0123456789ab</name>"));
        assert!(tcg.contains("<uuid>01927a3c-5e4f-7abc-8def-0123456789ab</uuid>"));
        assert!(tcg.contains("<memory unit='MiB'>1024</memory>"));
        assert!(tcg.contains("<vcpu>2</vcpu>"));
        assert!(!tcg.contains("host-passthrough"));
        let kvm = domain_xml(&spec, Accel::Kvm, &files()).expect("xml");
        assert!(kvm.starts_with("<domain type='kvm'>"));
        assert!(kvm.contains("<cpu mode='host-passthrough'/>"));
    }

    #[test]
    fn disks_seed_serial_log_and_vnc_socket_are_wired() {
        let xml = domain_xml(&example_spec(), Accel::Tcg, &files()).expect("xml");
        assert!(xml.contains(
            "<source file='/pool/vm-disk.qcow2'/>\n      <target dev='vda' bus='virtio'/>"
        ));
        // Internal snapshots cover the qcow2 disk only; the seed is raw.
        assert!(xml.contains("<disk type='file' device='disk' snapshot='no'>\n      <driver name='qemu' type='raw'/>\n      <source file='/pool/vm-seed.img'/>"));
        assert!(xml.contains("<log file='/var/log/libvirt/qemu/vm-serial.log' append='on'/>"));
        assert!(xml.contains("<graphics type='vnc'><listen type='socket'/></graphics>"));
    }

    #[test]
    fn user_networking_gets_a_stable_mac_and_an_ssh_forward() {
        let spec = example_spec();
        let xml = domain_xml(&spec, Accel::Tcg, &files()).expect("xml");
        assert!(xml.contains("<interface type='user'>\n      <mac address='52:54:00:67:89:ab'/>"));
        assert_eq!(
            hostfwd_command(&spec.network).as_deref(),
            Some("hostfwd_add hostua-vmcloud-nic tcp:127.0.0.1:2222-:22")
        );
        let v6 = Network::User {
            mac: spec.network.mac(),
            bind: "::1".parse().expect("valid literal"),
            ssh_host_port: 2200,
        };
        assert_eq!(
            hostfwd_command(&v6).as_deref(),
            Some("hostfwd_add hostua-vmcloud-nic tcp:[::1]:2200-:22")
        );
    }

    #[test]
    fn bridged_networking_names_the_bridge_and_the_tap() {
        let mut spec = example_spec();
        spec.network = Network::Bridge {
            mac: MacAddress([0x52, 0x54, 0, 1, 2, 3]),
            bridge: "br0".into(),
            ipv4: None,
        };
        let xml = domain_xml(&spec, Accel::Tcg, &files()).expect("xml");
        assert!(xml.contains("<interface type='bridge'>\n      <mac address='52:54:00:01:02:03'/>\n      <source bridge='br0'/>\n      <target dev='vmc0123456789ab'/>"), "{xml}");
        assert_eq!(hostfwd_command(&spec.network), None);
    }

    #[test]
    fn spec_survives_the_metadata_round_trip_even_with_markup_in_it() {
        let mut spec = example_spec();
        spec.name = "<b>web</b> & 'co'".into();
        spec.cloud_init.user_data = Some("#!/bin/sh\necho '<x>' \"&\" > /tmp/y\n".into());
        let xml = domain_xml(&spec, Accel::Tcg, &files()).expect("xml");
        assert!(xml.contains("<title>&lt;b&gt;web&lt;/b&gt; &amp; &apos;co&apos;</title>"));
        let start = xml.find("<vmcloud:spec").expect("metadata");
        let end = xml.find("</vmcloud:spec>").expect("metadata end") + "</vmcloud:spec>".len();
        assert_eq!(
            spec_from_metadata(&xml[start..end]).expect("spec back"),
            spec
        );
        // libvirt hands the element back in its own serialization.
        let json = serde_json::to_string(&spec).expect("json");
        let returned = format!(
            "<spec xmlns=\"{SPEC_NAMESPACE}\">{}</spec>",
            json.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        );
        assert_eq!(spec_from_metadata(&returned).expect("spec back"), spec);
        assert!(spec_from_metadata("<spec>not json</spec>").is_err());
    }

    #[test]
    fn storage_xml_names_formats_and_backing_store() {
        assert!(pool_xml("vmcloud", "/var/lib/vmcloud/libvirt-pool").contains("<pool type='dir'>\n  <name>vmcloud</name>\n  <target>\n    <path>/var/lib/vmcloud/libvirt-pool</path>"));
        assert_eq!(
            raw_volume_xml("seed.img", 1_048_576),
            "<volume>\n  <name>seed.img</name>\n  <capacity unit='bytes'>1048576</capacity>\n  <target><format type='raw'/></target>\n</volume>\n"
        );
        let overlay = overlay_volume_xml("disk.qcow2", 10 << 30, "/pool/base.qcow2");
        assert!(overlay.contains("<capacity unit='bytes'>10737418240</capacity>\n  <target><format type='qcow2'/><compat>1.1</compat></target>"));
        assert!(overlay.contains(
            "<backingStore>\n    <path>/pool/base.qcow2</path>\n    <format type='qcow2'/>"
        ));
    }

    #[test]
    fn values_are_read_back_from_libvirt_xml() {
        let live = "<domain><devices>\n<graphics type='vnc' socket='/var/lib/libvirt/qemu/domain-4-x/vnc.sock'>\n<listen type='socket'/></graphics></devices></domain>";
        assert_eq!(
            attribute(live, "<graphics type='vnc'", "socket").as_deref(),
            Some("/var/lib/libvirt/qemu/domain-4-x/vnc.sock")
        );
        assert_eq!(attribute(live, "<graphics type='spice'", "socket"), None);
        let snapshot = "<domainsnapshot>\n  <name>s1</name>\n  <state>shutoff</state>\n  <creationTime>1764060000</creationTime>\n</domainsnapshot>";
        assert_eq!(element_text(snapshot, "creationTime"), Some("1764060000"));
        assert_eq!(element_text(snapshot, "memory"), None);
        assert_eq!(
            snapshot_xml("before-<upgrade>"),
            "<domainsnapshot>\n  <name>before-&lt;upgrade&gt;</name>\n</domainsnapshot>\n"
        );
    }
}
