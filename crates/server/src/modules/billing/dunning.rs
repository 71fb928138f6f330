//! Dunning, a step of every billing pass: what happens to an account whose
//! invoices stay unpaid past their due date.
//!
//! The clock of an account's case starts at the due date of its oldest
//! overdue invoice (`overdue_since`):
//! - at once, its subscriptions become `past_due` and a reminder is sent;
//! - after the grace period, its instances are suspended (stopped through
//!   their queue, and kept from starting), its subscriptions `suspended`;
//! - `warning_days_before_termination` before the termination delay ends, a
//!   warning is sent;
//! - when it ends, the instances are deleted through the normal deletion,
//!   which releases everything and cancels their subscriptions.
//!
//! Paying every overdue invoice resolves the case, and the account is
//! restored: its subscriptions `active`, its suspended instances started.
//!
//! Passes may overlap (every process runs them) and be cut short at any
//! point. Each step is claimed once by a conditional update of its column in
//! the case (`… SET suspended_at = now WHERE suspended_at IS NULL`): the pass
//! that wins the claim tells the account (a notification and its email,
//! keyed by case and step) and writes the audit entry, so no notice is ever
//! given twice (a crash right after a claim loses that notice, never
//! duplicates it). What must happen whatever crashes — subscriptions'
//! statuses, instances stopped, started or deleted — is enforced again by
//! every pass from the case's state, and the instance actions it queues are
//! no-ops once done.

use chrono::{DateTime, Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, Query};
use sea_orm::{
    ColumnTrait as _, EntityTrait as _, QueryFilter as _, QueryOrder as _, QuerySelect as _,
};
use serde::{Deserialize, Serialize};

use super::Services;
use crate::db::entities::dunning_case;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::instance_action::ActionKind;
use crate::db::entities::invoice::{self, InvoiceStatus};
use crate::db::entities::subscription::{self, SubscriptionStatus};
use crate::error::{Error, FieldError, Result};
use crate::ids::{DunningCaseId, UserId};
use crate::modules::audit::{self, Event};
use crate::modules::instances::actions::platform_action;
use crate::modules::notifications::{self, Notice};
use crate::modules::settings;

/// Why dunning suspended an instance, as its owner reads it.
const SUSPENSION_REASON: &str =
    "An invoice of the account is overdue; the instance starts again once it is paid.";

/// The delays of dunning, in days.
#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct DunningPolicy {
    /// Days after the due date before the instances are suspended.
    pub grace_days: u32,
    /// Days after the due date before the instances are deleted.
    pub termination_days: u32,
    /// Days before the deletion that the warning is sent.
    pub warning_days_before_termination: u32,
}

impl Default for DunningPolicy {
    fn default() -> Self {
        Self {
            grace_days: 3,
            termination_days: 14,
            warning_days_before_termination: 3,
        }
    }
}

impl settings::Setting for DunningPolicy {
    const KEY: &'static str = "dunning";
    const DESCRIPTION: &'static str = "Days after an unpaid invoice's due date before the account's instances are suspended, then deleted, and when the deletion is warned of.";

    fn check(&self) -> Result<()> {
        let mut fields = Vec::new();
        if self.grace_days > 90 {
            fields.push(FieldError::new("grace_days", "must be at most 90"));
        }
        if self.termination_days <= self.grace_days || self.termination_days > 365 {
            fields.push(FieldError::new(
                "termination_days",
                "must be more than grace_days and at most 365",
            ));
        }
        let suspended_for = self.termination_days.saturating_sub(self.grace_days);
        if self.warning_days_before_termination == 0
            || self.warning_days_before_termination > suspended_for
        {
            fields.push(FieldError::new(
                "warning_days_before_termination",
                "must be at least 1 and at most termination_days - grace_days (the warning \
                 comes once the instances are suspended)",
            ));
        }
        Error::check_fields(fields)
    }
}

impl DunningPolicy {
    fn suspend_at(&self, since: DateTime<Utc>) -> DateTime<Utc> {
        since + Duration::days(i64::from(self.grace_days))
    }

    fn terminate_at(&self, since: DateTime<Utc>) -> DateTime<Utc> {
        since + Duration::days(i64::from(self.termination_days))
    }

    fn warn_at(&self, since: DateTime<Utc>) -> DateTime<Utc> {
        self.terminate_at(since) - Duration::days(i64::from(self.warning_days_before_termination))
    }
}

pub async fn get(db: &crate::db::Database, cache: &crate::cache::Cache) -> Result<DunningPolicy> {
    settings::load(db, cache).await
}

/// What one run did: the steps it claimed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DunningRun {
    pub past_due: usize,
    pub suspended: usize,
    pub warned: usize,
    pub terminated: usize,
    pub resolved: usize,
}

impl DunningRun {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Opens a case for every account with an overdue invoice and moves every
/// open case on.
pub async fn run(services: &Services) -> Result<DunningRun> {
    let now = services.clock.now();
    let policy = get(&services.db, &services.cache).await?;
    let overdue: Vec<(UserId, Option<DateTime<Utc>>)> = invoice::Entity::find()
        .select_only()
        .column(invoice::Column::UserId)
        .column_as(invoice::Column::DueAt.min(), "since")
        .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
        .filter(invoice::Column::DueAt.lt(now))
        .group_by(invoice::Column::UserId)
        .into_tuple()
        .all(services.db.writer())
        .await?;
    for (user, since) in overdue {
        open_case(services, user, since.unwrap_or(now)).await?;
    }
    let cases = dunning_case::Entity::find()
        .filter(dunning_case::Column::ResolvedAt.is_null())
        .order_by_asc(dunning_case::Column::Id)
        .all(services.db.writer())
        .await?;
    let mut run = DunningRun::default();
    for case in cases {
        step(services, &policy, &case, now, &mut run).await?;
    }
    restore(services, None).await?;
    Ok(run)
}

/// Brings one account's case up to date at once, as after a payment: a
/// case whose invoices are all paid is resolved and the account restored
/// without waiting for the next pass.
pub async fn check_account(services: &Services, user: UserId) -> Result<()> {
    let now = services.clock.now();
    let policy = get(&services.db, &services.cache).await?;
    let case = dunning_case::Entity::find()
        .filter(dunning_case::Column::OpenUserId.eq(user))
        .one(services.db.writer())
        .await?;
    if let Some(case) = case {
        step(services, &policy, &case, now, &mut DunningRun::default()).await?;
    }
    restore(services, Some(user)).await
}

/// Opens the account's case unless one is open already (the unique
/// `open_user_id` settles races between passes).
async fn open_case(services: &Services, user: UserId, since: DateTime<Utc>) -> Result<()> {
    let stamp = crate::db::entities::now();
    dunning_case::Entity::insert_many([dunning_case::ActiveModel {
        id: Set(DunningCaseId::new()),
        user_id: Set(user),
        open_user_id: Set(Some(user)),
        overdue_since: Set(since),
        past_due_at: Set(None),
        suspended_at: Set(None),
        warned_at: Set(None),
        terminated_at: Set(None),
        resolved_at: Set(None),
        created_at: Set(stamp),
        updated_at: Set(stamp),
    }])
    .on_conflict_do_nothing_on([dunning_case::Column::OpenUserId])
    .exec_without_returning(services.db.writer())
    .await?;
    Ok(())
}

/// Takes the steps of a case that are due.
async fn step(
    services: &Services,
    policy: &DunningPolicy,
    case: &dunning_case::Model,
    now: DateTime<Utc>,
    run: &mut DunningRun,
) -> Result<()> {
    let user = case.user_id;
    let overdue = invoice::Entity::find()
        .filter(invoice::Column::UserId.eq(user))
        .filter(invoice::Column::Status.eq(InvoiceStatus::Open))
        .filter(invoice::Column::DueAt.lt(now))
        .order_by_asc(invoice::Column::DueAt)
        .all(services.db.writer())
        .await?;
    if overdue.is_empty() {
        return resolve(services, case, now, run).await;
    }
    let owed = owed(&overdue);
    let numbers: Vec<&str> = overdue.iter().filter_map(|i| i.number.as_deref()).collect();
    let since = case.overdue_since;
    let (suspend_at, warn_at, terminate_at) = (
        policy.suspend_at(since),
        policy.warn_at(since),
        policy.terminate_at(since),
    );
    let details = serde_json::json!({
        "case_id": case.id,
        "invoices": numbers,
        "owed": owed,
        "overdue_since": since,
    });
    let notice = Notice::SuspensionWarning {
        case_id: case.id,
        invoices: numbers.iter().map(|&n| n.to_owned()).collect(),
        owed: owed.clone(),
        suspend_at,
    };
    if take(services, case, Claim::PastDue, now, notice, &details).await? {
        run.past_due += 1;
    }
    if case.terminated_at.is_none() {
        set_subscriptions(
            services,
            user,
            &[SubscriptionStatus::Active],
            SubscriptionStatus::PastDue,
        )
        .await?;
    }
    if now >= suspend_at && case.terminated_at.is_none() {
        let notice = Notice::Suspended {
            case_id: case.id,
            owed: owed.clone(),
            terminate_at,
        };
        if take(services, case, Claim::Suspended, now, notice, &details).await? {
            run.suspended += 1;
        }
        enforce_suspension(services, user).await?;
    }
    if now >= warn_at && now < terminate_at && case.terminated_at.is_none() {
        let notice = Notice::TerminationWarning {
            case_id: case.id,
            owed: owed.clone(),
            terminate_at,
        };
        if take(services, case, Claim::Warned, now, notice, &details).await? {
            run.warned += 1;
        }
    }
    if now >= terminate_at {
        let notice = Notice::Terminated {
            case_id: case.id,
            owed,
        };
        if take(services, case, Claim::Terminated, now, notice, &details).await? {
            run.terminated += 1;
        }
        enforce_termination(services, user).await?;
    }
    Ok(())
}

/// Takes a step of the case unless it was taken already: claims it, and
/// if this pass won the claim, tells the account and audits the step.
async fn take(
    services: &Services,
    case: &dunning_case::Model,
    step: Claim,
    now: DateTime<Utc>,
    notice: Notice,
    details: &serde_json::Value,
) -> Result<bool> {
    let taken = match step {
        Claim::PastDue => case.past_due_at,
        Claim::Suspended => case.suspended_at,
        Claim::Warned => case.warned_at,
        Claim::Terminated => case.terminated_at,
        Claim::Resolved => case.resolved_at,
    };
    if taken.is_some() || !claim(services, case.id, step, now).await? {
        return Ok(false);
    }
    notify(services, case.user_id, notice).await?;
    audited(services, step.action(), case.user_id, details).await?;
    Ok(true)
}

/// Closes a case whose invoices are all paid (or void). The account is
/// restored by [`restore`].
async fn resolve(
    services: &Services,
    case: &dunning_case::Model,
    now: DateTime<Utc>,
    run: &mut DunningRun,
) -> Result<()> {
    if !claim(services, case.id, Claim::Resolved, now).await? {
        return Ok(());
    }
    run.resolved += 1;
    let details = serde_json::json!({"case_id": case.id, "overdue_since": case.overdue_since});
    audited(services, Claim::Resolved.action(), case.user_id, &details).await?;
    if case.suspended_at.is_some() && case.terminated_at.is_none() {
        notify(
            services,
            case.user_id,
            Notice::Restored { case_id: case.id },
        )
        .await?;
    }
    Ok(())
}

#[derive(Clone, Copy, Debug)]
enum Claim {
    PastDue,
    Suspended,
    Warned,
    Terminated,
    Resolved,
}

impl Claim {
    /// The audit action of the step.
    fn action(self) -> &'static str {
        match self {
            Self::PastDue => "billing.dunning.past_due",
            Self::Suspended => "billing.dunning.suspended",
            Self::Warned => "billing.dunning.termination_warned",
            Self::Terminated => "billing.dunning.terminated",
            Self::Resolved => "billing.dunning.resolved",
        }
    }
}

/// Records that this pass takes the step; `false` when another pass took
/// it first or the case is resolved.
async fn claim(
    services: &Services,
    case: DunningCaseId,
    claim: Claim,
    now: DateTime<Utc>,
) -> Result<bool> {
    let column = match claim {
        Claim::PastDue => dunning_case::Column::PastDueAt,
        Claim::Suspended => dunning_case::Column::SuspendedAt,
        Claim::Warned => dunning_case::Column::WarnedAt,
        Claim::Terminated => dunning_case::Column::TerminatedAt,
        Claim::Resolved => dunning_case::Column::ResolvedAt,
    };
    let mut update = dunning_case::Entity::update_many()
        .col_expr(column, Expr::value(Some(now)))
        .col_expr(
            dunning_case::Column::UpdatedAt,
            Expr::value(crate::db::entities::now()),
        );
    if matches!(claim, Claim::Resolved) {
        update = update.col_expr(
            dunning_case::Column::OpenUserId,
            Expr::value(Option::<UserId>::None),
        );
    }
    let claimed = update
        .filter(dunning_case::Column::Id.eq(case))
        .filter(column.is_null())
        .filter(dunning_case::Column::ResolvedAt.is_null())
        .exec(services.db.writer())
        .await?;
    Ok(claimed.rows_affected == 1)
}

/// Moves the account's subscriptions in one of `from` to `to`.
async fn set_subscriptions(
    services: &Services,
    user: UserId,
    from: &[SubscriptionStatus],
    to: SubscriptionStatus,
) -> Result<()> {
    subscription::Entity::update_many()
        .col_expr(subscription::Column::Status, Expr::value(to))
        .col_expr(
            subscription::Column::UpdatedAt,
            Expr::value(crate::db::entities::now()),
        )
        .filter(subscription::Column::UserId.eq(user))
        .filter(subscription::Column::Status.is_in(from.iter().copied()))
        .exec(services.db.writer())
        .await?;
    Ok(())
}

/// The account's instances that still exist.
async fn live_instances(services: &Services, user: UserId) -> Result<Vec<instance::Model>> {
    Ok(instance::Entity::find()
        .filter(instance::Column::UserId.eq(user))
        .filter(instance::Column::DeletedAt.is_null())
        .all(services.db.writer())
        .await?)
}

/// Every instance of the account suspended (those ordered since too), and
/// its subscriptions.
async fn enforce_suspension(services: &Services, user: UserId) -> Result<()> {
    set_subscriptions(
        services,
        user,
        &[SubscriptionStatus::Active, SubscriptionStatus::PastDue],
        SubscriptionStatus::Suspended,
    )
    .await?;
    for row in live_instances(services, user).await? {
        if matches!(
            row.status,
            InstanceStatus::Suspended | InstanceStatus::Deleting
        ) {
            continue;
        }
        platform_action(
            &services.db,
            &services.jobs,
            row.id,
            ActionKind::Suspend,
            serde_json::json!({ "reason": SUSPENSION_REASON }),
        )
        .await?;
    }
    Ok(())
}

/// Every instance of the account deleted; the deletion cancels its
/// subscription.
async fn enforce_termination(services: &Services, user: UserId) -> Result<()> {
    for row in live_instances(services, user).await? {
        platform_action(
            &services.db,
            &services.jobs,
            row.id,
            ActionKind::Delete,
            serde_json::Value::Null,
        )
        .await?;
    }
    Ok(())
}

/// Restores the subscriptions dunning changed on accounts (or `only` one)
/// without an open case: a suspended one's instance is started again, then
/// the subscription is `active`. Repeated by every pass until it holds.
async fn restore(services: &Services, only: Option<UserId>) -> Result<()> {
    let mut select = subscription::Entity::find()
        .filter(
            subscription::Column::Status
                .is_in([SubscriptionStatus::PastDue, SubscriptionStatus::Suspended]),
        )
        .filter(
            subscription::Column::UserId.not_in_subquery(
                Query::select()
                    .column(dunning_case::Column::OpenUserId)
                    .from(dunning_case::Entity)
                    .and_where(dunning_case::Column::OpenUserId.is_not_null())
                    .to_owned(),
            ),
        );
    if let Some(user) = only {
        select = select.filter(subscription::Column::UserId.eq(user));
    }
    for sub in select.all(services.db.writer()).await? {
        if sub.status == SubscriptionStatus::Suspended
            && let Some(instance) = sub.instance_id
        {
            // Queued behind a suspension still waiting, if any; a no-op
            // when the instance is not suspended by the time it runs.
            platform_action(
                &services.db,
                &services.jobs,
                instance,
                ActionKind::Unsuspend,
                serde_json::Value::Null,
            )
            .await?;
        }
        subscription::Entity::update_many()
            .col_expr(
                subscription::Column::Status,
                Expr::value(SubscriptionStatus::Active),
            )
            .col_expr(
                subscription::Column::UpdatedAt,
                Expr::value(crate::db::entities::now()),
            )
            .filter(subscription::Column::Id.eq(sub.id))
            .filter(subscription::Column::Status.eq(sub.status))
            .exec(services.db.writer())
            .await?;
    }
    Ok(())
}

/// What the overdue invoices add up to, per currency: `12.50 EUR, 3.00 USD`.
fn owed(overdue: &[invoice::Model]) -> String {
    let mut sums: Vec<(String, i64)> = Vec::new();
    for invoice in overdue {
        match sums.iter_mut().find(|(c, _)| *c == invoice.currency) {
            Some((_, sum)) => *sum += invoice.total_minor,
            None => sums.push((invoice.currency.clone(), invoice.total_minor)),
        }
    }
    sums.iter()
        .map(|(currency, minor)| super::money::format(*minor, currency))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Tells the account of a step it claimed; the notice's key per case
/// keeps a step retried after a crash from telling it twice.
async fn notify(services: &Services, user: UserId, notice: Notice) -> Result<()> {
    notifications::notify(&services.db, &services.cache, &services.jobs, user, notice).await?;
    Ok(())
}

async fn audited(
    services: &Services,
    action: &'static str,
    user: UserId,
    details: &serde_json::Value,
) -> Result<()> {
    audit::record(
        &services.db,
        &audit::Context::default(),
        Event::new(action).on("user", user).details(details.clone()),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::settings::Setting as _;

    #[test]
    fn delays_must_follow_each_other() {
        assert!(DunningPolicy::default().check().is_ok());
        for (grace, termination, warning) in [(3, 3, 1), (3, 14, 0), (3, 14, 12), (91, 120, 3)] {
            let policy = DunningPolicy {
                grace_days: grace,
                termination_days: termination,
                warning_days_before_termination: warning,
            };
            assert!(policy.check().is_err(), "{policy:?}");
        }
        let policy = DunningPolicy::default();
        let since = Utc::now();
        assert!(policy.suspend_at(since) < policy.warn_at(since));
        assert!(policy.warn_at(since) < policy.terminate_at(since));
    }
}
