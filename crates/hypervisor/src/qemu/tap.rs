//! The tap device of a bridged VM. The driver makes it (which takes
//! CAP_NET_ADMIN) and puts it on the node's bridge before QEMU opens it, and
//! removes it with the VM; it persists across the VM's restarts meanwhile.

use std::path::Path;

use super::command::{command, run};
use crate::driver::{Error, Result};

fn exists(interface: &str) -> bool {
    Path::new("/sys/class/net").join(interface).exists()
}

fn ip() -> tokio::process::Command {
    command(Path::new("ip"))
}

/// Makes `tap` if needed and attaches it, up, to `bridge`.
pub(crate) async fn attach(tap: &str, bridge: &str) -> Result<()> {
    if !exists(bridge) {
        return Err(Error::InvalidArgument(format!(
            "bridge {bridge} does not exist on this node"
        )));
    }
    if !exists(tap) {
        run(ip().args(["tuntap", "add", "dev", tap, "mode", "tap"])).await?;
    }
    run(ip().args(["link", "set", "dev", tap, "master", bridge, "up"])).await?;
    Ok(())
}

pub(crate) async fn remove(tap: &str) -> Result<()> {
    if exists(tap) {
        run(ip().args(["link", "del", "dev", tap])).await?;
    }
    Ok(())
}

/// The tap's counters from the guest's side: what the tap transmits, the
/// guest receives.
pub(crate) async fn guest_counters(tap: &str) -> (Option<u64>, Option<u64>) {
    let counter = |name: &str| {
        let path = format!("/sys/class/net/{tap}/statistics/{name}");
        async move {
            tokio::fs::read_to_string(path)
                .await
                .ok()?
                .trim()
                .parse()
                .ok()
        }
    };
    (counter("tx_bytes").await, counter("rx_bytes").await)
}
