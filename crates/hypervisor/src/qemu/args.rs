//! The qemu-system-x86_64 command line for a VM.

use std::net::IpAddr;
use std::path::Path;

use super::UserNetworking;
use super::accel::Accel;
use super::paths::VmPaths;
use crate::spec::{Network, VmSpec, tap_name};

/// Node names the driver refers to over QMP.
pub(crate) const DISK_DRIVE: &str = "disk0";
pub(crate) const NIC_NETDEV: &str = "net0";

pub(crate) fn qemu_args(
    spec: &VmSpec,
    paths: &VmPaths,
    accel: Accel,
    user_networking: &UserNetworking,
) -> Vec<String> {
    let mut args = Vec::new();
    let mut push = |option: &str, value: String| {
        args.push(option.to_owned());
        args.push(value);
    };
    push("-name", format!("guest={},debug-threads=on", spec.id));
    push("-uuid", spec.id.to_string());
    push("-machine", "q35".into());
    push("-accel", accel.qemu_name().into());
    push("-cpu", accel.cpu_model().into());
    push("-smp", spec.vcpus.to_string());
    push("-m", format!("{}M", spec.memory_mib));

    // Only the devices listed here: no default NIC, serial, monitor or CD-ROM.
    push("-display", "none".into());
    push("-vnc", format!("unix:{}", option_value(&paths.vnc)));
    push("-device", "VGA".into());
    // An absolute pointer, so the noVNC cursor matches the guest's.
    push("-device", "qemu-xhci,id=usb".into());
    push("-device", "usb-tablet,bus=usb.0".into());
    push("-device", "virtio-rng-pci".into());

    push(
        "-chardev",
        format!(
            "socket,id=qmp,path={},server=on,wait=off",
            option_value(&paths.qmp)
        ),
    );
    push("-mon", "chardev=qmp,mode=control".into());
    push(
        "-chardev",
        format!(
            "socket,id=events,path={},server=on,wait=off",
            option_value(&paths.events)
        ),
    );
    push("-mon", "chardev=events,mode=control".into());
    // The log keeps boot output that nobody was connected to see.
    push(
        "-chardev",
        format!(
            "socket,id=serial0,path={},server=on,wait=off,logfile={},logappend=on",
            option_value(&paths.serial),
            option_value(&paths.serial_log)
        ),
    );
    push("-serial", "chardev:serial0".into());
    // SeaBIOS's messages ("No bootable device") on the serial console too.
    push(
        "-fw_cfg",
        format!(
            "name=etc/sercon-port,file={}",
            option_value(&paths.sercon_port)
        ),
    );

    push(
        "-drive",
        format!(
            "if=none,id={DISK_DRIVE},file={},format=qcow2,discard=unmap",
            option_value(&paths.disk)
        ),
    );
    push(
        "-device",
        format!("virtio-blk-pci,drive={DISK_DRIVE},bootindex=0"),
    );
    push(
        "-drive",
        format!(
            "if=none,id=seed,file={},format=raw,readonly=on",
            option_value(&paths.seed)
        ),
    );
    push("-device", "virtio-blk-pci,drive=seed".into());

    push("-netdev", netdev(spec, paths, user_networking));
    // No option ROM: a VM whose disk does not boot must not try iPXE.
    push(
        "-device",
        format!(
            "virtio-net-pci,netdev={NIC_NETDEV},mac={},romfile=",
            spec.network.mac()
        ),
    );

    push("-pidfile", paths.pidfile.display().to_string());
    args.push("-nodefaults".into());
    args.push("-no-user-config".into());
    // The VM outlives the platform process (and its restarts).
    args.push("-daemonize".into());
    args
}

fn netdev(spec: &VmSpec, paths: &VmPaths, user_networking: &UserNetworking) -> String {
    match (&spec.network, user_networking) {
        // The driver started the VM's passt, listening on this socket.
        (Network::User { .. }, UserNetworking::Passt) => format!(
            "stream,id={NIC_NETDEV},server=off,addr.type=unix,addr.path={}",
            option_value(&paths.passt_socket)
        ),
        // restrict=on: the guest reaches nothing, the forwarded port still works.
        (
            Network::User {
                bind,
                ssh_host_port,
                ..
            },
            UserNetworking::Restricted { .. },
        ) => {
            let bind = match bind {
                IpAddr::V4(address) => address.to_string(),
                IpAddr::V6(address) => format!("[{address}]"),
            };
            format!("user,id={NIC_NETDEV},restrict=on,hostfwd=tcp:{bind}:{ssh_host_port}-:22")
        }
        // The driver made the tap and put it on the bridge before starting.
        (Network::Bridge { .. }, _) => format!(
            "tap,id={NIC_NETDEV},ifname={},script=no,downscript=no",
            tap_name(spec.id)
        ),
    }
}

/// QEMU option values are comma-separated; a literal comma is written twice.
fn option_value(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::MacAddress;
    use crate::spec::tests::example_spec;

    fn value_of<'a>(args: &'a [String], option: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|pair| pair[0] == option)
            .map(|pair| pair[1].as_str())
            .collect()
    }

    const PASST: UserNetworking = UserNetworking::Passt;

    fn restricted() -> UserNetworking {
        UserNetworking::Restricted {
            reason: "no passt".into(),
        }
    }

    fn paths() -> VmPaths {
        VmPaths::new(Path::new("/srv/vmcloud/vms"), example_spec().id)
    }

    #[test]
    fn sizes_machine_and_accelerator_come_from_spec_and_probe() {
        let args = qemu_args(&example_spec(), &paths(), Accel::Tcg, &PASST);
        assert_eq!(value_of(&args, "-smp"), ["2"]);
        assert_eq!(value_of(&args, "-m"), ["1024M"]);
        assert_eq!(value_of(&args, "-accel"), ["tcg"]);
        assert_eq!(value_of(&args, "-cpu"), ["max"]);
        assert_eq!(
            value_of(&args, "-uuid"),
            ["01927a3c-5e4f-7abc-8def-0123456789ab"]
        );
        let kvm = qemu_args(&example_spec(), &paths(), Accel::Kvm, &PASST);
        assert_eq!(value_of(&kvm, "-cpu"), ["host"]);
    }

    #[test]
    fn runs_daemonized_with_only_the_devices_we_ask_for() {
        let args = qemu_args(&example_spec(), &paths(), Accel::Tcg, &PASST);
        for flag in ["-daemonize", "-nodefaults", "-no-user-config"] {
            assert!(args.iter().any(|a| a == flag), "missing {flag}");
        }
        assert_eq!(
            value_of(&args, "-pidfile"),
            ["/srv/vmcloud/vms/01927a3c-5e4f-7abc-8def-0123456789ab/qemu.pid"]
        );
        assert_eq!(value_of(&args, "-display"), ["none"]);
    }

    #[test]
    fn disks_are_virtio_with_the_overlay_first_and_a_read_only_seed() {
        let args = qemu_args(&example_spec(), &paths(), Accel::Tcg, &PASST);
        let dir = "/srv/vmcloud/vms/01927a3c-5e4f-7abc-8def-0123456789ab";
        assert_eq!(
            value_of(&args, "-drive"),
            [
                format!("if=none,id=disk0,file={dir}/disk.qcow2,format=qcow2,discard=unmap"),
                format!("if=none,id=seed,file={dir}/seed.img,format=raw,readonly=on"),
            ]
        );
        let devices = value_of(&args, "-device");
        assert!(devices.contains(&"virtio-blk-pci,drive=disk0,bootindex=0"));
        assert!(devices.contains(&"virtio-blk-pci,drive=seed"));
    }

    #[test]
    fn consoles_are_unix_sockets_in_the_vm_directory() {
        let args = qemu_args(&example_spec(), &paths(), Accel::Tcg, &PASST);
        let dir = "/srv/vmcloud/vms/01927a3c-5e4f-7abc-8def-0123456789ab";
        assert_eq!(value_of(&args, "-vnc"), [format!("unix:{dir}/vnc.sock")]);
        assert_eq!(
            value_of(&args, "-chardev"),
            [
                format!("socket,id=qmp,path={dir}/qmp.sock,server=on,wait=off"),
                format!("socket,id=events,path={dir}/events.sock,server=on,wait=off"),
                format!(
                    "socket,id=serial0,path={dir}/serial.sock,server=on,wait=off,logfile={dir}/serial.log,logappend=on"
                ),
            ]
        );
        assert_eq!(
            value_of(&args, "-mon"),
            ["chardev=qmp,mode=control", "chardev=events,mode=control"]
        );
        assert_eq!(value_of(&args, "-serial"), ["chardev:serial0"]);
    }

    #[test]
    fn user_network_is_a_stream_to_the_vms_passt() {
        let args = qemu_args(&example_spec(), &paths(), Accel::Tcg, &PASST);
        assert_eq!(
            value_of(&args, "-netdev"),
            [format!(
                "stream,id=net0,server=off,addr.type=unix,addr.path=/run/vmcloud-guest/{}.sock",
                example_spec().id
            )]
        );
        assert!(
            value_of(&args, "-device")
                .contains(&"virtio-net-pci,netdev=net0,mac=52:54:00:67:89:ab,romfile=")
        );
    }

    #[test]
    fn without_passt_user_network_is_restricted_slirp_forwarding_ssh_from_the_bind_address() {
        let args = qemu_args(&example_spec(), &paths(), Accel::Tcg, &restricted());
        assert_eq!(
            value_of(&args, "-netdev"),
            ["user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"]
        );

        let mut spec = example_spec();
        spec.network = Network::User {
            mac: spec.network.mac(),
            bind: "::1".parse().expect("valid literal"),
            ssh_host_port: 2200,
        };
        let args = qemu_args(&spec, &paths(), Accel::Tcg, &restricted());
        assert_eq!(
            value_of(&args, "-netdev"),
            ["user,id=net0,restrict=on,hostfwd=tcp:[::1]:2200-:22"]
        );
    }

    #[test]
    fn bridged_network_uses_the_prepared_tap_without_scripts() {
        let mut spec = example_spec();
        spec.network = Network::Bridge {
            mac: MacAddress([0x52, 0x54, 0, 1, 2, 3]),
            bridge: "br0".into(),
            ipv4: None,
        };
        let args = qemu_args(&spec, &paths(), Accel::Kvm, &PASST);
        assert_eq!(
            value_of(&args, "-netdev"),
            ["tap,id=net0,ifname=vmc0123456789ab,script=no,downscript=no"]
        );
        assert!(
            value_of(&args, "-device")
                .contains(&"virtio-net-pci,netdev=net0,mac=52:54:00:01:02:03,romfile=")
        );
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let paths = VmPaths::new(Path::new("/srv/odd,dir"), example_spec().id);
        let args = qemu_args(&example_spec(), &paths, Accel::Tcg, &PASST);
        assert!(value_of(&args, "-drive")[0].contains("file=/srv/odd,,dir/"));
    }
}
