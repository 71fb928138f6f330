//! Billing rows and accounts for the billing tests, on simulated time.

use std::collections::{BTreeMap, HashSet};

use chrono::{TimeZone as _, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _,
};
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::instance::{self, InstanceStatus};
use vmcloud_server::db::entities::invoice::{self, InvoiceStatus};
use vmcloud_server::db::entities::transaction::{self, TransactionKind};
use vmcloud_server::db::entities::user::{self, UserRole};
use vmcloud_server::db::entities::{invoice_line, product, product_region};
use vmcloud_server::ids::UserId;
use vmcloud_server::modules::billing::subscriptions;

use super::{Session, TestApp, rows};

pub const PASSWORD: &str = "correct horse battery";

/// A plan priced `hourly` and `monthly` EUR cents, offered in the
/// catalogue's region.
pub async fn plan(
    app: &TestApp,
    cat: &rows::Catalogue,
    slug: &str,
    hourly: i64,
    monthly: i64,
) -> product::Model {
    let plan = product::ActiveModel {
        slug: Set(slug.to_owned()),
        name: Set(format!("Plan {slug}")),
        vcpus: Set(1),
        memory_mib: Set(512),
        disk_gib: Set(10),
        transfer_gib: Set(100),
        price_monthly_minor: Set(monthly),
        price_hourly_minor: Set(hourly),
        setup_fee_minor: Set(0),
        currency: Set("EUR".to_owned()),
        active: Set(true),
        hidden: Set(false),
        sort_order: Set(0),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("insert plan");
    product_region::ActiveModel {
        product_id: Set(plan.id),
        region_id: Set(cat.region.id),
        created_at: Set(vmcloud_server::db::entities::now()),
    }
    .insert(app.state.db.writer())
    .await
    .expect("offer the plan");
    plan
}

/// A running instance of `owner` on `plan`, with its subscription opened
/// at the clock's now.
pub async fn instance_of(
    app: &TestApp,
    clock: &ManualClock,
    cat: &rows::Catalogue,
    owner: UserId,
    plan: &product::Model,
) -> instance::Model {
    let row = instance::ActiveModel {
        user_id: Set(owner),
        product_id: Set(plan.id),
        region_id: Set(cat.region.id),
        image_id: Set(cat.image.id),
        node_id: Set(Some(cat.node.id)),
        name: Set("web".to_owned()),
        hostname: Set("web".to_owned()),
        status: Set(InstanceStatus::Running),
        vcpus: Set(1),
        memory_mib: Set(512),
        disk_gib: Set(10),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("insert instance");
    subscriptions::track(
        &app.state.db,
        &row,
        vmcloud_server::clock::Clock::now(clock),
    )
    .await
    .expect("subscription");
    row
}

/// A customer in `country` (no VAT outside the EU), signed in.
pub async fn customer(app: &TestApp, email: &str, country: &str) -> (UserId, Session) {
    customer_with_vat_id(app, email, country, None).await
}

/// A customer in `country`, a company with `vat_id` when there is one,
/// signed in.
pub async fn customer_with_vat_id(
    app: &TestApp,
    email: &str,
    country: &str,
    vat_id: Option<&str>,
) -> (UserId, Session) {
    let id = app.create_user(email, PASSWORD, UserRole::Customer).await;
    let user_id: UserId = id.parse().expect("id");
    let row = user::Entity::find_by_id(user_id)
        .one(app.state.db.writer())
        .await
        .expect("select")
        .expect("user");
    let mut active = row.into_active_model();
    active.country = Set(Some(country.to_owned()));
    active.vat_id = Set(vat_id.map(str::to_owned));
    active.company = Set(vat_id.map(|_| "Beispiel GmbH".to_owned()));
    active.update(app.state.db.writer()).await.expect("update");
    (user_id, app.session_for(&id).await)
}

/// Checks that `user`'s money adds up, from the rows themselves:
/// - each invoice's lines make its subtotal, and subtotal plus VAT its total;
/// - its total is what the ledger debited for it: the usage and setup fees
///   of its period, less its coupon credits, plus its VAT (and nothing once
///   it is voided, whose row credits it all back);
/// - every other row is money in or out, or usage not invoiced yet;
/// - the balance the API shows is the sum of the rows, per currency.
pub async fn assert_ledger_adds_up(app: &TestApp, user: UserId, session: &Session) {
    let conn = app.state.db.writer();
    let rows = transaction::Entity::find()
        .filter(transaction::Column::UserId.eq(user))
        .all(conn)
        .await
        .expect("ledger");
    let invoices = invoice::Entity::find()
        .filter(invoice::Column::UserId.eq(user))
        .all(conn)
        .await
        .expect("invoices");
    let mut attributed = HashSet::new();
    for bill in &invoices {
        let number = bill.number.as_deref().unwrap_or("draft");
        let lines: i64 = invoice_line::Entity::find()
            .filter(invoice_line::Column::InvoiceId.eq(bill.id))
            .all(conn)
            .await
            .expect("lines")
            .iter()
            .map(|l| l.amount_minor)
            .sum();
        assert_eq!(
            lines, bill.subtotal_minor,
            "{number}: lines make the subtotal"
        );
        assert_eq!(
            bill.subtotal_minor + bill.tax_minor,
            bill.total_minor,
            "{number}: subtotal and VAT make the total"
        );
        let debits: Vec<&transaction::Model> = rows
            .iter()
            .filter(|r| r.currency == bill.currency)
            .filter(|r| match r.kind {
                TransactionKind::Usage | TransactionKind::SetupFee => r
                    .usage_hour
                    .is_some_and(|h| h >= bill.period_start && h < bill.period_end),
                TransactionKind::Coupon | TransactionKind::Invoice => r.invoice_id == Some(bill.id),
                _ => false,
            })
            .collect();
        let owed = if bill.status == InvoiceStatus::Void {
            0
        } else {
            bill.total_minor
        };
        assert_eq!(
            -debits.iter().map(|r| r.amount_minor).sum::<i64>(),
            owed,
            "{number}: the ledger debited its total"
        );
        attributed.extend(debits.iter().map(|r| r.id));
    }
    for row in rows.iter().filter(|r| !attributed.contains(&r.id)) {
        assert!(
            matches!(
                row.kind,
                TransactionKind::TopUp
                    | TransactionKind::Payment
                    | TransactionKind::CreditAdjustment
                    | TransactionKind::Refund
                    | TransactionKind::Usage
                    | TransactionKind::SetupFee
            ),
            "a {:?} row belongs to no invoice: {}",
            row.kind,
            row.description
        );
    }
    let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
    for row in &rows {
        *sums.entry(row.currency.as_str()).or_default() += row.amount_minor;
    }
    let shown = app
        .fetch_json(reqwest::Method::GET, "/api/v1/billing/balance", session)
        .await;
    for (currency, sum) in sums {
        let balance = shown
            .as_array()
            .expect("balances")
            .iter()
            .find(|b| b["currency"] == currency)
            .unwrap_or_else(|| panic!("a {currency} balance"));
        assert_eq!(
            balance["amount_minor"], sum,
            "{currency} balance is the sum"
        );
    }
}

/// Runs instances of `owners` on a plan of 250 an hour from 2026-03-31
/// 20:00, then bills March: each owner gets an open invoice of four hours.
/// The clock ends on April 1st, 00:30.
pub async fn invoice_march(app: &TestApp, clock: &ManualClock, owners: &[UserId]) -> Vec<Value> {
    let db = app.state.db.writer();
    let start = Utc.with_ymd_and_hms(2026, 3, 31, 20, 0, 0).unwrap();
    clock.set(start);
    let cat = rows::catalogue(db).await;
    let mut plan = cat.product.clone().into_active_model();
    plan.price_hourly_minor = Set(250);
    plan.price_monthly_minor = Set(100_000);
    plan.update(db).await.expect("price the plan");
    for owner in owners {
        let mut row = rows::new_instance(db, &cat).await.into_active_model();
        row.user_id = Set(*owner);
        let row = row.update(db).await.expect("own the instance");
        subscriptions::track(&app.state.db, &row, start)
            .await
            .expect("subscription");
    }
    clock.set(Utc.with_ymd_and_hms(2026, 4, 1, 0, 30, 0).unwrap());
    vmcloud_server::modules::billing::pass(&app.state.billing())
        .await
        .expect("billing pass");
    let mut issued = Vec::new();
    for owner in owners {
        let row = invoice::Entity::find()
            .filter(invoice::Column::UserId.eq(*owner))
            .one(db)
            .await
            .expect("select")
            .expect("the owner's invoice");
        assert_eq!(row.status, InvoiceStatus::Open);
        issued.push(json!({"id": row.id, "number": row.number, "total_minor": row.total_minor}));
    }
    issued
}
