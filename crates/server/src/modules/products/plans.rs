//! Plans (the `products` table): the sizes customers order and their
//! prices, in minor units of the plan's currency.

use std::collections::HashMap;

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _, QueryOrder as _,
};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::{product, product_region, region};
use crate::error::{Error, FieldError, Result};
use crate::ids::{ProductId, RegionId};
use crate::modules::auth::Actor;
use crate::modules::billing::{self, policy::BillingPolicy};
use crate::validation::{check_name, check_slug};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PlanView {
    pub id: ProductId,
    pub slug: String,
    pub name: String,
    pub description: Option<String>,
    pub vcpus: i32,
    pub memory_mib: i32,
    pub disk_gib: i32,
    pub transfer_gib: i32,
    /// The most a month of this plan costs, in minor units of `currency`.
    pub price_monthly_minor: i64,
    /// The price of each started hour, until the month reaches the monthly
    /// price.
    pub price_hourly_minor: i64,
    /// Charged once when an instance is ordered.
    pub setup_fee_minor: i64,
    /// ISO 4217 code.
    pub currency: String,
    /// Slugs of the regions where the plan can be ordered.
    pub regions: Vec<String>,
    pub active: bool,
    pub hidden: bool,
    pub sort_order: i32,
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPlan {
    #[garde(skip)]
    pub slug: String,
    #[garde(skip)]
    pub name: String,
    #[garde(length(max = 2000))]
    pub description: Option<String>,
    #[garde(range(min = 1, max = 256))]
    pub vcpus: i32,
    #[garde(range(min = 64, max = 4_194_304))]
    pub memory_mib: i32,
    #[garde(range(min = 1, max = 65_536))]
    pub disk_gib: i32,
    #[garde(range(min = 0, max = 1_000_000))]
    pub transfer_gib: i32,
    /// Minor units (cents for EUR); at least the hourly price.
    #[garde(range(min = 0, max = MAX_PRICE_MINOR))]
    pub price_monthly_minor: i64,
    /// Minor units per started hour.
    #[garde(range(min = 0, max = MAX_PRICE_MINOR))]
    pub price_hourly_minor: i64,
    /// Minor units, charged once per order; none by default.
    #[garde(range(min = 0, max = MAX_PRICE_MINOR))]
    pub setup_fee_minor: Option<i64>,
    /// One of the billing policy's currencies; its first by default.
    #[garde(skip)]
    pub currency: Option<String>,
    /// Region slugs.
    #[garde(length(max = 100))]
    pub regions: Vec<String>,
    #[garde(skip)]
    pub active: Option<bool>,
    #[garde(skip)]
    pub hidden: Option<bool>,
    #[garde(skip)]
    pub sort_order: Option<i32>,
}

#[derive(Debug, Default, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanChanges {
    #[garde(skip)]
    pub name: Option<String>,
    #[garde(length(max = 2000))]
    pub description: Option<String>,
    #[garde(range(min = 1, max = 256))]
    pub vcpus: Option<i32>,
    #[garde(range(min = 64, max = 4_194_304))]
    pub memory_mib: Option<i32>,
    #[garde(range(min = 1, max = 65_536))]
    pub disk_gib: Option<i32>,
    #[garde(range(min = 0, max = 1_000_000))]
    pub transfer_gib: Option<i32>,
    /// New prices apply to orders from now on, and to existing instances
    /// from their next resize, stop or start.
    #[garde(range(min = 0, max = MAX_PRICE_MINOR))]
    pub price_monthly_minor: Option<i64>,
    #[garde(range(min = 0, max = MAX_PRICE_MINOR))]
    pub price_hourly_minor: Option<i64>,
    #[garde(range(min = 0, max = MAX_PRICE_MINOR))]
    pub setup_fee_minor: Option<i64>,
    #[garde(skip)]
    pub currency: Option<String>,
    /// Replaces the list of region slugs.
    #[garde(length(max = 100))]
    pub regions: Option<Vec<String>>,
    #[garde(skip)]
    pub active: Option<bool>,
    #[garde(skip)]
    pub hidden: Option<bool>,
    #[garde(skip)]
    pub sort_order: Option<i32>,
}

/// The largest price, in minor units: a typo's extra zeros are refused.
pub const MAX_PRICE_MINOR: i64 = 100_000_000;

/// The price rules garde cannot express: the hourly price is at most the
/// monthly one, and the currency is one the platform bills in.
fn check_prices(
    policy: &BillingPolicy,
    monthly: i64,
    hourly: i64,
    currency: &str,
) -> Vec<FieldError> {
    let mut fields = Vec::new();
    if hourly > monthly {
        fields.push(FieldError::new(
            "price_hourly_minor",
            "must be at most the monthly price",
        ));
    }
    fields.extend(policy.check_currency("currency", currency));
    fields
}

/// The ids of the named regions, or a field error naming the unknown ones.
async fn resolve_regions(db: &Database, slugs: &[String]) -> Result<Vec<RegionId>> {
    let found = region::Entity::find()
        .filter(region::Column::Slug.is_in(slugs.iter().cloned()))
        .all(db.reader())
        .await?;
    let unknown: Vec<&str> = slugs
        .iter()
        .filter(|slug| !found.iter().any(|r| &r.slug == *slug))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        return Err(Error::invalid(vec![FieldError::new(
            "regions",
            format!("unknown region: {}", unknown.join(", ")),
        )]));
    }
    Ok(found.into_iter().map(|r| r.id).collect())
}

async fn set_regions<C: sea_orm::ConnectionTrait>(
    conn: &C,
    plan: ProductId,
    regions: &[RegionId],
) -> Result<()> {
    product_region::Entity::delete_many()
        .filter(product_region::Column::ProductId.eq(plan))
        .exec(conn)
        .await?;
    if regions.is_empty() {
        return Ok(());
    }
    let at = crate::db::entities::now();
    product_region::Entity::insert_many(regions.iter().map(|region| product_region::ActiveModel {
        product_id: Set(plan),
        region_id: Set(*region),
        created_at: Set(at),
    }))
    .exec(conn)
    .await?;
    Ok(())
}

pub async fn create(db: &Database, cache: &Cache, actor: &Actor, new: NewPlan) -> Result<PlanView> {
    actor.require_admin()?;
    let policy = billing::policy::get(db, cache).await?;
    let currency = new
        .currency
        .clone()
        .unwrap_or_else(|| policy.currencies[0].clone());
    Error::check_fields(
        check_slug("slug", &new.slug)
            .into_iter()
            .chain(check_name("name", &new.name))
            .chain(check_prices(
                &policy,
                new.price_monthly_minor,
                new.price_hourly_minor,
                &currency,
            ))
            .collect(),
    )?;
    let regions = resolve_regions(db, &new.regions).await?;
    let txn = db.begin_write().await?;
    let row = product::ActiveModel {
        slug: Set(new.slug),
        name: Set(new.name.trim().to_owned()),
        description: Set(new.description),
        vcpus: Set(new.vcpus),
        memory_mib: Set(new.memory_mib),
        disk_gib: Set(new.disk_gib),
        transfer_gib: Set(new.transfer_gib),
        price_monthly_minor: Set(new.price_monthly_minor),
        price_hourly_minor: Set(new.price_hourly_minor),
        setup_fee_minor: Set(new.setup_fee_minor.unwrap_or(0)),
        currency: Set(currency),
        active: Set(new.active.unwrap_or(true)),
        hidden: Set(new.hidden.unwrap_or(false)),
        sort_order: Set(new.sort_order.unwrap_or(0)),
        ..Default::default()
    }
    .insert(&txn)
    .await
    .map_err(|err| Error::on_duplicate(err, "This slug is taken already."))?;
    set_regions(&txn, row.id, &regions).await?;
    txn.commit().await?;
    get(db, row.id).await
}

pub async fn update(
    db: &Database,
    cache: &Cache,
    actor: &Actor,
    id: ProductId,
    changes: PlanChanges,
) -> Result<PlanView> {
    actor.require_admin()?;
    let row = product::Entity::find_by_id(id)
        .one(db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Plan"))?;
    let policy = billing::policy::get(db, cache).await?;
    Error::check_fields(
        changes
            .name
            .as_deref()
            .and_then(|name| check_name("name", name))
            .into_iter()
            .chain(check_prices(
                &policy,
                changes
                    .price_monthly_minor
                    .unwrap_or(row.price_monthly_minor),
                changes.price_hourly_minor.unwrap_or(row.price_hourly_minor),
                changes.currency.as_deref().unwrap_or(&row.currency),
            ))
            .collect(),
    )?;
    let regions = match &changes.regions {
        Some(slugs) => Some(resolve_regions(db, slugs).await?),
        None => None,
    };
    let mut active = row.into_active_model();
    if let Some(name) = changes.name {
        active.name = Set(name.trim().to_owned());
    }
    if let Some(description) = changes.description {
        active.description = Set(Some(description).filter(|d| !d.trim().is_empty()));
    }
    if let Some(vcpus) = changes.vcpus {
        active.vcpus = Set(vcpus);
    }
    if let Some(memory) = changes.memory_mib {
        active.memory_mib = Set(memory);
    }
    if let Some(disk) = changes.disk_gib {
        active.disk_gib = Set(disk);
    }
    if let Some(transfer) = changes.transfer_gib {
        active.transfer_gib = Set(transfer);
    }
    if let Some(price) = changes.price_monthly_minor {
        active.price_monthly_minor = Set(price);
    }
    if let Some(price) = changes.price_hourly_minor {
        active.price_hourly_minor = Set(price);
    }
    if let Some(fee) = changes.setup_fee_minor {
        active.setup_fee_minor = Set(fee);
    }
    if let Some(currency) = changes.currency {
        active.currency = Set(currency);
    }
    if let Some(flag) = changes.active {
        active.active = Set(flag);
    }
    if let Some(flag) = changes.hidden {
        active.hidden = Set(flag);
    }
    if let Some(order) = changes.sort_order {
        active.sort_order = Set(order);
    }
    let txn = db.begin_write().await?;
    active.update(&txn).await?;
    if let Some(regions) = regions {
        set_regions(&txn, id, &regions).await?;
    }
    txn.commit().await?;
    get(db, id).await
}

/// Deletes a plan nothing was ordered with; otherwise 409.
pub async fn delete(db: &Database, actor: &Actor, id: ProductId) -> Result<()> {
    actor.require_admin()?;
    get(db, id).await?;
    let txn = db.begin_write().await?;
    set_regions(&txn, id, &[]).await?;
    product::Entity::delete_by_id(id)
        .exec(&txn)
        .await
        .map_err(|err| {
            Error::on_still_referenced(err, "This plan is still in use; deactivate it instead.")
        })?;
    txn.commit().await?;
    Ok(())
}

/// Region slugs per plan, of one plan or of all.
async fn regions_by_plan(
    db: &Database,
    only: Option<ProductId>,
) -> Result<HashMap<ProductId, Vec<String>>> {
    let mut select = product_region::Entity::find();
    if let Some(plan) = only {
        select = select.filter(product_region::Column::ProductId.eq(plan));
    }
    let rows = select
        .find_also_related(region::Entity)
        .all(db.reader())
        .await?;
    let mut by_plan: HashMap<ProductId, Vec<String>> = HashMap::new();
    for (link, region) in rows {
        if let Some(region) = region {
            by_plan
                .entry(link.product_id)
                .or_default()
                .push(region.slug);
        }
    }
    for slugs in by_plan.values_mut() {
        slugs.sort();
    }
    Ok(by_plan)
}

fn view(row: product::Model, regions: Vec<String>) -> PlanView {
    PlanView {
        id: row.id,
        slug: row.slug,
        name: row.name,
        description: row.description,
        vcpus: row.vcpus,
        memory_mib: row.memory_mib,
        disk_gib: row.disk_gib,
        transfer_gib: row.transfer_gib,
        price_monthly_minor: row.price_monthly_minor,
        price_hourly_minor: row.price_hourly_minor,
        setup_fee_minor: row.setup_fee_minor,
        currency: row.currency,
        regions,
        active: row.active,
        hidden: row.hidden,
        sort_order: row.sort_order,
    }
}

pub async fn get(db: &Database, id: ProductId) -> Result<PlanView> {
    let row = product::Entity::find_by_id(id)
        .one(db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Plan"))?;
    let mut regions = regions_by_plan(db, Some(id)).await?;
    Ok(view(row, regions.remove(&id).unwrap_or_default()))
}

/// Every plan for admins; for the public, the active and listed ones.
pub async fn list(db: &Database, include_unlisted: bool) -> Result<Vec<PlanView>> {
    let mut select = product::Entity::find()
        .order_by_asc(product::Column::SortOrder)
        .order_by_asc(product::Column::Slug);
    if !include_unlisted {
        select = select
            .filter(product::Column::Active.eq(true))
            .filter(product::Column::Hidden.eq(false));
    }
    let rows = select.all(db.reader()).await?;
    let mut regions = regions_by_plan(db, None).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let slugs = regions.remove(&row.id).unwrap_or_default();
            view(row, slugs)
        })
        .collect())
}
