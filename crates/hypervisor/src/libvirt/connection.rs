//! The driver's one libvirt connection, reopened when it drops, and the
//! mapping of libvirt errors into the crate's [`Error`].

use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use virt::connect::Connect;
use virt::enumutil::Enum;
use virt::error::ErrorNumber;

use crate::driver::{Error, Result};

/// A peer that misses this many keepalives `KEEPALIVE_INTERVAL_SECS` apart is
/// taken as gone, which closes the connection and makes the next call reconnect.
const KEEPALIVE_INTERVAL_SECS: i32 = 5;
const KEEPALIVE_MISSES: u32 = 3;

#[derive(Debug)]
pub(crate) struct Connection {
    uri: String,
    current: Mutex<Option<Connect>>,
}

impl Connection {
    pub fn new(uri: String) -> Self {
        Self {
            uri,
            current: Mutex::new(None),
        }
    }

    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The open connection, reopened if it dropped. Blocks.
    pub fn get(&self) -> Result<Connect> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(connection) = current.as_ref() {
            if connection.is_alive().unwrap_or(false) {
                return Ok(connection.clone());
            }
            tracing::warn!(uri = %self.uri, "libvirt connection lost; reconnecting");
        }
        start_event_loop();
        let connection = Connect::open(Some(&self.uri)).map_err(|error| {
            Error::Unavailable(format!(
                "cannot connect to {}: {}",
                self.uri,
                error.message()
            ))
        })?;
        if let Err(error) = connection.set_keep_alive(KEEPALIVE_INTERVAL_SECS, KEEPALIVE_MISSES) {
            tracing::debug!(uri = %self.uri, %error, "libvirt keepalive not available");
        }
        *current = Some(connection.clone());
        Ok(connection)
    }
}

/// libvirt's default event loop, which keepalives need. It must be
/// registered before the first connection opens, once per process.
fn start_event_loop() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        // Errors come back as values; libvirt would also print each on stderr.
        virt::error::clear_error_callback();
        if let Err(error) = virt::event::event_register_default_impl() {
            tracing::warn!(%error, "libvirt event loop unavailable");
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("libvirt-events".into())
            .spawn(|| {
                loop {
                    if let Err(error) = virt::event::event_run_default_impl() {
                        tracing::warn!(%error, "libvirt event loop iteration failed");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            });
        if let Err(error) = spawned {
            tracing::warn!(%error, "cannot start the libvirt event loop thread");
        }
    });
}

/// The libvirt error code, for the few errors the driver tells apart.
pub(crate) fn error_is(error: &virt::error::Error, number: ErrorNumber) -> bool {
    matches!(error.code(), Enum::Known(code) if code == number)
}

/// A failed libvirt call as the crate's error: lost daemons are
/// `Unavailable`, everything else carries libvirt's own message.
#[expect(
    clippy::needless_pass_by_value,
    reason = "takes what `map_err` hands over"
)]
pub(crate) fn libvirt_error(error: virt::error::Error) -> Error {
    let lost = [
        ErrorNumber::SystemError,
        ErrorNumber::Rpc,
        ErrorNumber::NoConnect,
        ErrorNumber::AuthFailed,
    ];
    if lost.iter().any(|&number| error_is(&error, number)) {
        Error::Unavailable(error.message().to_owned())
    } else {
        Error::Libvirt(error.message().to_owned())
    }
}

/// True when `uri` names a daemon on this machine (no host part), whose
/// files (serial logs, VNC sockets) the driver can open directly.
pub(crate) fn is_local_uri(uri: &str) -> bool {
    uri.split_once("://")
        .is_some_and(|(_, rest)| rest.split('/').next().is_none_or(str::is_empty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uris_without_a_host_are_local() {
        assert!(is_local_uri("qemu:///system"));
        assert!(is_local_uri("qemu+unix:///system?socket=/run/x.sock"));
        assert!(!is_local_uri("qemu+ssh://root@node-7/system"));
        assert!(!is_local_uri("qemu+tls://node-7.example.com/system"));
        assert!(!is_local_uri("not a uri"));
    }
}
