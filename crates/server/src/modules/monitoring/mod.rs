//! What the platform looks like now, read from the database: the business
//! and infrastructure figures behind `/metrics` and the admin dashboard.
//! Every replica reads the same figures, so dashboards take the `max` over
//! replicas rather than the sum.

pub mod exposition;

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use sea_orm::sea_query::{Expr, Func};
use sea_orm::{
    ActiveEnum as _, ColumnTrait as _, EntityTrait as _, Iterable as _, PaginatorTrait as _,
    QueryFilter as _, QuerySelect as _,
};
use serde::Serialize;

use crate::db::Database;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::node::NodeStatus;
use crate::db::entities::support_ticket::{self, TicketPriority, TicketStatus};
use crate::db::entities::transaction::{self, TransactionKind};
use crate::db::entities::{audit_log, user};
use crate::error::Result;
use crate::jobs::JobQueue;
use crate::modules::auth::Actor;
use crate::modules::billing::revenue::{self, Revenue};
use crate::modules::nodes::{self, NodeView};
use exposition::Family;

/// The audit action of a failed payment.
pub const PAYMENT_FAILED: &str = "billing.payment_failed";

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UserFigures {
    pub total: u64,
    /// Accounts that signed in during the last 30 days.
    pub active_30d: u64,
    /// Accounts created during the last 30 days.
    pub new_30d: u64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub users: UserFigures,
    /// Instances not deleted, by status (every status, zeros included).
    pub instances_by_status: BTreeMap<String, u64>,
    pub nodes: Vec<NodeView>,
    /// Tickets neither resolved nor closed, by priority.
    pub open_tickets_by_priority: BTreeMap<String, u64>,
    /// Money received since the start (payments and top-ups), in minor
    /// units per currency.
    pub received_minor: BTreeMap<String, i64>,
    /// Payments that failed during the last 7 days.
    pub payment_failures_7d: u64,
}

pub async fn figures(db: &Database, now: DateTime<Utc>) -> Result<Figures> {
    let conn = db.reader();
    let month_ago = now - Duration::days(30);
    let live_users = || user::Entity::find().filter(user::Column::DeletedAt.is_null());
    let users = UserFigures {
        total: live_users().count(conn).await?,
        active_30d: live_users()
            .filter(user::Column::LastLoginAt.gte(month_ago))
            .count(conn)
            .await?,
        new_30d: live_users()
            .filter(user::Column::CreatedAt.gte(month_ago))
            .count(conn)
            .await?,
    };

    let mut instances_by_status: BTreeMap<String, u64> = InstanceStatus::iter()
        .filter(|status| *status != InstanceStatus::Deleted)
        .map(|status| (status.to_value(), 0))
        .collect();
    let counted: Vec<(InstanceStatus, i64)> = instance::Entity::find()
        .select_only()
        .column(instance::Column::Status)
        .column_as(
            Expr::from(Func::count(Expr::col(instance::Column::Id))),
            "count",
        )
        .filter(instance::Column::DeletedAt.is_null())
        .group_by(instance::Column::Status)
        .into_tuple()
        .all(conn)
        .await?;
    for (status, count) in counted {
        if status != InstanceStatus::Deleted {
            instances_by_status.insert(status.to_value(), count.unsigned_abs());
        }
    }

    let mut open_tickets_by_priority: BTreeMap<String, u64> = TicketPriority::iter()
        .map(|priority| (priority.to_value(), 0))
        .collect();
    let counted: Vec<(TicketPriority, i64)> = support_ticket::Entity::find()
        .select_only()
        .column(support_ticket::Column::Priority)
        .column_as(
            Expr::from(Func::count(Expr::col(support_ticket::Column::Id))),
            "count",
        )
        .filter(
            support_ticket::Column::Status
                .is_not_in([TicketStatus::Resolved, TicketStatus::Closed]),
        )
        .group_by(support_ticket::Column::Priority)
        .into_tuple()
        .all(conn)
        .await?;
    for (priority, count) in counted {
        open_tickets_by_priority.insert(priority.to_value(), count.unsigned_abs());
    }

    let received: Vec<(String, i64)> = transaction::Entity::find()
        .select_only()
        .column(transaction::Column::Currency)
        // SUM of a bigint is a numeric on PostgreSQL: bring it back.
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(amount_minor), 0) AS BIGINT)"),
            "received",
        )
        .filter(transaction::Column::Kind.is_in([TransactionKind::Payment, TransactionKind::TopUp]))
        .group_by(transaction::Column::Currency)
        .into_tuple()
        .all(conn)
        .await?;
    let received_minor = received.into_iter().collect();

    let payment_failures_7d = audit_log::Entity::find()
        .filter(audit_log::Column::Action.eq(PAYMENT_FAILED))
        .filter(audit_log::Column::CreatedAt.gte(now - Duration::days(7)))
        .count(conn)
        .await?;

    Ok(Figures {
        users,
        instances_by_status,
        nodes: nodes::all(db).await?,
        open_tickets_by_priority,
        received_minor,
        payment_failures_7d,
    })
}

/// What `GET /api/v1/admin/dashboard` shows.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Dashboard {
    #[serde(flatten)]
    pub figures: Figures,
    /// Every node's capacity added up.
    pub capacity: CapacitySummary,
    pub revenue: Revenue,
    /// Jobs that ran out of attempts and wait for an admin.
    pub dead_jobs: u64,
}

/// Installed (after overcommit), used and free, summed over the nodes.
#[derive(Clone, Copy, Debug, Default, Serialize, utoipa::ToSchema)]
pub struct CapacitySummary {
    pub total: nodes::placement::Capacity,
    pub used: nodes::placement::Capacity,
    pub free: nodes::placement::Capacity,
}

/// The admin dashboard at `now`. Admins only.
pub async fn dashboard(
    db: &Database,
    jobs: &JobQueue,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<Dashboard> {
    actor.require_admin()?;
    let figures = figures(db, now).await?;
    let mut capacity = CapacitySummary::default();
    for node in &figures.nodes {
        let add = |sum: &mut nodes::placement::Capacity, vcpus, memory_mib, disk_gib| {
            sum.vcpus += vcpus;
            sum.memory_mib += memory_mib;
            sum.disk_gib += disk_gib;
        };
        add(
            &mut capacity.total,
            node.total.vcpus * i64::from(node.cpu_overcommit_pct) / 100,
            node.total.memory_mib * i64::from(node.memory_overcommit_pct) / 100,
            node.total.disk_gib,
        );
        add(
            &mut capacity.used,
            node.used.vcpus,
            node.used.memory_mib,
            node.used.disk_gib,
        );
        add(
            &mut capacity.free,
            node.free.vcpus,
            node.free.memory_mib,
            node.free.disk_gib,
        );
    }
    let revenue = revenue::figures(db, actor, now).await?;
    let dead_jobs = jobs
        .stats()
        .await
        .map_err(crate::error::Error::Internal)?
        .dead;
    Ok(Dashboard {
        figures,
        capacity,
        revenue,
        dead_jobs,
    })
}

/// Free and total bytes of the file system holding `dir`.
pub fn disk_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok((
        stats.f_bavail.saturating_mul(stats.f_frsize),
        stats.f_blocks.saturating_mul(stats.f_frsize),
    ))
}

/// The figures in the Prometheus text format.
#[allow(clippy::cast_precision_loss)]
pub fn render(figures: &Figures, data_dir: &Path) -> String {
    let mut families = vec![
        Family::gauge("vmcloud_users", "Accounts, not deleted.")
            .sample(&[], figures.users.total as f64),
        Family::gauge(
            "vmcloud_users_active",
            "Accounts that signed in during the last 30 days.",
        )
        .sample(&[], figures.users.active_30d as f64),
    ];
    let mut instances = Family::gauge("vmcloud_instances", "Instances by status.");
    for (status, count) in &figures.instances_by_status {
        instances = instances.sample(&[("status", status)], *count as f64);
    }
    families.push(instances);
    let mut up = Family::gauge(
        "vmcloud_node_up",
        "1 when the node answered its last health check, 0 when it is offline.",
    );
    let mut capacity = Family::gauge(
        "vmcloud_node_capacity",
        "Node capacity: `total` installed (after overcommit) and `used` by instances, per resource.",
    );
    for node in &figures.nodes {
        let online = f64::from(u8::from(node.status != NodeStatus::Offline));
        up = up.sample(&[("node", &node.name)], online);
        let total = |installed: i64, pct: i32| installed * i64::from(pct) / 100;
        for (resource, total, used) in [
            (
                "vcpus",
                total(node.total.vcpus, node.cpu_overcommit_pct),
                node.used.vcpus,
            ),
            (
                "memory_mib",
                total(node.total.memory_mib, node.memory_overcommit_pct),
                node.used.memory_mib,
            ),
            ("disk_gib", node.total.disk_gib, node.used.disk_gib),
        ] {
            capacity = capacity
                .sample(
                    &[
                        ("node", &node.name),
                        ("resource", resource),
                        ("kind", "total"),
                    ],
                    total as f64,
                )
                .sample(
                    &[
                        ("node", &node.name),
                        ("resource", resource),
                        ("kind", "used"),
                    ],
                    used as f64,
                );
        }
    }
    families.push(up);
    families.push(capacity);
    let mut tickets = Family::gauge(
        "vmcloud_tickets_open",
        "Support tickets neither resolved nor closed, by priority.",
    );
    for (priority, count) in &figures.open_tickets_by_priority {
        tickets = tickets.sample(&[("priority", priority)], *count as f64);
    }
    families.push(tickets);
    let mut received = Family::counter(
        "vmcloud_revenue_minor_total",
        "Money received (payments and top-ups), in minor units, by currency.",
    );
    for (currency, amount) in &figures.received_minor {
        received = received.sample(&[("currency", currency)], *amount as f64);
    }
    families.push(received);
    families.push(
        Family::gauge(
            "vmcloud_payment_failures_7d",
            "Payments that failed during the last 7 days.",
        )
        .sample(&[], figures.payment_failures_7d as f64),
    );
    match disk_space(data_dir) {
        Ok((available, size)) => {
            families.push(
                Family::gauge(
                    "vmcloud_data_dir_available_bytes",
                    "Bytes left to unprivileged users on the data directory's file system.",
                )
                .sample(&[], available as f64),
            );
            families.push(
                Family::gauge(
                    "vmcloud_data_dir_size_bytes",
                    "Size of the data directory's file system.",
                )
                .sample(&[], size as f64),
            );
        }
        Err(err) => tracing::warn!(error = %err, "cannot read the data directory's free space"),
    }
    let mut out = String::new();
    for family in &families {
        family.render(&mut out);
    }
    out
}
