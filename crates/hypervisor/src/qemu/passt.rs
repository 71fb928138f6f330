//! The passt process of a user-mode VM: QEMU's NIC is a stream socket to it
//! (`-netdev stream`), and it carries the guest's connections out through
//! host sockets owned by an unprivileged account, which the node's
//! `vmcloud_guests` nftables table confines. Unlike QEMU's slirp, with
//! `--no-map-gw` it does not map the guest's gateway to the host's loopback.
//!
//! passt daemonizes once it listens, so QEMU can connect as soon as the
//! command returns. `--one-off` (exit when QEMU disconnects) is not used: the
//! passt of Debian 12 exits at once with it ("Client closed connection")
//! before any client came. So the driver ends passt itself whenever the
//! VM's QEMU is gone, and finds it by its socket path on its command line.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use super::command::{command, run};
use super::paths::{PASST_SOCKET_DIR, VmPaths};
use super::process;
use super::remove_if_present;
use crate::driver::{Error, Result};

/// How long a killed passt gets to release its socket and SSH port.
const EXIT_GRACE: Duration = Duration::from_secs(5);
const EXIT_POLL: Duration = Duration::from_millis(20);

/// Makes the directory passt creates its sockets in, owned by `user`.
pub(crate) async fn prepare_socket_dir(user: &str) -> Result<()> {
    run(command(Path::new("install")).args(["-d", "-m", "0700", "-o", user, PASST_SOCKET_DIR]))
        .await
        .map(drop)
}

/// Starts the VM's passt, forwarding `bind:ssh_host_port` to the guest's
/// port 22, after ending one a previous boot left behind.
pub(crate) async fn start(
    program: &Path,
    user: &str,
    paths: &VmPaths,
    bind: IpAddr,
    ssh_host_port: u16,
) -> Result<()> {
    stop(paths).await?;
    remove_if_present(&paths.passt_socket).await?;
    run(command(program).args(args(user, paths, bind, ssh_host_port))).await?;
    Ok(())
}

fn args(user: &str, paths: &VmPaths, bind: IpAddr, ssh_host_port: u16) -> Vec<String> {
    [
        "--quiet",
        "--log-file",
        &paths.passt_log.display().to_string(),
        "--socket",
        &paths.passt_socket.display().to_string(),
        "--runas",
        user,
        "--no-map-gw",
        "--tcp-ports",
        &format!("{bind}/{ssh_host_port}:22"),
        // Else the SSH port would be forwarded for UDP too.
        "--udp-ports",
        "none",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Ends the VM's passt, if one runs, and waits until it is gone.
pub(crate) async fn stop(paths: &VmPaths) -> Result<()> {
    let running = process::find_with_argument(&paths.passt_socket)?;
    for pid in &running {
        process::kill(*pid)?;
    }
    let deadline = Instant::now() + EXIT_GRACE;
    while !running.is_empty() && !process::find_with_argument(&paths.passt_socket)?.is_empty() {
        if Instant::now() >= deadline {
            return Err(Error::Unavailable(format!(
                "passt for {} survived SIGKILL",
                paths.dir.display()
            )));
        }
        tokio::time::sleep(EXIT_POLL).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::tests::example_spec;

    #[test]
    fn passt_drops_privileges_keeps_the_gateway_off_loopback_and_forwards_ssh_only() {
        let paths = VmPaths::new(Path::new("/srv/vmcloud/vms"), example_spec().id);
        let dir = "/srv/vmcloud/vms/01927a3c-5e4f-7abc-8def-0123456789ab";
        let args = args("vmcloud-guest", &paths, "::1".parse().expect("ip"), 2200);
        assert_eq!(
            args.join(" "),
            format!(
                "--quiet --log-file {dir}/passt.log \
                 --socket /run/vmcloud-guest/01927a3c-5e4f-7abc-8def-0123456789ab.sock \
                 --runas vmcloud-guest --no-map-gw --tcp-ports ::1/2200:22 --udp-ports none"
            )
        );
    }
}
