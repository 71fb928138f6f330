//! Billing: plan prices, one subscription per instance, usage charged per
//! started hour into an append-only ledger, balances derived from it,
//! admins' credit adjustments, and monthly invoices with VAT. Money is always an integer of minor units
//! with its currency, never a float.
//!
//! Time comes from the services' [`Clock`](crate::clock::Clock), so tests
//! drive accrual through simulated hours.

pub mod hours;
pub mod invoices;
pub mod ledger;
pub mod money;
pub mod payments;
pub mod pdf;
pub mod policy;
pub mod refunds;
pub mod stripe;
pub mod stripe_client;
pub mod subscriptions;
pub mod tax;
pub mod usage;

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::clock::SharedClock;
use crate::db::Database;
use crate::jobs::JobQueue;

/// What the billing services need.
#[derive(Clone, Debug)]
pub struct Services {
    pub db: Database,
    pub cache: Cache,
    pub clock: SharedClock,
    pub jobs: JobQueue,
    /// The card payment provider; `None` when no key is configured.
    pub payments: Option<payments::SharedProvider>,
}

/// Accrues usage, then issues last month's invoices, every `interval` until
/// `stop`. Every process runs it: runs that overlap are harmless (see
/// [`usage`] and [`invoices`]), so no leader is needed.
pub async fn run_accrual(services: Services, interval: Duration, stop: CancellationToken) {
    loop {
        if let Err(err) = pass(&services).await {
            tracing::warn!(error = %err, "billing pass failed");
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One billing pass: invoices are issued only once every hour of their
/// month has been charged, so only after an accrual that succeeded.
pub async fn pass(services: &Services) -> crate::error::Result<()> {
    let run = usage::accrue_all(services).await?;
    if run.charges > 0 {
        tracing::info!(
            subscriptions = run.subscriptions,
            charges = run.charges,
            "usage accrued"
        );
    }
    let issued = invoices::issue_due(services).await?;
    if issued > 0 {
        tracing::info!(issued, "invoices issued");
    }
    Ok(())
}
