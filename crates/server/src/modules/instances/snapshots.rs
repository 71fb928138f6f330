//! Snapshots of an instance's disk, as its node keeps them. Taking,
//! restoring and deleting one are actions of the instance's queue.

use chrono::{DateTime, Utc};
use sea_orm::EntityTrait as _;
use serde::{Deserialize, Serialize};

use super::actions::{self, ActionRequest, ActionView};
use super::{Services, visible};
use crate::db::entities::node;
use crate::error::{Error, Result};
use crate::ids::InstanceId;
use crate::modules::auth::Actor;

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSnapshot {
    /// 1-64 letters, digits, `.`, `_` or `-`, starting with a letter.
    #[garde(skip)]
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SnapshotView {
    pub name: String,
    pub created_at: Option<DateTime<Utc>>,
}

pub async fn list(services: &Services, actor: &Actor, id: InstanceId) -> Result<Vec<SnapshotView>> {
    let row = visible(&services.db, actor, id).await?;
    let Some(node_id) = row.node_id else {
        return Ok(Vec::new());
    };
    let node = node::Entity::find_by_id(node_id)
        .one(services.db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Node"))?;
    let driver = services.drivers.for_node(&node).await?;
    let snapshots = driver.snapshot_list(id.into()).await.map_err(|err| {
        Error::Unavailable(format!("The node could not list the snapshots: {err}"))
    })?;
    Ok(snapshots
        .into_iter()
        .map(|s| SnapshotView {
            name: s.name,
            created_at: DateTime::from_timestamp(s.created_at_unix_secs, 0),
        })
        .collect())
}

pub async fn create(
    services: &Services,
    actor: &Actor,
    id: InstanceId,
    new: NewSnapshot,
) -> Result<ActionView> {
    actions::request(
        services,
        actor,
        id,
        ActionRequest::SnapshotCreate { name: new.name },
    )
    .await
}

pub async fn restore(
    services: &Services,
    actor: &Actor,
    id: InstanceId,
    name: String,
) -> Result<ActionView> {
    actions::request(services, actor, id, ActionRequest::SnapshotRestore { name }).await
}

pub async fn delete(
    services: &Services,
    actor: &Actor,
    id: InstanceId,
    name: String,
) -> Result<ActionView> {
    actions::request(services, actor, id, ActionRequest::SnapshotDelete { name }).await
}
