//! What customers (and the platform) ask of an instance. A request is checked
//! against the instance's state, written as a `pending` action and run by the
//! instance's queue; its progress (step n of m) and result are kept.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveEnum as _;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, ConnectionTrait, EntityTrait as _, QueryFilter as _,
    QueryOrder as _, QuerySelect as _,
};
use serde::{Deserialize, Serialize};

use super::{Services, by_id_or_slug, owned};
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::instance_action::{self, ActionKind, ActionStatus};
use crate::db::entities::{image, product};
use crate::error::{Error, FieldError, Result};
use crate::ids::{InstanceActionId, InstanceId, UserId};
use crate::modules::auth::Actor;
use crate::pagination::{Page, PageRequest, fetch_page};

/// The body of `POST /instances/{id}/actions`.
#[derive(Clone, Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub enum ActionRequest {
    Start,
    /// Asks the guest to power off; cuts it off after a timeout.
    Stop,
    /// Cuts the power at once.
    ForceStop,
    Reboot,
    /// Moves to a larger plan (slug or id); a running VM is stopped and
    /// started again.
    Resize {
        plan: String,
    },
    /// Reinstalls from an image (slug or id), keeping the address and port.
    /// Everything on the disk is lost.
    Rebuild {
        image: String,
    },
    /// Runs provisioning again after it failed.
    Retry,
    #[serde(skip)]
    SnapshotCreate {
        name: String,
    },
    #[serde(skip)]
    SnapshotRestore {
        name: String,
    },
    #[serde(skip)]
    SnapshotDelete {
        name: String,
    },
    #[serde(skip)]
    Delete,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ActionView {
    pub id: InstanceActionId,
    pub instance_id: InstanceId,
    #[serde(rename = "type")]
    pub kind: ActionKind,
    pub status: ActionStatus,
    /// The step running, or the last one done.
    pub step: i32,
    pub total_steps: i32,
    pub step_label: Option<String>,
    pub error: Option<String>,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<instance_action::Model> for ActionView {
    fn from(row: instance_action::Model) -> Self {
        Self {
            id: row.id,
            instance_id: row.instance_id,
            kind: row.kind,
            status: row.status,
            step: row.step,
            total_steps: row.total_steps,
            step_label: row.step_label,
            error: row.error,
            params: row.params,
            created_at: row.created_at,
            started_at: row.started_at,
            finished_at: row.finished_at,
        }
    }
}

/// Writes a pending action; the caller kicks the queue once it is committed.
pub(super) async fn insert(
    conn: &impl ConnectionTrait,
    instance: InstanceId,
    kind: ActionKind,
    params: serde_json::Value,
    requested_by: Option<UserId>,
) -> Result<instance_action::Model> {
    let now = crate::db::entities::now();
    Ok(instance_action::ActiveModel {
        id: Set(InstanceActionId::new()),
        instance_id: Set(instance),
        kind: Set(kind),
        status: Set(ActionStatus::Pending),
        params: Set(params),
        step: Set(0),
        total_steps: Set(super::run::total_steps(kind)),
        step_label: Set(None),
        error: Set(None),
        requested_by: Set(requested_by),
        started_at: Set(None),
        finished_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(conn)
    .await?)
}

pub(super) fn invalid_state(what: &str, status: InstanceStatus) -> Error {
    Error::InvalidState {
        message: format!("Cannot {what} an instance that is {}.", status.to_value()),
        state: status.to_value(),
    }
}

/// The states each request is valid in.
fn allowed(request: &ActionRequest, status: InstanceStatus) -> bool {
    use InstanceStatus as S;
    match request {
        ActionRequest::Start => status == S::Stopped,
        ActionRequest::Stop | ActionRequest::Reboot => status == S::Running,
        ActionRequest::ForceStop => matches!(
            status,
            S::Running | S::Starting | S::Stopping | S::Rebooting | S::Error
        ),
        ActionRequest::Resize { .. }
        | ActionRequest::SnapshotCreate { .. }
        | ActionRequest::SnapshotRestore { .. }
        | ActionRequest::SnapshotDelete { .. } => matches!(status, S::Running | S::Stopped),
        ActionRequest::Rebuild { .. } => matches!(status, S::Running | S::Stopped | S::Error),
        ActionRequest::Retry => status == S::Error,
        // Again after a deletion failed (say, its node was unreachable).
        ActionRequest::Delete => status != S::Deleted,
    }
}

impl ActionRequest {
    fn kind(&self) -> ActionKind {
        match self {
            Self::Start => ActionKind::Start,
            Self::Stop => ActionKind::Stop,
            Self::ForceStop => ActionKind::ForceStop,
            Self::Reboot => ActionKind::Reboot,
            Self::Resize { .. } => ActionKind::Resize,
            Self::Rebuild { .. } => ActionKind::Rebuild,
            Self::Retry => ActionKind::Provision,
            Self::SnapshotCreate { .. } => ActionKind::SnapshotCreate,
            Self::SnapshotRestore { .. } => ActionKind::SnapshotRestore,
            Self::SnapshotDelete { .. } => ActionKind::SnapshotDelete,
            Self::Delete => ActionKind::Delete,
        }
    }

    fn verb(&self) -> &'static str {
        match self {
            Self::Start => "start",
            Self::Stop => "stop",
            Self::ForceStop => "force-stop",
            Self::Reboot => "reboot",
            Self::Resize { .. } => "resize",
            Self::Rebuild { .. } => "rebuild",
            Self::Retry => "retry provisioning of",
            Self::SnapshotCreate { .. } => "snapshot",
            Self::SnapshotRestore { .. } => "restore a snapshot of",
            Self::SnapshotDelete { .. } => "delete a snapshot of",
            Self::Delete => "delete",
        }
    }
}

/// Checks and queues a request. Only one action runs or waits per instance,
/// except a deletion, which waits behind it.
pub async fn request(
    services: &Services,
    actor: &Actor,
    id: InstanceId,
    request: ActionRequest,
) -> Result<ActionView> {
    actor.require_write()?;
    let db = &services.db;
    let row = super::changeable(db, actor, id, "act on").await?;
    // The owner of a suspended instance may only give it up.
    if row.status == InstanceStatus::Suspended
        && request.kind() != ActionKind::Delete
        && !actor.is_staff()?
    {
        return Err(Error::InvalidState {
            message: format!(
                "This instance is suspended: {} It starts again by itself once the reason is \
                 gone; contact support otherwise.",
                row.status_reason
                    .as_deref()
                    .unwrap_or("the platform stopped it.")
            ),
            state: row.status.to_value(),
        });
    }
    if !allowed(&request, row.status) {
        return Err(invalid_state(request.verb(), row.status));
    }
    let params = params_of(services, &row, &request).await?;
    let txn = db.begin_write().await?;
    let waiting = instance_action::Entity::find()
        .filter(instance_action::Column::InstanceId.eq(id))
        .filter(
            instance_action::Column::Status.is_in([ActionStatus::Pending, ActionStatus::Running]),
        )
        .order_by_asc(instance_action::Column::Id)
        .all(&txn)
        .await?;
    if waiting.iter().any(|a| a.kind == ActionKind::Delete) {
        return Err(invalid_state(request.verb(), InstanceStatus::Deleting));
    }
    if let Some(busy) = waiting.first()
        && request.kind() != ActionKind::Delete
    {
        return Err(Error::InvalidState {
            message: format!(
                "The instance is busy with {}; try again when it is done.",
                busy.kind.to_value()
            ),
            state: row.status.to_value(),
        });
    }
    let action = insert(&txn, id, request.kind(), params, Some(actor.user_id)).await?;
    txn.commit().await?;
    super::queue::kick(&services.jobs, id).await?;
    Ok(action.into())
}

/// Queues an action the platform itself takes (billing suspends, starts
/// again or deletes an instance), unless the instance is gone or an
/// unfinished action of that kind, or a deletion, is queued already: taking
/// it again is then a no-op, so callers may repeat it until it is done.
/// Returns whether an action was queued.
pub async fn platform_action(
    db: &crate::db::Database,
    jobs: &crate::jobs::JobQueue,
    id: InstanceId,
    kind: ActionKind,
    params: serde_json::Value,
) -> Result<bool> {
    let txn = db.begin_write().await?;
    // Two billing passes on PostgreSQL queue here; SQLite's write
    // transaction serialises them already.
    let row = instance::Entity::find_by_id(id)
        .lock_exclusive()
        .one(&txn)
        .await?;
    if row.is_none_or(|row| row.deleted_at.is_some()) {
        return Ok(false);
    }
    let queued = instance_action::Entity::find()
        .filter(instance_action::Column::InstanceId.eq(id))
        .filter(
            instance_action::Column::Status.is_in([ActionStatus::Pending, ActionStatus::Running]),
        )
        .filter(instance_action::Column::Kind.is_in([kind, ActionKind::Delete]))
        .one(&txn)
        .await?;
    if queued.is_some() {
        return Ok(false);
    }
    insert(&txn, id, kind, params, None).await?;
    txn.commit().await?;
    super::queue::kick(jobs, id).await?;
    Ok(true)
}

/// The arguments the queue needs, checked now so a bad one is a 422 and not
/// a failed action.
async fn params_of(
    services: &Services,
    row: &instance::Model,
    request: &ActionRequest,
) -> Result<serde_json::Value> {
    let db = &services.db;
    match request {
        ActionRequest::Resize { plan } => {
            let plan = by_id_or_slug::<product::Entity, _>(
                db,
                plan,
                product::Column::Id,
                product::Column::Slug,
            )
            .await?
            .filter(|p| p.active)
            .ok_or_else(|| Error::invalid_field("plan", "is not a plan on offer"))?;
            if plan.vcpus < row.vcpus
                || plan.memory_mib < row.memory_mib
                || plan.disk_gib < row.disk_gib
                || plan.id == row.product_id
            {
                return Err(Error::invalid_field(
                    "plan",
                    "must be larger than the current plan (disks only grow)",
                ));
            }
            Ok(serde_json::json!({ "plan_id": plan.id }))
        }
        ActionRequest::Rebuild { image } => {
            let image = by_id_or_slug::<image::Entity, _>(
                db,
                image,
                image::Column::Id,
                image::Column::Slug,
            )
            .await?
            .filter(|i| i.active && i.status == image::ImageStatus::Available)
            .ok_or_else(|| Error::invalid_field("image", "is not an image on offer"))?;
            if image.min_disk_gib > row.disk_gib {
                return Err(Error::invalid_field(
                    "image",
                    format!("needs a disk of at least {} GiB", image.min_disk_gib),
                ));
            }
            Ok(serde_json::json!({ "image_id": image.id }))
        }
        ActionRequest::SnapshotCreate { name }
        | ActionRequest::SnapshotRestore { name }
        | ActionRequest::SnapshotDelete { name } => {
            check_snapshot_name(name)?;
            Ok(serde_json::json!({ "name": name }))
        }
        _ => Ok(serde_json::Value::Null),
    }
}

/// Checked up front with the drivers' own rule: a name the driver refuses
/// would fail only after the VM had been stopped for the snapshot.
pub fn check_snapshot_name(name: &str) -> Result<()> {
    if vmcloud_hypervisor::snapshot_name_is_valid(name) {
        Ok(())
    } else {
        Err(Error::Validation {
            message: "The snapshot name is invalid.".to_owned(),
            fields: vec![FieldError::new(
                "name",
                format!("must be {}", vmcloud_hypervisor::SNAPSHOT_NAME_RULE),
            )],
        })
    }
}

pub async fn get(
    services: &Services,
    actor: &Actor,
    instance: InstanceId,
    id: InstanceActionId,
) -> Result<ActionView> {
    owned(&services.db, actor, instance, true).await?;
    instance_action::Entity::find_by_id(id)
        .filter(instance_action::Column::InstanceId.eq(instance))
        .one(services.db.writer())
        .await?
        .map(ActionView::from)
        .ok_or_else(|| Error::not_found("Action"))
}

pub async fn list(
    services: &Services,
    actor: &Actor,
    instance: InstanceId,
    page: PageRequest,
) -> Result<Page<ActionView>> {
    owned(&services.db, actor, instance, true).await?;
    let page = fetch_page(
        services.db.reader(),
        instance_action::Entity::find().filter(instance_action::Column::InstanceId.eq(instance)),
        instance_action::Column::Id,
        page,
        |row| row.id.into(),
    )
    .await?;
    Ok(page.map(ActionView::from))
}

/// The oldest unfinished action of each instance.
pub(super) async fn pending_by_instance(
    db: &crate::db::Database,
    instances: impl IntoIterator<Item = InstanceId>,
) -> Result<HashMap<InstanceId, ActionView>> {
    let rows = instance_action::Entity::find()
        .filter(instance_action::Column::InstanceId.is_in(instances))
        .filter(
            instance_action::Column::Status.is_in([ActionStatus::Pending, ActionStatus::Running]),
        )
        .order_by_desc(instance_action::Column::Id)
        .all(db.reader())
        .await?;
    // Descending, so the oldest of each instance is inserted last and wins.
    Ok(rows
        .into_iter()
        .map(|row| (row.instance_id, ActionView::from(row)))
        .collect())
}
