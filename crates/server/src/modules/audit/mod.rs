//! The audit log: an append-only record of security and administrative
//! events. Nothing in the API can change or delete an entry.

pub mod search;

use sea_orm::ActiveModelTrait as _;
use sea_orm::ActiveValue::Set;

use crate::db::Database;
use crate::db::entities::audit_log;
use crate::error::Result;
use crate::ids::UserId;

/// Who did it and from where, taken from the request.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub actor: Option<UserId>,
    /// The admin behind an impersonated actor.
    pub impersonator: Option<UserId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

/// What happened.
#[derive(Clone, Debug)]
pub struct Event {
    /// Dotted verb, e.g. `auth.login.failed`, `user.role_changed`.
    pub action: &'static str,
    pub object_type: Option<&'static str>,
    pub object_id: Option<String>,
    pub details: serde_json::Value,
}

impl Event {
    pub fn new(action: &'static str) -> Self {
        Self {
            action,
            object_type: None,
            object_id: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    #[must_use]
    pub fn on(mut self, object_type: &'static str, id: impl std::fmt::Display) -> Self {
        self.object_type = Some(object_type);
        self.object_id = Some(id.to_string());
        self
    }

    #[must_use]
    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }
}

pub async fn record(db: &Database, context: &Context, event: Event) -> Result<()> {
    audit_log::ActiveModel {
        actor_id: Set(context.actor),
        impersonator_id: Set(context.impersonator),
        action: Set(event.action.to_owned()),
        object_type: Set(event.object_type.map(str::to_owned)),
        object_id: Set(event.object_id),
        ip: Set(context.ip.clone()),
        user_agent: Set(context.user_agent.clone()),
        request_id: Set(context.request_id.clone()),
        details: Set(event.details),
        ..Default::default()
    }
    .insert(db.writer())
    .await?;
    Ok(())
}
