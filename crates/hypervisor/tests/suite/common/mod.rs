//! A throwaway node for tests: a QEMU driver on a temporary data directory
//! (TCG, since KVM guests hang on this project's machines) and a guard that
//! kills whatever QEMU a failed test left running.

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::process::Command;
use tokio::sync::broadcast;
use uuid::Uuid;
use vmcloud_hypervisor::{
    Accel, AccelChoice, CloudInit, Driver, MacAddress, Network, QemuConfig, QemuDriver, StaticIpv4,
    VmEvent, VmSpec, VmStatus, tap_name,
};

pub struct TestNode {
    pub dir: tempfile::TempDir,
    pub driver: Arc<QemuDriver>,
}

impl TestNode {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary data dir");
        let driver = driver_on(dir.path()).await;
        Self { dir, driver }
    }

    /// What a platform restart does: the old driver goes, a new one takes
    /// over the same data directory.
    pub async fn restart_driver(&mut self) {
        let old = std::mem::replace(&mut self.driver, driver_on(self.dir.path()).await);
        assert_eq!(Arc::strong_count(&old), 1, "the old driver is still in use");
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The VM's runtime directory, whose layout the QEMU driver documents.
    pub fn vm_dir(&self, id: Uuid) -> PathBuf {
        self.dir.path().join("vms").join(id.to_string())
    }

    pub fn qmp_socket(&self, id: Uuid) -> PathBuf {
        self.vm_dir(id).join("qmp.sock")
    }

    pub fn qemu_pid(&self, id: Uuid) -> i32 {
        std::fs::read_to_string(self.vm_dir(id).join("qemu.pid"))
            .expect("pidfile of a running VM")
            .trim()
            .parse()
            .expect("pid")
    }

    /// A blank qcow2: SeaBIOS finds nothing to boot and keeps retrying,
    /// which is a real, running VM for every test that needs no OS.
    pub fn blank_base_image(&self) -> PathBuf {
        let path = self.dir.path().join("blank.qcow2");
        if !path.exists() {
            let status = std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&path)
                .arg("1G")
                .status()
                .expect("qemu-img");
            assert!(status.success(), "qemu-img create failed");
        }
        path
    }

    pub fn blank_spec(&self, name: &str) -> VmSpec {
        spec(name, self.blank_base_image(), 2)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let Ok(vms) = std::fs::read_dir(self.dir.path().join("vms")) else {
            return;
        };
        for vm in vms.flatten() {
            // The VM's passt is found by its socket, on its command line.
            let passt_socket = format!("/run/vmcloud-guest/{}.sock", vm.file_name().display());
            let _ = std::process::Command::new("pkill")
                .args(["-KILL", "-f", &format!("--socket {passt_socket}")])
                .status();
            let Ok(pid) = std::fs::read_to_string(vm.path().join("qemu.pid")) else {
                continue;
            };
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
    }
}

pub async fn driver_on(data_dir: &Path) -> Arc<QemuDriver> {
    Arc::new(
        QemuDriver::new(test_config(data_dir))
            .await
            .expect("QEMU driver"),
    )
}

pub fn test_config(data_dir: &Path) -> QemuConfig {
    let mut config = QemuConfig::new(data_dir);
    config.accel = AccelChoice::Fixed(Accel::Tcg);
    config
}

pub fn spec(name: &str, base_image: PathBuf, disk_gib: u64) -> VmSpec {
    let id = Uuid::new_v4();
    VmSpec {
        id,
        name: name.into(),
        vcpus: 1,
        memory_mib: 128,
        disk_gib,
        base_image,
        cloud_init: CloudInit {
            instance_id: id.to_string(),
            hostname: name.into(),
            ssh_authorized_keys: Vec::new(),
            user_data: None,
            network_config: None,
        },
        network: Network::User {
            mac: MacAddress::for_vm(id),
            bind: Ipv4Addr::LOCALHOST.into(),
            ssh_host_port: free_port(),
        },
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// Polls the VM's serial log until it contains `needle`.
pub async fn wait_for_serial(
    driver: &dyn Driver,
    id: Uuid,
    needle: &str,
    limit: Duration,
) -> String {
    wait_for_serial_times(driver, id, needle, 1, limit).await
}

/// Polls the VM's serial log until `needle` appears `times` times (the log
/// spans boots).
pub async fn wait_for_serial_times(
    driver: &dyn Driver,
    id: Uuid,
    needle: &str,
    times: usize,
    limit: Duration,
) -> String {
    let started = Instant::now();
    loop {
        let log = driver.serial_log(id, 256 * 1024).await.expect("serial log");
        let log = String::from_utf8_lossy(&log).into_owned();
        if log.matches(needle).count() >= times {
            return log;
        }
        assert!(
            started.elapsed() < limit,
            "no {needle:?} ({times} times) on the serial console within {limit:?}; it shows:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Boots under TCG take tens of seconds on a loaded 2-core machine.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

pub fn guest_image() -> Option<PathBuf> {
    let image = std::env::var_os("VMCLOUD_TEST_GUEST_IMAGE").map(PathBuf::from);
    if image.is_none() {
        skip_loudly(
            "set VMCLOUD_TEST_GUEST_IMAGE to the test guest's disk.qcow2 \
             (guest/build.sh --out DIR makes DIR/disk.qcow2) to run it",
        );
    }
    image
}

/// Says on stderr that a test did not run, and how to run it.
pub fn skip_loudly(how_to_run: &str) {
    // Straight to stderr, not eprintln!: the test harness would swallow
    // that for a passing test, and a skip must not go unnoticed.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED guest lifecycle test: {how_to_run} ***\n"
    );
}

pub async fn key_pair(dir: &Path, name: &str) -> (PathBuf, String) {
    let private = dir.join(name);
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&private)
        .status()
        .await
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
    let public = std::fs::read_to_string(private.with_extension("pub")).expect("public key");
    (private, public.trim().to_owned())
}

pub async fn ssh(key: &Path, port: u16, remote_command: &str) -> String {
    ssh_to(key, "127.0.0.1", port, remote_command).await
}

pub async fn ssh_to(key: &Path, host: &str, port: u16, remote_command: &str) -> String {
    let output = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
        .args([
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "ConnectTimeout=20",
        ])
        .args(["-o", "LogLevel=ERROR", "-i"])
        .arg(key)
        .args([
            "-p",
            &port.to_string(),
            &format!("root@{host}"),
            remote_command,
        ])
        .output()
        .await
        .expect("ssh");
    assert!(
        output.status.success(),
        "ssh failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Waits until the driver reports `wanted` for `id` among its events.
pub async fn wait_for_event(events: &mut broadcast::Receiver<VmEvent>, id: Uuid, wanted: VmStatus) {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match events.recv().await {
                Ok(event) if event == (VmEvent { id, status: wanted }) => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event channel closed"),
            }
        }
    })
    .await;
    assert!(waited.is_ok(), "no {wanted} event for {id}");
}

/// The host bridge for bridged guests (`scripts/setup-bridge.sh` makes it,
/// with 10.213.0.1/16), or `None` after saying how to run the test.
pub fn test_bridge() -> Option<String> {
    let bridge = std::env::var("VMCLOUD_TEST_BRIDGE").ok();
    if bridge.is_none() {
        skip_loudly(
            "set VMCLOUD_TEST_BRIDGE to a bridge with 10.213.0.1/16 \
             (scripts/setup-bridge.sh makes vmcbr0) to run it",
        );
    }
    bridge
}

/// An address on the test bridge's /16 that no other test picks, with
/// overwhelming likelihood.
fn bridge_address() -> Ipv4Addr {
    let [a, b, ..] = Uuid::new_v4().into_bytes();
    Ipv4Addr::new(10, 213, a.clamp(1, 254), b.clamp(1, 254))
}

/// A bridged guest at `address` (on 10.213.0.0/16) reaches a neighbour on
/// the bridge, but not the node's own bridge address, and not the neighbour
/// either once it sends from an address that is not its own.
async fn assert_bridged_guest_is_isolated(key: &Path, address: Ipv4Addr, bridge: &str) {
    // Another VM, as far as the guest can tell.
    let neighbour = Namespace::create(
        "vmcloud-neighbour",
        ("vnb0", "vnb1"),
        &["10.213.0.254/16"],
        "NEIGHBOUR-LISTENER",
    );
    ip(&["link", "set", "vnb0", "master", bridge]);
    let host_port = host_banner(Ipv4Addr::UNSPECIFIED, "HOST-WILDCARD-LISTENER");
    let neighbour_target = format!("10.213.0.254:{}", neighbour.port);
    let host_target = format!("10.213.0.1:{host_port}");
    let ssh = (address.to_string(), 22);
    let reads = guest_reads(
        key,
        (&ssh.0, ssh.1),
        &[neighbour_target.clone(), host_target.clone()],
    )
    .await;
    assert!(reads[0].1.contains("NEIGHBOUR-LISTENER"), "{reads:?}");
    assert!(
        !reads[1].1.contains("LISTENER"),
        "the guest reached its node: {reads:?}"
    );

    // The SSH session idles while the guest wears a stolen address.
    let spoofed = "10.213.250.250/16";
    let own = format!("{address}/16");
    let script = format!(
        "ip addr del {own} dev eth0; ip addr add {spoofed} dev eth0; \
         read=$(sleep 5 | nc -w 5 10.213.0.254 {port} 2>&1); \
         ip addr del {spoofed} dev eth0; ip addr add {own} dev eth0; echo \"spoofed=>$read\"",
        port = neighbour.port
    );
    let answer = ssh_to(key, &ssh.0, ssh.1, &script).await;
    assert!(answer.contains("spoofed=>"), "{answer}");
    assert!(
        !answer.contains("NEIGHBOUR-LISTENER"),
        "a guest sending from another address reached the neighbour: {answer}"
    );
}

/// Boots a guest on `bridge` with a static address, SSHes straight to that
/// address, checks what it can reach, reads its network counters and
/// destroys it, tap included.
pub async fn bridged_life(driver: &dyn Driver, dir: &Path, image: PathBuf, bridge: &str) {
    let (key, public) = key_pair(dir, "bridged").await;
    let mut spec = spec("bridged", image, 1);
    spec.memory_mib = 256;
    spec.cloud_init.ssh_authorized_keys = vec![public];
    let address = bridge_address();
    spec.network = Network::Bridge {
        mac: MacAddress::for_vm(spec.id),
        bridge: bridge.to_owned(),
        ipv4: Some(StaticIpv4 {
            address,
            prefix_len: 16,
            gateway: Some(Ipv4Addr::new(10, 213, 0, 1)),
            nameservers: Vec::new(),
        }),
    };
    driver.define(&spec).await.expect("define");
    driver.start(spec.id).await.expect("start");
    let tap = tap_name(spec.id);
    let master =
        std::fs::read_link(format!("/sys/class/net/{tap}/master")).expect("tap on a bridge");
    assert!(master.ends_with(bridge), "{}", master.display());

    wait_for_serial(
        driver,
        spec.id,
        "VMCLOUD-GUEST-READY hostname=bridged",
        BOOT_TIMEOUT,
    )
    .await;
    // Straight to the guest's own address on port 22: no forwarding.
    let answer = ssh_to(
        &key,
        &address.to_string(),
        22,
        "hostname; ip -4 -o addr show dev eth0",
    )
    .await;
    assert!(answer.starts_with("bridged\n"), "{answer}");
    assert!(answer.contains(&format!("inet {address}/16")), "{answer}");
    assert_bridged_guest_is_isolated(&key, address, bridge).await;
    let stats = driver.stats(spec.id).await.expect("stats");
    assert!(
        stats.net_rx_bytes.is_some_and(|bytes| bytes > 0),
        "{stats:?}"
    );
    assert!(
        stats.net_tx_bytes.is_some_and(|bytes| bytes > 0),
        "{stats:?}"
    );

    driver.destroy(spec.id).await.expect("destroy");
    assert!(
        !Path::new("/sys/class/net").join(&tap).exists(),
        "the tap went with the VM"
    );
}

/// Sends `banner` to every client that connects to `listener`, then hangs up.
fn serve_banner(listener: TcpListener, banner: &'static str) {
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            let _ = client.write_all(banner.as_bytes());
        }
    });
}

/// A TCP listener on the host that answers `banner` and must stay out of a
/// guest's reach.
pub fn host_banner(address: Ipv4Addr, banner: &'static str) -> u16 {
    let listener = TcpListener::bind((address, 0)).expect("host listener");
    let port = listener.local_addr().expect("local addr").port();
    serve_banner(listener, banner);
    port
}

/// The host's own IPv4 addresses except loopback (its uplink, bridges, ...).
pub fn host_ipv4_addresses() -> Vec<Ipv4Addr> {
    let output = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("ip addr");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .nth(3)?
                .split('/')
                .next()?
                .parse()
                .ok()
        })
        .filter(|address: &Ipv4Addr| !address.is_loopback())
        .collect()
}

fn ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip");
    assert!(status.success(), "ip {args:?} failed");
}

/// A network namespace the test makes, joined to the host by a veth pair,
/// with a listener on all its addresses. Deleted on drop.
pub struct Namespace {
    name: &'static str,
    host_end: &'static str,
    /// Where the listener answers `banner`.
    pub port: u16,
}

impl Namespace {
    /// Needs root. `addresses` (CIDR) go on the namespace's end; the host's
    /// end is up, and the caller gives it addresses or a bridge.
    pub fn create(
        name: &'static str,
        (host_end, namespace_end): (&'static str, &'static str),
        addresses: &[&str],
        banner: &'static str,
    ) -> Self {
        // Left over by a test that was killed.
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", name]);
        ip(&[
            "link",
            "add",
            host_end,
            "type",
            "veth",
            "peer",
            "name",
            namespace_end,
            "netns",
            name,
        ]);
        ip(&["link", "set", host_end, "up"]);
        for address in addresses {
            ip(&["-n", name, "addr", "add", address, "dev", namespace_end]);
        }
        ip(&["-n", name, "link", "set", namespace_end, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);

        // A thread that enters the namespace binds the listener there; the
        // socket stays in that namespace wherever it is used.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let namespace =
                std::fs::File::open(format!("/run/netns/{name}")).expect("namespace file");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&namespace),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            let listener =
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("namespace listener");
            sender
                .send(listener.local_addr().expect("local addr").port())
                .expect("send port");
            serve_banner(listener, banner);
        });
        let port = receiver.recv().expect("namespace port");
        Self {
            name,
            host_end,
            port,
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", self.name])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", self.host_end])
            .status();
    }
}

/// "The internet" for isolation tests: a namespace routed from the host,
/// with a public-looking address (TEST-NET-2) guests must reach and an
/// RFC 1918 one they must not (the node's internal ranges).
pub struct Outside;

impl Outside {
    pub const PUBLIC: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    pub const INTERNAL: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 2);
    pub const BANNER: &'static str = "OUTSIDE-LISTENER";

    pub fn create() -> Namespace {
        let outside = Namespace::create(
            "vmcloud-outside",
            ("vmcout0", "vmcout1"),
            &["198.51.100.2/24", "10.214.0.2/24"],
            Self::BANNER,
        );
        ip(&["addr", "add", "198.51.100.1/24", "dev", outside.host_end]);
        ip(&["addr", "add", "10.214.0.1/24", "dev", outside.host_end]);
        outside
    }
}

/// From inside the guest (over SSH to `host:ssh_port`), what a TCP client
/// reads from each `address:port` target: the banner of whatever answered,
/// or nothing.
pub async fn guest_reads(
    key: &Path,
    (host, ssh_port): (&str, u16),
    targets: &[String],
) -> Vec<(String, String)> {
    // The listeners send their banner and hang up at once; the sleep keeps
    // nc's input open until then. -w bounds targets that never answer.
    let script: Vec<String> = targets
        .iter()
        .map(|target| {
            let (address, port) = target.rsplit_once(':').expect("address:port");
            format!("echo \"{target}=>$(sleep 5 | nc -w 5 {address} {port} 2>&1)\"")
        })
        .collect();
    let script = script.join("; ");
    let answer = ssh_to(key, host, ssh_port, &script).await;
    targets
        .iter()
        .map(|target| {
            let prefix = format!("{target}=>");
            let line = answer
                .lines()
                .find_map(|line| line.strip_prefix(&prefix))
                .unwrap_or_else(|| panic!("no result for {target} in {answer}"));
            (target.clone(), line.to_owned())
        })
        .collect()
}

/// The host's IPv4 default gateway, if it has one.
fn host_default_gateway() -> Option<Ipv4Addr> {
    let output = std::process::Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&output.stdout).into_owned();
    let mut words = routes.split_whitespace();
    words.find(|word| *word == "via")?;
    words.next()?.parse().ok()
}

/// Checks from inside a running guest, reached over SSH on `ssh_port`, that
/// it reaches an outside address but nothing of the host: not a listener on
/// the host's 127.0.0.1 through whatever the guest's gateway maps to (10.0.2.2
/// under QEMU's slirp, the host's gateway under passt), not the host's own
/// addresses, not the node's internal ranges. A guest on restricted slirp
/// (`reaches_outside` false) reaches nothing at all.
pub async fn assert_guest_is_isolated(key: &Path, ssh_port: u16, reaches_outside: bool) {
    // One "outside" at a time: its namespace and veth names are fixed.
    static OUTSIDE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one_at_a_time = OUTSIDE.lock().await;
    let outside = Outside::create();
    let loopback_port = host_banner(Ipv4Addr::LOCALHOST, "HOST-LOOPBACK-LISTENER");
    let any_port = host_banner(Ipv4Addr::UNSPECIFIED, "HOST-WILDCARD-LISTENER");
    let gateways = [Some(Ipv4Addr::new(10, 0, 2, 2)), host_default_gateway()];
    let mut blocked = Vec::new();
    for gateway in gateways.into_iter().flatten() {
        blocked.push(format!("{gateway}:{loopback_port}"));
        blocked.push(format!("{gateway}:{any_port}"));
    }
    for address in host_ipv4_addresses() {
        blocked.push(format!("{address}:{any_port}"));
    }
    blocked.push(format!("{}:{}", Outside::INTERNAL, outside.port));
    let reachable = format!("{}:{}", Outside::PUBLIC, outside.port);

    let mut targets = blocked.clone();
    targets.push(reachable.clone());
    let reads = guest_reads(key, ("127.0.0.1", ssh_port), &targets).await;
    let leaks: Vec<_> = reads
        .iter()
        .filter(|(target, read)| blocked.contains(target) && read.contains("LISTENER"))
        .collect();
    assert!(
        leaks.is_empty(),
        "the guest reached the host or an internal address: {leaks:?}"
    );
    let outside_read = &reads
        .iter()
        .find(|(target, _)| *target == reachable)
        .expect("read")
        .1;
    assert_eq!(
        outside_read.contains(Outside::BANNER),
        reaches_outside,
        "the guest did not reach the outside listener at {reachable}: {outside_read:?} (all: {reads:?})"
    );
}

/// A user-mode guest named `name` that lets `key` in, with its forwarded
/// SSH port.
pub fn user_mode_guest(name: &str, image: PathBuf, public_key: String) -> (VmSpec, u16) {
    let mut spec = spec(name, image, 1);
    spec.memory_mib = 256;
    spec.cloud_init.ssh_authorized_keys = vec![public_key];
    let Network::User { ssh_host_port, .. } = spec.network else {
        unreachable!("test specs use user networking");
    };
    (spec, ssh_host_port)
}
