//! Billing: plan prices, one subscription per instance, usage charged per
//! started hour into an append-only ledger, balances derived from it,
//! admins' credit adjustments, and monthly invoices with VAT. Money is always an integer of minor units
//! with its currency, never a float.
//!
//! Time comes from the services' [`Clock`](crate::clock::Clock), so tests
//! drive accrual through simulated hours.

pub mod coupons;
pub mod dunning;
pub mod hours;
pub mod invoices;
pub mod ledger;
pub mod money;
pub mod payments;
pub mod pdf;
pub mod policy;
pub mod refunds;
pub mod revenue;
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
use crate::error::Result;
use crate::ids::UserId;
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

/// What follows money arriving on an account (a top-up, an admin's credit,
/// a manual payment): its open invoices are paid from credit, oldest first.
pub async fn credit_arrived(services: &Services, user: UserId) -> Result<()> {
    let paid = invoices::settle_from_credit(services, user).await?;
    if !paid.is_empty() {
        tracing::info!(%user, paid = paid.len(), "invoices paid from credit");
    }
    // Paid up: a suspended account is restored now, not at the next pass.
    dunning::check_account(services, user).await
}

/// Accrues usage, issues last month's invoices and runs dunning, every `interval` until
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
/// month has been charged, so only after an accrual that succeeded; then
/// dunning follows up on the unpaid ones.
pub async fn pass(services: &Services) -> Result<()> {
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
    let dunning = dunning::run(services).await?;
    if !dunning.is_empty() {
        tracing::info!(?dunning, "dunning steps taken");
    }
    Ok(())
}
