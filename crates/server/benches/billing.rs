//! The hourly billing pass on PostgreSQL (issue 5: 100k active instances in
//! under 60 s).
//!
//! Seeds a fresh database with `BENCH_INSTANCES` running instances (default
//! 100 000, ten per account), each with its subscription, its usage segment
//! since the first of the month and `BENCH_HISTORY_HOURS` hours (default 24)
//! already charged, up to the hour before the pass. Then it times
//! [`billing::pass`] (accrual, invoices due, dunning) at the next hour,
//! checks that it charged every instance exactly that hour, and times a
//! second pass, which has nothing left to do. `BENCH_SCENARIO=month-end`
//! runs the pass of the first hour of a month instead, which also issues
//! every account's invoice.
//!
//! `VMCLOUD_BENCH_DATABASE_URL` names the server (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); the bench creates and
//! drops its own database there.
//!
//! Run: `cargo bench -p vmcloud-server --bench billing`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use chrono::{DateTime, TimeZone as _, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ColumnTrait as _, ConnectionTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _,
};
use secrecy::SecretString;
use vmcloud_server::cache::Cache;
use vmcloud_server::clock::{ManualClock, SharedClock};
use vmcloud_server::db::entities::instance::{self, InstanceStatus};
use vmcloud_server::db::entities::subscription::{self, SubscriptionStatus};
use vmcloud_server::db::entities::transaction::{self, TransactionKind};
use vmcloud_server::db::entities::user::{self, UserRole, UserStatus};
use vmcloud_server::db::entities::{invoice, usage_segment};
use vmcloud_server::db::{Database, DatabaseSettings};
use vmcloud_server::ids::{InstanceId, SubscriptionId, UsageSegmentId, UserId};
use vmcloud_server::jobs::JobQueue;
use vmcloud_server::modules::billing;

// The tests' rows, of which the bench needs the catalogue.
#[allow(dead_code)]
#[path = "../tests/suite/common/rows.rs"]
mod rows;

const INSTANCES_PER_ACCOUNT: usize = 10;
/// Rows per seeding INSERT.
const SEED_CHUNK: usize = 2_000;
const DATABASE: &str = "vmcloud_bench_billing";

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    std::env::var(name).map_or(Ok(default), |v| {
        v.parse()
            .with_context(|| format!("{name} must be a number"))
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let instances = env_number("BENCH_INSTANCES", 100_000)?;
    let history_hours = env_number("BENCH_HISTORY_HOURS", 24)?;
    let server = std::env::var("VMCLOUD_BENCH_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = sea_orm::Database::connect(server.as_str())
        .await
        .context("VMCLOUD_BENCH_DATABASE_URL must be reachable")?;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await?;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {DATABASE}"))
        .await?;
    let dir = tempfile::tempdir()?;
    let (base, _) = server.rsplit_once('/').context("a URL with a database")?;
    let db = Database::connect(&DatabaseSettings {
        url: Some(SecretString::from(format!("{base}/{DATABASE}"))),
        read_url: None,
        data_dir: dir.path().to_path_buf(),
        max_connections: 10,
        connect_timeout: Duration::from_secs(5),
    })
    .await?;
    db.migrate().await?;

    // Mid-month, the pass at 12:20 on the 15th only charges the 11:00 hour;
    // at the month's end, the pass at 00:20 on December 1st charges 23:00
    // and issues every account's November invoice.
    let month_end = std::env::var("BENCH_SCENARIO").is_ok_and(|s| s == "month-end");
    let (pass_at, charged_until) = if month_end {
        (
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 20, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 30, 23, 0, 0).unwrap(),
        )
    } else {
        (
            Utc.with_ymd_and_hms(2026, 11, 15, 12, 20, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 15, 11, 0, 0).unwrap(),
        )
    };
    let started = Instant::now();
    seed(&db, instances, charged_until, history_hours).await?;
    println!(
        "seeded {instances} instances, {} ledger rows, in {:.1} s",
        instances * history_hours,
        started.elapsed().as_secs_f64()
    );
    db.writer().execute_unprepared("ANALYZE").await?;

    let clock: SharedClock = std::sync::Arc::new(ManualClock::new(pass_at));
    let services = billing::Services {
        db: db.clone(),
        cache: Cache::in_memory(),
        clock,
        jobs: JobQueue::database(db.clone()),
        payments: None,
    };
    let started = Instant::now();
    billing::pass(&services).await?;
    let first = started.elapsed();
    let charged = transaction::Entity::find()
        .filter(transaction::Column::Kind.eq(TransactionKind::Usage))
        .filter(transaction::Column::UsageHour.eq(charged_until))
        .count(db.writer())
        .await?;
    ensure!(
        charged == instances as u64,
        "the pass charged {charged} instances the 11:00 hour, not {instances}"
    );
    let invoices = invoice::Entity::find().count(db.writer()).await?;
    let started = Instant::now();
    billing::pass(&services).await?;
    let again = started.elapsed();
    println!(
        "hourly pass, {instances} active instances: {:.2} s ({charged} hours charged, \
         {invoices} invoices issued)",
        first.as_secs_f64()
    );
    println!(
        "the same pass again, nothing to charge: {:.2} s",
        again.as_secs_f64()
    );
    db.writer().clone().close().await.ok();
    admin
        .execute_unprepared(&format!("DROP DATABASE {DATABASE} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// The accounts, their running instances and subscriptions, charged up to
/// `charged_until` since `history_hours` before it.
async fn seed(
    db: &Database,
    instances: usize,
    charged_until: DateTime<Utc>,
    history_hours: usize,
) -> anyhow::Result<()> {
    let conn = db.writer();
    let month = Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap();
    // The tests' catalogue: its plan costs 1 cent an hour, capped at 5 EUR
    // a month, so no instance reaches the cap here.
    let cat = rows::catalogue(conn).await;
    let (plan, hourly) = (&cat.product, cat.product.price_hourly_minor);
    let charged_before = hourly * i64::try_from(history_hours)?;

    let accounts: Vec<UserId> = (0..instances.div_ceil(INSTANCES_PER_ACCOUNT))
        .map(|_| UserId::new())
        .collect();
    let stamp = vmcloud_server::db::entities::now();
    for chunk in accounts.chunks(SEED_CHUNK) {
        user::Entity::insert_many(chunk.iter().map(|&id| user::ActiveModel {
            id: Set(id),
            email: Set(format!("{id}@example.com")),
            name: Set("Customer".to_owned()),
            password_hash: Set(String::new()),
            role: Set(UserRole::Customer),
            status: Set(UserStatus::Active),
            locale: Set("en".to_owned()),
            country: Set(Some("FR".to_owned())),
            created_at: Set(stamp),
            updated_at: Set(stamp),
            ..Default::default()
        }))
        .exec_without_returning(conn)
        .await?;
    }
    let owned: Vec<(UserId, InstanceId, SubscriptionId)> = (0..instances)
        .map(|n| {
            (
                accounts[n / INSTANCES_PER_ACCOUNT],
                InstanceId::new(),
                SubscriptionId::new(),
            )
        })
        .collect();
    for chunk in owned.chunks(SEED_CHUNK) {
        instance::Entity::insert_many(chunk.iter().map(|&(owner, id, _)| instance::ActiveModel {
            id: Set(id),
            user_id: Set(owner),
            product_id: Set(plan.id),
            region_id: Set(cat.region.id),
            image_id: Set(cat.image.id),
            name: Set(format!("vm-{}", id.0.simple())),
            hostname: Set("vm".to_owned()),
            status: Set(InstanceStatus::Running),
            vcpus: Set(1),
            memory_mib: Set(1024),
            disk_gib: Set(20),
            created_at: Set(month),
            updated_at: Set(month),
            ..Default::default()
        }))
        .exec_without_returning(conn)
        .await?;
        subscription::Entity::insert_many(chunk.iter().map(|&(owner, instance, id)| {
            subscription::ActiveModel {
                id: Set(id),
                user_id: Set(owner),
                instance_id: Set(Some(instance)),
                product_id: Set(plan.id),
                status: Set(SubscriptionStatus::Active),
                current_period_start: Set(month),
                current_period_end: Set(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
                cancelled_at: Set(None),
                accrued_until: Set(Some(charged_until)),
                accrued_month_minor: Set(Some(charged_before)),
                created_at: Set(month),
                updated_at: Set(month),
            }
        }))
        .exec_without_returning(conn)
        .await?;
        usage_segment::Entity::insert_many(chunk.iter().map(|&(_, _, subscription)| {
            usage_segment::ActiveModel {
                id: Set(UsageSegmentId::new()),
                subscription_id: Set(subscription),
                product_id: Set(plan.id),
                running: Set(true),
                hourly_minor: Set(hourly),
                monthly_minor: Set(plan.price_monthly_minor),
                currency: Set("EUR".to_owned()),
                started_at: Set(month),
                ended_at: Set(None),
                created_at: Set(month),
                updated_at: Set(month),
            }
        }))
        .exec_without_returning(conn)
        .await?;
    }
    // The charges of the hours before, set-wise: as many rows as the
    // instances have hours, which row-by-row inserts would take minutes on.
    conn.execute_unprepared(&format!(
        "INSERT INTO transactions (id, user_id, kind, amount_minor, currency, instance_id, \
         idempotency_key, usage_hour, description, created_at, updated_at) \
         SELECT gen_random_uuid(), s.user_id, 'usage', -{hourly}, 'EUR', s.instance_id, \
           'usage:' || s.id || ':' || extract(epoch FROM h)::bigint, h, 'seeded', h, h \
         FROM subscriptions s, \
           generate_series(TIMESTAMPTZ '{charged_until}' - INTERVAL '{history_hours} hours', \
                           TIMESTAMPTZ '{charged_until}' - INTERVAL '1 hour', \
                           INTERVAL '1 hour') AS h",
        charged_until = charged_until.to_rfc3339(),
    ))
    .await?;
    Ok(())
}
