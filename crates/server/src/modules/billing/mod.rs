//! Billing: plan prices, one subscription per instance, usage charged per
//! started hour into an append-only ledger, balances derived from it, and
//! admins' credit adjustments. Money is always an integer of minor units
//! with its currency, never a float.
//!
//! Time comes from the services' [`Clock`](crate::clock::Clock), so tests
//! drive accrual through simulated hours.

pub mod hours;
pub mod ledger;
pub mod policy;
pub mod subscriptions;
pub mod usage;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::clock::SharedClock;
use crate::db::Database;

/// What the billing services need.
#[derive(Clone, Debug)]
pub struct Services {
    pub db: Database,
    pub cache: Cache,
    pub clock: SharedClock,
}

/// Accrues usage every `interval` until `stop`. Every process runs it: runs
/// that overlap are harmless (see [`usage`]), so no leader is needed.
pub async fn run_accrual(services: Services, interval: Duration, stop: CancellationToken) {
    loop {
        match usage::accrue_all(&services).await {
            Ok(run) if run.charges > 0 => {
                tracing::info!(
                    subscriptions = run.subscriptions,
                    charges = run.charges,
                    "usage accrued"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "usage accrual failed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}
