//! Billing runs that overlap or die midway, at a month's end with enough
//! instances for several accrual batches and accounts for many invoices:
//! - two runs at once, each on its own connection pool as two processes
//!   would be, charge every hour once and number the invoices without gaps;
//! - a run killed while charging, then one killed while invoicing, then a
//!   last one, end where one uninterrupted run ends;
//! - after either, every account's ledger adds up.

use crate::common;

use std::future::Future;

use chrono::{DateTime, TimeZone as _, Utc};
use reqwest::Method;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    PaginatorTrait as _, QueryFilter as _, QuerySelect as _,
};
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::Database;
use vmcloud_server::db::entities::transaction::{self, TransactionKind};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::db::entities::{invoice, user};
use vmcloud_server::ids::UserId;
use vmcloud_server::modules::billing;

use common::billing::{assert_ledger_adds_up, instance_of, plan};
use common::{Session, TestApp, rows};

const ACCOUNTS: usize = 40;
const INSTANCES_PER_ACCOUNT: usize = 30;
/// 20:00 to 23:00 on March 31st.
const HOURS: usize = 4;
const CHARGES: u64 = (ACCOUNTS * INSTANCES_PER_ACCOUNT * HOURS) as u64;
const HOURLY: i64 = 7;
const COUNTRIES: [&str; 3] = ["FR", "DE", "US"];

fn created_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 31, 20, 0, 0).unwrap()
}

fn billed_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 4, 1, 0, 30, 0).unwrap()
}

/// Customers `customer-{n}@example.com` in France, Germany or the US, each
/// with its instances, every other one with credit enough to pay.
async fn fleet(app: &TestApp, clock: &ManualClock) -> Vec<(UserId, Session)> {
    let conn = app.state.db.writer();
    let cat = rows::catalogue(conn).await;
    let hourly = plan(app, &cat, "hourly", HOURLY, 100_000).await;
    let (_, admin) = app
        .signed_in(
            "admin@example.com",
            "correct horse battery",
            UserRole::Admin,
        )
        .await;
    let mut accounts = Vec::with_capacity(ACCOUNTS);
    for n in 0..ACCOUNTS {
        let mut active = rows::new_user(conn, &format!("customer-{n}@example.com"))
            .await
            .into_active_model();
        active.country = Set(Some(COUNTRIES[n % COUNTRIES.len()].to_owned()));
        let account = active.update(conn).await.expect("country");
        for _ in 0..INSTANCES_PER_ACCOUNT {
            instance_of(app, clock, &cat, account.id, &hourly).await;
        }
        if n % 2 == 0 {
            let response = app
                .send_json(
                    Method::POST,
                    &format!("/api/v1/admin/billing/users/{}/adjustments", account.id),
                    &admin,
                    &json!({"amount_minor": 10_000, "currency": "EUR", "reason": "Prepaid"}),
                )
                .await;
            assert_eq!(response.status(), 201);
        }
        accounts.push((account.id, app.session_for(&account.id.to_string()).await));
    }
    accounts
}

/// The billing services of another process on the same database: its own
/// connection pool.
async fn another_process(app: &TestApp) -> billing::Services {
    billing::Services {
        db: Database::connect(&app.database.settings)
            .await
            .expect("a second pool"),
        ..app.state.billing()
    }
}

async fn usage_charges(app: &TestApp) -> u64 {
    transaction::Entity::find()
        .filter(transaction::Column::Kind.eq(TransactionKind::Usage))
        .count(app.state.db.writer())
        .await
        .expect("count")
}

async fn invoices_issued(app: &TestApp) -> u64 {
    invoice::Entity::find()
        .count(app.state.db.writer())
        .await
        .expect("count")
}

/// Every instance's hours charged once, and the invoices numbered from 1
/// without a gap.
async fn assert_billed_once(app: &TestApp) {
    assert_eq!(usage_charges(app).await, CHARGES);
    let hours: Vec<(
        Option<vmcloud_server::ids::InstanceId>,
        Option<DateTime<Utc>>,
    )> = transaction::Entity::find()
        .select_only()
        .column(transaction::Column::InstanceId)
        .column(transaction::Column::UsageHour)
        .filter(transaction::Column::Kind.eq(TransactionKind::Usage))
        .distinct()
        .into_tuple()
        .all(app.state.db.writer())
        .await
        .expect("hours");
    assert_eq!(hours.len() as u64, CHARGES, "no hour charged twice");
    let mut numbers: Vec<String> = invoice::Entity::find()
        .all(app.state.db.writer())
        .await
        .expect("invoices")
        .into_iter()
        .map(|i| i.number.expect("numbered"))
        .collect();
    numbers.sort_unstable();
    let expected: Vec<String> = (1..=ACCOUNTS).map(|n| format!("2026-{n:06}")).collect();
    assert_eq!(numbers, expected);
}

#[tokio::test]
async fn two_runs_at_once_charge_each_hour_once_and_number_invoices_without_gaps() {
    let clock = ManualClock::new(created_at());
    let app = TestApp::spawn_at(clock.clone()).await;
    let accounts = fleet(&app, &clock).await;
    clock.set(billed_at());

    let (a, b) = (another_process(&app).await, another_process(&app).await);
    let (first, second) = tokio::join!(billing::pass(&a), billing::pass(&b));
    first.expect("first run");
    second.expect("second run");
    assert_billed_once(&app).await;
    // Both again: nothing is left to charge or issue.
    let (first, second) = tokio::join!(billing::pass(&a), billing::pass(&b));
    first.expect("first run");
    second.expect("second run");
    assert_billed_once(&app).await;
    for (user, session) in &accounts {
        assert_ledger_adds_up(&app, *user, session).await;
    }
}

/// Starts a billing pass and kills it as soon as `progress` counts some of
/// its work committed; answers what `progress` counts after the kill.
async fn killed_pass<F, Fut>(app: &TestApp, progress: F) -> u64
where
    F: Fn() -> Fut,
    Fut: Future<Output = u64>,
{
    let services = app.state.billing();
    let run = tokio::spawn(async move { billing::pass(&services).await });
    while progress().await == 0 {
        assert!(
            !run.is_finished(),
            "the pass ended before it was seen working"
        );
        tokio::task::yield_now().await;
    }
    run.abort();
    // Its transaction in flight is rolled back, as a dead process's is.
    let _ = run.await;
    progress().await
}

/// What an account ends up with: its balance and its invoice's amounts and
/// status.
async fn outcome(app: &TestApp, user: UserId, session: &Session) -> Value {
    let balance = app
        .fetch_json(Method::GET, "/api/v1/billing/balance", session)
        .await;
    let bill = invoice::Entity::find()
        .filter(invoice::Column::UserId.eq(user))
        .one(app.state.db.writer())
        .await
        .expect("select")
        .expect("the account's invoice");
    let email = user::Entity::find_by_id(user)
        .one(app.state.db.writer())
        .await
        .expect("select")
        .expect("account")
        .email;
    json!({
        "account": email,
        "balance": balance,
        "invoice": [bill.subtotal_minor, bill.tax_minor, bill.total_minor],
        "status": bill.status,
    })
}

#[tokio::test]
async fn a_run_killed_midway_and_run_again_ends_as_an_uninterrupted_one() {
    let (whole_clock, cut_clock) = (
        ManualClock::new(created_at()),
        ManualClock::new(created_at()),
    );
    let whole = TestApp::spawn_at(whole_clock.clone()).await;
    let cut = TestApp::spawn_at(cut_clock.clone()).await;
    let whole_accounts = fleet(&whole, &whole_clock).await;
    let cut_accounts = fleet(&cut, &cut_clock).await;
    whole_clock.set(billed_at());
    cut_clock.set(billed_at());

    billing::pass(&whole.state.billing())
        .await
        .expect("the uninterrupted run");

    let charged = killed_pass(&cut, || usage_charges(&cut)).await;
    assert!(
        0 < charged && charged < CHARGES,
        "killed while charging: {charged} of {CHARGES} hours charged"
    );
    let issued = killed_pass(&cut, || invoices_issued(&cut)).await;
    assert!(
        0 < issued && issued < ACCOUNTS as u64,
        "killed while invoicing: {issued} of {ACCOUNTS} invoices issued"
    );
    billing::pass(&cut.state.billing())
        .await
        .expect("the run after the kills");

    assert_billed_once(&whole).await;
    assert_billed_once(&cut).await;
    for ((whole_user, whole_session), (cut_user, cut_session)) in
        whole_accounts.iter().zip(&cut_accounts)
    {
        assert_eq!(
            outcome(&cut, *cut_user, cut_session).await,
            outcome(&whole, *whole_user, whole_session).await
        );
        assert_ledger_adds_up(&cut, *cut_user, cut_session).await;
    }
}
