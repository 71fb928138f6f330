//! Customers' virtual machines: ordering, reading, renaming and deleting
//! them, and the actions they ask of them. Everything that touches a
//! hypervisor runs later, in the instance's queue (see [`queue`]).
//!
//! A customer sees only their own instances: every query of theirs filters on
//! the owner, so another customer's instance is indistinguishable from one
//! that does not exist. Support and admins see all, and the node they run on.

pub mod actions;
pub mod console;
pub mod events;
pub mod metrics;
pub mod policy;
pub mod provision;
pub mod queue;
pub mod reconcile;
mod run;
pub mod snapshots;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, EntityTrait as _, IntoActiveModel as _,
    PaginatorTrait as _, QueryFilter as _,
};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::instance::{self, InstanceStatus};
use crate::db::entities::instance_action::ActionKind;
use crate::db::entities::{image, node, product, product_region, region, ssh_key, user};
use crate::error::{Error, FieldError, Result};
use crate::ids::{InstanceId, NodeId, SshKeyId};
use crate::jobs::JobQueue;
use crate::modules::audit;
use crate::modules::auth::Actor;
use crate::modules::billing;
use crate::modules::instances::actions::ActionView;
use crate::modules::instances::policy::InstancePolicy;
use crate::modules::nodes::drivers::Drivers;
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::validation::check_name;

/// Customer user-data beyond this is refused; cloud-init's own limit on
/// most datasources is 16 KiB compressed.
pub const MAX_USER_DATA_BYTES: usize = 64 * 1024;
const MAX_SSH_KEYS: usize = 20;

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct NewInstance {
    /// Plan slug or id.
    pub plan: String,
    /// Image slug or id.
    pub image: String,
    /// Region slug or id.
    pub region: String,
    /// The guest's host name (RFC 1123).
    pub hostname: String,
    /// A label for the console; defaults to the host name.
    pub name: Option<String>,
    /// The account's SSH keys to install for the image's login user.
    #[serde(default)]
    pub ssh_key_ids: Vec<SshKeyId>,
    /// cloud-init user-data of your own (a `#cloud-config`, a script, …).
    pub user_data: Option<String>,
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct InstanceChanges {
    pub name: Option<String>,
}

/// Filters of the instance list.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstanceFilter {
    pub status: Option<InstanceStatus>,
    /// Region slug.
    pub region: Option<String>,
    /// A part of the name, host name or IPv4 address.
    pub q: Option<String>,
    /// Staff only: one customer's instances.
    pub user_id: Option<crate::ids::UserId>,
    /// Staff only: the instances of one node.
    pub node_id: Option<NodeId>,
    /// Plan slug or id.
    pub plan: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Ref {
    pub id: uuid::Uuid,
    pub slug: String,
    pub name: String,
}

/// How to reach the instance over SSH.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SshAccess {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// Ready to paste: `ssh -p 22001 debian@cloud.example.com`.
    pub command: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NodeRef {
    pub id: NodeId,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    pub id: InstanceId,
    pub user_id: crate::ids::UserId,
    pub name: String,
    pub hostname: String,
    pub status: InstanceStatus,
    /// Why it is in `error` (or was stopped by the platform).
    pub status_reason: Option<String>,
    pub plan: Ref,
    pub image: Ref,
    pub region: Ref,
    pub vcpus: i32,
    pub memory_mib: i32,
    pub disk_gib: i32,
    /// Public addresses; empty for user-mode networking, reached by `ssh`.
    pub ips: Vec<String>,
    /// `None` until the instance has a port or an address.
    pub ssh: Option<SshAccess>,
    /// The action running or waiting, if any.
    pub pending_action: Option<ActionView>,
    /// Staff only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<NodeRef>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the instance services need besides the database.
#[derive(Clone, Debug)]
pub struct Services {
    pub db: Database,
    pub cache: Cache,
    pub jobs: JobQueue,
    pub drivers: Drivers,
    pub serial_hubs: console::SerialHubs,
    /// The host shown in `ssh.command`.
    pub ssh_host: String,
    /// Billing's time: when subscriptions and their usage segments start.
    pub clock: crate::clock::SharedClock,
}

/// An instance the actor may see, or 404.
pub async fn visible(db: &Database, actor: &Actor, id: InstanceId) -> Result<instance::Model> {
    owned(db, actor, id, false).await
}

/// An instance the actor may change: their own, or any for an admin.
/// Support staff read customers' instances but do not act on them: a
/// hosting company's support escalates to an admin.
pub async fn changeable(
    db: &Database,
    actor: &Actor,
    id: InstanceId,
    verb: &str,
) -> Result<instance::Model> {
    let row = visible(db, actor, id).await?;
    if row.user_id != actor.user_id && !actor.is_admin()? {
        return Err(Error::Forbidden(format!(
            "Only the instance's owner and admins may {verb} it."
        )));
    }
    Ok(row)
}

/// Like [`visible`], and also once deleted when `include_deleted`: the
/// actions of a deleted instance, its deletion among them, stay readable.
async fn owned(
    db: &Database,
    actor: &Actor,
    id: InstanceId,
    include_deleted: bool,
) -> Result<instance::Model> {
    let mut select = instance::Entity::find_by_id(id);
    if !include_deleted {
        select = select.filter(instance::Column::DeletedAt.is_null());
    }
    match select.one(db.writer()).await? {
        Some(row) if actor.reaches(row.user_id)? => Ok(row),
        _ => Err(Error::not_found("Instance")),
    }
}

/// A row of `E` by id, or by slug when `key` is not a UUID.
async fn by_id_or_slug<E, C>(
    db: &Database,
    key: &str,
    id_column: C,
    slug_column: C,
) -> Result<Option<E::Model>>
where
    E: sea_orm::EntityTrait,
    C: sea_orm::ColumnTrait,
{
    let key = key.trim();
    let filter = match uuid::Uuid::parse_str(key) {
        Ok(id) => id_column.eq(id),
        Err(_) => slug_column.eq(key),
    };
    Ok(E::find().filter(filter).one(db.reader()).await?)
}

struct Order {
    plan: product::Model,
    image: image::Model,
    region: region::Model,
    keys: Vec<String>,
}

/// Checks every field of an order at once, so the customer fixes all in one go.
async fn check_order(db: &Database, owner: &user::Model, new: &NewInstance) -> Result<Order> {
    let mut fields = Vec::new();
    if let Err(message) = check_hostname(&new.hostname) {
        fields.push(FieldError::new("hostname", message));
    }
    if let Some(name) = &new.name {
        fields.extend(check_name("name", name));
    }
    let plan = by_id_or_slug::<product::Entity, _>(
        db,
        &new.plan,
        product::Column::Id,
        product::Column::Slug,
    )
    .await?
    .filter(|plan| plan.active);
    if plan.is_none() {
        fields.push(FieldError::new("plan", "is not a plan on offer"));
    }
    let image =
        by_id_or_slug::<image::Entity, _>(db, &new.image, image::Column::Id, image::Column::Slug)
            .await?
            .filter(|image| image.active);
    match &image {
        None => fields.push(FieldError::new("image", "is not an image on offer")),
        Some(image) if image.status != image::ImageStatus::Available => fields.push(
            FieldError::new("image", "is still being imported; try again in a moment"),
        ),
        Some(_) => {}
    }
    let region = by_id_or_slug::<region::Entity, _>(
        db,
        &new.region,
        region::Column::Id,
        region::Column::Slug,
    )
    .await?
    .filter(|region| region.active);
    if region.is_none() {
        fields.push(FieldError::new("region", "is not a region on offer"));
    }
    if let (Some(plan), Some(region)) = (&plan, &region) {
        let offered = product_region::Entity::find_by_id((plan.id, region.id))
            .one(db.reader())
            .await?
            .is_some();
        if !offered {
            fields.push(FieldError::new(
                "region",
                format!("plan {} is not offered in {}", plan.slug, region.slug),
            ));
        }
    }
    if let (Some(plan), Some(image)) = (&plan, &image)
        && plan.disk_gib < image.min_disk_gib
    {
        fields.push(FieldError::new(
            "plan",
            format!(
                "has a {} GiB disk; {} needs at least {} GiB",
                plan.disk_gib, image.name, image.min_disk_gib
            ),
        ));
    }
    let keys = check_keys(db, owner, &new.ssh_key_ids, &mut fields).await?;
    if let Some(data) = &new.user_data
        && data.len() > MAX_USER_DATA_BYTES
    {
        fields.push(FieldError::new(
            "user_data",
            format!("must be at most {MAX_USER_DATA_BYTES} bytes"),
        ));
    }
    Error::check_fields(fields)?;
    match (plan, image, region) {
        (Some(plan), Some(image), Some(region)) => Ok(Order {
            plan,
            image,
            region,
            keys,
        }),
        _ => unreachable!("missing parts were reported as field errors"),
    }
}

async fn check_keys(
    db: &Database,
    owner: &user::Model,
    ids: &[SshKeyId],
    fields: &mut Vec<FieldError>,
) -> Result<Vec<String>> {
    if ids.len() > MAX_SSH_KEYS {
        fields.push(FieldError::new(
            "ssh_key_ids",
            format!("at most {MAX_SSH_KEYS} keys"),
        ));
        return Ok(Vec::new());
    }
    let owned = ssh_key::Entity::find()
        .filter(ssh_key::Column::UserId.eq(owner.id))
        .filter(ssh_key::Column::Id.is_in(ids.iter().copied()))
        .all(db.reader())
        .await?;
    let mut keys = Vec::new();
    for (index, id) in ids.iter().enumerate() {
        match owned.iter().find(|key| key.id == *id) {
            Some(key) => keys.push(key.public_key.clone()),
            None => fields.push(FieldError::new(
                format!("ssh_key_ids/{index}"),
                "is not one of your SSH keys",
            )),
        }
    }
    keys.dedup();
    Ok(keys)
}

/// RFC 1123 host names, as the guest's cloud-init seed needs them.
pub fn check_hostname(name: &str) -> std::result::Result<(), String> {
    if vmcloud_hypervisor::spec::is_hostname(name) {
        Ok(())
    } else {
        Err(
            "must be an RFC 1123 host name: labels of 1-63 letters, digits and inner hyphens, \
             separated by dots"
                .to_owned(),
        )
    }
}

/// Serializes placements within this process; on PostgreSQL the node rows
/// are also locked, which covers other processes.
static PLACEMENT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Orders an instance: checks the order, the account and the quota, places
/// it on a node (409 when none fits), writes it as `provisioning` and queues
/// its provisioning. The same `Idempotency-Key` again returns the first
/// instance instead of ordering another.
pub async fn create(
    services: &Services,
    actor: &Actor,
    new: NewInstance,
    idempotency_key: Option<String>,
) -> Result<(InstanceView, bool)> {
    actor.require_write()?;
    let db = &services.db;
    if let Some(existing) = by_idempotency_key(db, actor, idempotency_key.as_deref()).await? {
        return replay(services, actor, existing, &new).await;
    }
    let owner = user::Entity::find_by_id(actor.user_id)
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Account"))?;
    if owner.email_verified_at.is_none() {
        return Err(Error::Forbidden(
            "Verify your email address before creating instances.".to_owned(),
        ));
    }
    let order = check_order(db, &owner, &new).await?;
    let billing_policy = billing::policy::get(db, &services.cache).await?;
    billing::policy::check_order(
        &billing_policy,
        db.writer(),
        actor.user_id,
        &order.plan.currency,
    )
    .await?;
    let policy = policy::get(db, &services.cache).await?;
    check_quota(db, actor, &policy).await?;

    let id = InstanceId::new();
    let now = crate::db::entities::now();
    let row = instance::ActiveModel {
        id: Set(id),
        user_id: Set(actor.user_id),
        product_id: Set(order.plan.id),
        region_id: Set(order.region.id),
        image_id: Set(order.image.id),
        node_id: Set(None),
        name: Set(new
            .name
            .as_deref()
            .map_or_else(|| new.hostname.clone(), |n| n.trim().to_owned())),
        hostname: Set(new.hostname.to_ascii_lowercase()),
        status: Set(InstanceStatus::Provisioning),
        status_reason: Set(None),
        vcpus: Set(order.plan.vcpus),
        memory_mib: Set(order.plan.memory_mib),
        disk_gib: Set(order.plan.disk_gib),
        ssh_port: Set(None),
        ipv4: Set(None),
        user_data: Set(new.user_data.clone()),
        idempotency_key: Set(idempotency_key.clone()),
        ssh_authorized_keys: Set(Some(
            serde_json::to_string(&order.keys).map_err(anyhow::Error::from)?,
        )),
        queue_holder: Set(None),
        queue_lease_until: Set(None),
        deleted_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    };
    let inserted = match place_and_insert(services, row, &order, &policy, actor).await {
        Ok(inserted) => inserted,
        // A concurrent request with the same key won the race: answer with
        // what it made.
        Err(Error::Conflict(_)) if idempotency_key.is_some() => {
            let existing = by_idempotency_key(db, actor, idempotency_key.as_deref())
                .await?
                .ok_or_else(|| anyhow::anyhow!("the Idempotency-Key's instance vanished"))?;
            return replay(services, actor, existing, &new).await;
        }
        Err(err) => return Err(err),
    };
    events::status_changed(
        services,
        &inserted,
        None,
        Some(actor.user_id),
        "instance.created",
    )
    .await?;
    queue::kick(&services.jobs, inserted.id).await?;
    Ok((view_of(services, actor, inserted).await?, true))
}

async fn by_idempotency_key(
    db: &Database,
    actor: &Actor,
    key: Option<&str>,
) -> Result<Option<instance::Model>> {
    let Some(key) = key else { return Ok(None) };
    Ok(instance::Entity::find()
        .filter(instance::Column::UserId.eq(actor.user_id))
        .filter(instance::Column::IdempotencyKey.eq(key))
        .one(db.writer())
        .await?)
}

/// Places the new instance on a node and writes it with its provisioning
/// action and its subscription, in one transaction. A taken
/// `Idempotency-Key` is a conflict.
async fn place_and_insert(
    services: &Services,
    mut row: instance::ActiveModel,
    order: &Order,
    policy: &InstancePolicy,
    actor: &Actor,
) -> Result<instance::Model> {
    let _serialized = PLACEMENT.lock().await;
    let txn = services.db.begin_write().await?;
    let demand = provision::demand(order.plan.vcpus, order.plan.memory_mib, order.plan.disk_gib);
    let node = provision::place(&txn, order.region.id, &demand, policy.placement_strategy).await?;
    row.node_id = Set(Some(node));
    let inserted = row
        .insert(&txn)
        .await
        .map_err(|err| Error::on_duplicate(err, "This Idempotency-Key is already in use."))?;
    actions::insert(
        &txn,
        inserted.id,
        ActionKind::Provision,
        serde_json::Value::Null,
        Some(actor.user_id),
    )
    .await?;
    billing::subscriptions::open(&txn, &inserted, &order.plan, services.clock.now()).await?;
    billing::usage::charge_setup_fee(&txn, &inserted, &order.plan, services.clock.now()).await?;
    txn.commit().await?;
    Ok(inserted)
}

/// The answer to a repeated `Idempotency-Key`: the instance it made, if the
/// request is the same one.
async fn replay(
    services: &Services,
    actor: &Actor,
    existing: instance::Model,
    new: &NewInstance,
) -> Result<(InstanceView, bool)> {
    if existing.hostname != new.hostname.to_ascii_lowercase() {
        return Err(Error::Conflict(
            "This Idempotency-Key was used for a different request.".to_owned(),
        ));
    }
    Ok((view_of(services, actor, existing).await?, false))
}

async fn check_quota(db: &Database, actor: &Actor, policy: &InstancePolicy) -> Result<()> {
    let owned = instance::Entity::find()
        .filter(instance::Column::UserId.eq(actor.user_id))
        .filter(instance::Column::DeletedAt.is_null())
        .count(db.writer())
        .await?;
    if owned >= u64::from(policy.max_instances_per_user) {
        return Err(Error::QuotaExceeded {
            message: format!(
                "Your account may hold {} instances; delete one or ask support for more.",
                policy.max_instances_per_user
            ),
            limit: u64::from(policy.max_instances_per_user),
        });
    }
    Ok(())
}

pub async fn list(
    services: &Services,
    actor: &Actor,
    filter: InstanceFilter,
    page: PageRequest,
) -> Result<Page<InstanceView>> {
    let page = rows(services, actor, &filter, page).await?;
    let views = views_of(services, actor, page.items).await?;
    Ok(Page {
        items: views,
        next_cursor: page.next_cursor,
    })
}

/// Who owns an instance, for staff.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OwnerRef {
    pub id: crate::ids::UserId,
    pub email: String,
    pub name: String,
}

/// An instance as staff see it across customers: with its owner (and, in
/// the instance, its node).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StaffInstanceView {
    #[serde(flatten)]
    pub instance: InstanceView,
    pub owner: OwnerRef,
}

/// Every customer's instances, newest first, with their owners. Staff only.
pub async fn list_all(
    services: &Services,
    actor: &Actor,
    filter: InstanceFilter,
    page: PageRequest,
) -> Result<Page<StaffInstanceView>> {
    actor.require_staff()?;
    let page = rows(services, actor, &filter, page).await?;
    let owners = by_ids::<user::Entity, _>(
        services.db.reader(),
        user::Column::Id,
        page.items.iter().map(|row| row.user_id),
        |u| u.id,
    )
    .await?;
    let views = views_of(services, actor, page.items).await?;
    let items = views
        .into_iter()
        .map(|instance| {
            let owner = owners.get(&instance.user_id);
            StaffInstanceView {
                owner: OwnerRef {
                    id: instance.user_id,
                    email: owner.map(|u| u.email.clone()).unwrap_or_default(),
                    name: owner.map(|u| u.name.clone()).unwrap_or_default(),
                },
                instance,
            }
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// A page of the instances `filter` selects among those `actor` may see.
async fn rows(
    services: &Services,
    actor: &Actor,
    filter: &InstanceFilter,
    page: PageRequest,
) -> Result<Page<instance::Model>> {
    let db = &services.db;
    let mut scope = Condition::all().add(instance::Column::DeletedAt.is_null());
    if actor.is_staff()? {
        if let Some(user) = filter.user_id {
            scope = scope.add(instance::Column::UserId.eq(user));
        }
        if let Some(node) = filter.node_id {
            scope = scope.add(instance::Column::NodeId.eq(node));
        }
    } else {
        scope = scope.add(instance::Column::UserId.eq(actor.user_id));
    }
    if let Some(status) = filter.status {
        scope = scope.add(instance::Column::Status.eq(status));
    }
    if let Some(slug) = &filter.region {
        let region = region::Entity::find()
            .filter(region::Column::Slug.eq(slug.as_str()))
            .one(db.reader())
            .await?;
        scope = scope.add(instance::Column::RegionId.eq(region.map(|r| r.id)));
    }
    if let Some(plan) = &filter.plan {
        let plan = by_id_or_slug::<product::Entity, _>(
            db,
            plan,
            product::Column::Id,
            product::Column::Slug,
        )
        .await?;
        scope = scope.add(instance::Column::ProductId.eq(plan.map(|p| p.id)));
    }
    if let Some(text) = filter.q.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        scope = scope.add(
            Condition::any()
                .add(instance::Column::Name.contains(text))
                .add(instance::Column::Hostname.contains(text))
                .add(instance::Column::Ipv4.contains(text)),
        );
    }
    Ok(fetch_page(
        db.reader(),
        instance::Entity::find().filter(scope),
        instance::Column::Id,
        page,
        |row| row.id.into(),
    )
    .await?)
}

pub async fn get(services: &Services, actor: &Actor, id: InstanceId) -> Result<InstanceView> {
    let row = visible(&services.db, actor, id).await?;
    view_of(services, actor, row).await
}

pub async fn rename(
    services: &Services,
    actor: &Actor,
    id: InstanceId,
    changes: InstanceChanges,
    context: &audit::Context,
) -> Result<InstanceView> {
    actor.require_write()?;
    let Some(name) = changes.name else {
        let row = visible(&services.db, actor, id).await?;
        return view_of(services, actor, row).await;
    };
    // The name reaches the customer's invoices, so it is theirs to change.
    let row = changeable(&services.db, actor, id, "rename").await?;
    Error::check_fields(check_name("name", &name).into_iter().collect())?;
    let from = row.name.clone();
    let mut active = row.into_active_model();
    active.name = Set(name.trim().to_owned());
    let row = active.update(services.db.writer()).await?;
    let event = audit::Event::new("instance.renamed")
        .on("instance", row.id)
        .details(serde_json::json!({ "from": from, "to": row.name }));
    audit::record(&services.db, context, event).await?;
    view_of(services, actor, row).await
}

/// Queues the deletion: the VM is stopped, its disks destroyed and its port
/// and address released by the queue, after any action already waiting.
pub async fn delete(services: &Services, actor: &Actor, id: InstanceId) -> Result<ActionView> {
    actions::request(services, actor, id, actions::ActionRequest::Delete).await
}

/// Takes the room a resize to `plan` needs on the instance's node, by
/// writing the new size; placements see it at once. Done already when the
/// instance is on `plan` (a retried resize).
async fn reserve_growth(
    runner: &queue::Runner,
    row: &instance::Model,
    plan: &product::Model,
) -> anyhow::Result<()> {
    if row.product_id == plan.id {
        return Ok(());
    }
    let node = row
        .node_id
        .ok_or_else(|| anyhow::anyhow!("the instance is not on any node"))?;
    let _serialized = PLACEMENT.lock().await;
    let txn = runner.services.db.begin_write().await?;
    let free = crate::modules::nodes::candidates(&txn, row.region_id)
        .await?
        .into_iter()
        .find(|candidate| candidate.node == node)
        .map(|candidate| candidate.free)
        .ok_or_else(|| anyhow::anyhow!("the instance's node is gone"))?;
    let growth = provision::demand(
        plan.vcpus - row.vcpus,
        plan.memory_mib - row.memory_mib,
        plan.disk_gib - row.disk_gib,
    );
    if free.vcpus < growth.vcpus
        || free.memory_mib < growth.memory_mib
        || free.disk_gib < growth.disk_gib
    {
        anyhow::bail!(
            "the node has {} vCPU, {} MiB and {} GiB free; the resize needs {} vCPU, {} MiB and {} GiB more",
            free.vcpus,
            free.memory_mib,
            free.disk_gib,
            growth.vcpus,
            growth.memory_mib,
            growth.disk_gib
        );
    }
    let mut active = row.clone().into_active_model();
    active.product_id = Set(plan.id);
    active.vcpus = Set(plan.vcpus);
    active.memory_mib = Set(plan.memory_mib);
    active.disk_gib = Set(plan.disk_gib);
    let resized = active.update(&txn).await?;
    txn.commit().await?;
    // Charged at the new plan's price from this hour on.
    let services = &runner.services;
    billing::subscriptions::track(&services.db, &resized, services.clock.now()).await?;
    Ok(())
}

/// The rows of `E` with these ids, by id.
async fn by_ids<E, K>(
    db: &sea_orm::DatabaseConnection,
    id_column: E::Column,
    ids: impl IntoIterator<Item = K>,
    id_of: impl Fn(&E::Model) -> K,
) -> Result<HashMap<K, E::Model>>
where
    E: sea_orm::EntityTrait,
    K: Into<sea_orm::Value> + std::hash::Hash + Eq,
{
    Ok(E::find()
        .filter(id_column.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|row| (id_of(&row), row))
        .collect())
}

async fn view_of(services: &Services, actor: &Actor, row: instance::Model) -> Result<InstanceView> {
    let mut views = views_of(services, actor, vec![row]).await?;
    Ok(views.remove(0))
}

/// Views of a page of rows, reading each plan, image, region and node once.
async fn views_of(
    services: &Services,
    actor: &Actor,
    rows: Vec<instance::Model>,
) -> Result<Vec<InstanceView>> {
    let db = services.db.reader();
    let plans = by_ids::<product::Entity, _>(
        db,
        product::Column::Id,
        rows.iter().map(|r| r.product_id),
        |p| p.id,
    )
    .await?;
    let images = by_ids::<image::Entity, _>(
        db,
        image::Column::Id,
        rows.iter().map(|r| r.image_id),
        |i| i.id,
    )
    .await?;
    let regions = by_ids::<region::Entity, _>(
        db,
        region::Column::Id,
        rows.iter().map(|r| r.region_id),
        |r| r.id,
    )
    .await?;
    let nodes = if actor.sees_staff_details() {
        by_ids::<node::Entity, _>(
            db,
            node::Column::Id,
            rows.iter().filter_map(|r| r.node_id),
            |n| n.id,
        )
        .await?
    } else {
        HashMap::new()
    };
    let mut pending = actions::pending_by_instance(&services.db, rows.iter().map(|r| r.id)).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let plan = plans.get(&row.product_id);
            let image = images.get(&row.image_id);
            let region = regions.get(&row.region_id);
            // A forwarded port on the node, or the instance's own address.
            let reach = match (row.ssh_port, &row.ipv4) {
                (Some(port), _) => u16::try_from(port)
                    .ok()
                    .map(|port| (services.ssh_host.clone(), port)),
                (None, Some(address)) => Some((address.clone(), 22)),
                (None, None) => None,
            };
            let ssh = reach.map(|(host, port)| {
                let user = image.map_or_else(|| "root".to_owned(), |i| i.default_user.clone());
                let command = if port == 22 {
                    format!("ssh {user}@{host}")
                } else {
                    format!("ssh -p {port} {user}@{host}")
                };
                SshAccess {
                    host,
                    port,
                    user,
                    command,
                }
            });
            InstanceView {
                id: row.id,
                user_id: row.user_id,
                name: row.name,
                hostname: row.hostname,
                status: row.status,
                status_reason: row.status_reason,
                plan: Ref {
                    id: row.product_id.into(),
                    slug: plan.map(|p| p.slug.clone()).unwrap_or_default(),
                    name: plan.map(|p| p.name.clone()).unwrap_or_default(),
                },
                image: Ref {
                    id: row.image_id.into(),
                    slug: image.map(|i| i.slug.clone()).unwrap_or_default(),
                    name: image.map(|i| i.name.clone()).unwrap_or_default(),
                },
                region: Ref {
                    id: row.region_id.into(),
                    slug: region.map(|r| r.slug.clone()).unwrap_or_default(),
                    name: region.map(|r| r.name.clone()).unwrap_or_default(),
                },
                vcpus: row.vcpus,
                memory_mib: row.memory_mib,
                disk_gib: row.disk_gib,
                ips: row.ipv4.into_iter().collect(),
                ssh,
                pending_action: pending.remove(&row.id),
                node: row.node_id.and_then(|id| nodes.get(&id)).map(|n| NodeRef {
                    id: n.id,
                    name: n.name.clone(),
                }),
                created_at: row.created_at,
                updated_at: row.updated_at,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::check_hostname;

    #[test]
    fn hostnames_follow_rfc_1123() {
        for good in ["web", "web-1", "1web", "a.b.example", &"a".repeat(63)] {
            assert!(check_hostname(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-web",
            "web-",
            "web_1",
            "a..b",
            "web.",
            "hé",
            &"a".repeat(64),
            &["a"; 130].join("."),
        ] {
            assert!(check_hostname(bad).is_err(), "{bad}");
        }
    }
}
