//! Reading the audit log: search by actor, action, object and time range,
//! newest first in cursor pages, or all matches as CSV. Reading is all the
//! API offers: there is no route that changes or deletes an entry.

use chrono::{DateTime, Utc};
use sea_orm::{ColumnTrait as _, Condition, EntityTrait as _, QueryFilter as _, Select};
use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::db::entities::audit_log;
use crate::error::{Error, FieldError, Result};
use crate::ids::{AuditLogId, UserId};
use crate::modules::auth::Actor;
use crate::pagination::{Page, PageRequest, fetch_page};

/// The most rows one CSV export holds; narrow the range for more.
pub const MAX_EXPORT_ROWS: u64 = 100_000;

#[derive(Clone, Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// The account that acted.
    pub actor_id: Option<UserId>,
    /// An exact action (`user.role_changed`), or a prefix ending in `.*`
    /// (`auth.*`).
    pub action: Option<String>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// From this instant (inclusive), RFC 3339.
    pub from: Option<DateTime<Utc>>,
    /// Until this instant (exclusive), RFC 3339.
    pub to: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: AuditLogId,
    pub created_at: DateTime<Utc>,
    pub actor_id: Option<UserId>,
    /// The admin behind an impersonated actor.
    pub impersonator_id: Option<UserId>,
    pub action: String,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub details: serde_json::Value,
}

impl From<audit_log::Model> for AuditEntry {
    fn from(row: audit_log::Model) -> Self {
        Self {
            id: row.id,
            created_at: row.created_at,
            actor_id: row.actor_id,
            impersonator_id: row.impersonator_id,
            action: row.action,
            object_type: row.object_type,
            object_id: row.object_id,
            ip: row.ip,
            user_agent: row.user_agent,
            request_id: row.request_id,
            details: row.details,
        }
    }
}

impl AuditFilter {
    fn select(&self) -> Result<Select<audit_log::Entity>> {
        if let (Some(from), Some(to)) = (self.from, self.to)
            && from >= to
        {
            return Err(Error::invalid(vec![FieldError::new(
                "to",
                "must be after `from`",
            )]));
        }
        let mut condition = Condition::all();
        if let Some(actor) = self.actor_id {
            condition = condition.add(audit_log::Column::ActorId.eq(actor));
        }
        match self.action.as_deref().map(str::trim) {
            None | Some("") => {}
            Some(action) => {
                condition = condition.add(match action.strip_suffix(".*") {
                    Some(prefix) => audit_log::Column::Action.starts_with(format!("{prefix}.")),
                    None => audit_log::Column::Action.eq(action),
                });
            }
        }
        if let Some(object_type) = &self.object_type {
            condition = condition.add(audit_log::Column::ObjectType.eq(object_type.trim()));
        }
        if let Some(object_id) = &self.object_id {
            condition = condition.add(audit_log::Column::ObjectId.eq(object_id.trim()));
        }
        if let Some(from) = self.from {
            condition = condition.add(audit_log::Column::CreatedAt.gte(from));
        }
        if let Some(to) = self.to {
            condition = condition.add(audit_log::Column::CreatedAt.lt(to));
        }
        Ok(audit_log::Entity::find().filter(condition))
    }
}

/// One page of matching entries, newest first. Admins only.
pub async fn search(
    db: &Database,
    actor: &Actor,
    filter: &AuditFilter,
    page: PageRequest,
) -> Result<Page<AuditEntry>> {
    actor.require_admin()?;
    let page = fetch_page(
        db.reader(),
        filter.select()?,
        audit_log::Column::Id,
        page,
        |row| row.id.into(),
    )
    .await?;
    Ok(page.map(AuditEntry::from))
}

/// Every matching entry, newest first, as CSV with a header row (details as
/// JSON text). More than [`MAX_EXPORT_ROWS`] is a 422 asking for a narrower
/// filter rather than a silently cut file.
pub async fn export_csv(db: &Database, actor: &Actor, filter: &AuditFilter) -> Result<Vec<u8>> {
    actor.require_admin()?;
    let rows = fetch_page(
        db.reader(),
        filter.select()?,
        audit_log::Column::Id,
        PageRequest {
            limit: MAX_EXPORT_ROWS,
            after: None,
        },
        |row| row.id.into(),
    )
    .await?;
    if rows.next_cursor.is_some() {
        return Err(Error::invalid(vec![FieldError::new(
            "from",
            format!("more than {MAX_EXPORT_ROWS} entries match: narrow the time range"),
        )]));
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer
        .write_record([
            "id",
            "created_at",
            "actor_id",
            "impersonator_id",
            "action",
            "object_type",
            "object_id",
            "ip",
            "user_agent",
            "request_id",
            "details",
        ])
        .map_err(anyhow::Error::from)?;
    let text = |value: Option<String>| spreadsheet_safe(value.unwrap_or_default());
    for row in rows.items {
        writer
            .write_record([
                row.id.to_string(),
                row.created_at.to_rfc3339(),
                text(row.actor_id.map(|id| id.to_string())),
                text(row.impersonator_id.map(|id| id.to_string())),
                spreadsheet_safe(row.action),
                text(row.object_type),
                text(row.object_id),
                text(row.ip),
                text(row.user_agent),
                text(row.request_id),
                spreadsheet_safe(row.details.to_string()),
            ])
            .map_err(anyhow::Error::from)?;
    }
    Ok(writer
        .into_inner()
        .map_err(|err| anyhow::anyhow!("{err}"))?)
}

/// A cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab or
/// carriage return first) gets a leading quote: user agents and details come
/// from clients, and the export is opened by staff.
fn spreadsheet_safe(value: String) -> String {
    if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_are_defused_and_text_is_kept() {
        assert_eq!(
            spreadsheet_safe("=HYPERLINK(\"x\")".to_owned()),
            "'=HYPERLINK(\"x\")"
        );
        assert_eq!(spreadsheet_safe("@SUM(A1)".to_owned()), "'@SUM(A1)");
        assert_eq!(spreadsheet_safe("curl/8.5".to_owned()), "curl/8.5");
    }
}
