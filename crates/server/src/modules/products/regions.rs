//! Regions: where instances can run.

use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _, QueryOrder as _,
};
use serde::{Deserialize, Serialize};

use crate::db::Database;
use crate::db::entities::region;
use crate::error::{Error, Result};
use crate::ids::RegionId;
use crate::modules::auth::Actor;
use crate::modules::products::{check_name, check_slug, conflict_on_duplicate, reject};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RegionView {
    pub id: RegionId,
    pub slug: String,
    pub name: String,
    pub active: bool,
}

impl From<region::Model> for RegionView {
    fn from(row: region::Model) -> Self {
        Self {
            id: row.id,
            slug: row.slug,
            name: row.name,
            active: row.active,
        }
    }
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRegion {
    #[garde(skip)]
    pub slug: String,
    #[garde(skip)]
    pub name: String,
    /// Defaults to true.
    #[garde(skip)]
    pub active: Option<bool>,
}

#[derive(Debug, Default, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegionChanges {
    #[garde(skip)]
    pub name: Option<String>,
    #[garde(skip)]
    pub active: Option<bool>,
}

pub async fn create(db: &Database, actor: &Actor, new: NewRegion) -> Result<RegionView> {
    actor.require_admin()?;
    reject(
        check_slug("slug", &new.slug)
            .into_iter()
            .chain(check_name("name", &new.name))
            .collect(),
    )?;
    let row = region::ActiveModel {
        slug: Set(new.slug),
        name: Set(new.name.trim().to_owned()),
        active: Set(new.active.unwrap_or(true)),
        ..Default::default()
    }
    .insert(db.writer())
    .await
    .map_err(|err| conflict_on_duplicate(err, "This slug"))?;
    Ok(row.into())
}

async fn find(db: &Database, id: RegionId) -> Result<region::Model> {
    region::Entity::find_by_id(id)
        .one(db.reader())
        .await?
        .ok_or_else(|| Error::not_found("Region"))
}

pub async fn update(
    db: &Database,
    actor: &Actor,
    id: RegionId,
    changes: RegionChanges,
) -> Result<RegionView> {
    actor.require_admin()?;
    let mut active = find(db, id).await?.into_active_model();
    if let Some(name) = changes.name {
        reject(check_name("name", &name).into_iter().collect())?;
        active.name = Set(name.trim().to_owned());
    }
    if let Some(flag) = changes.active {
        active.active = Set(flag);
    }
    Ok(active.update(db.writer()).await?.into())
}

/// Deletes a region nothing uses; one with nodes, addresses or instances
/// answers 409, to be deactivated instead.
pub async fn delete(db: &Database, actor: &Actor, id: RegionId) -> Result<()> {
    actor.require_admin()?;
    find(db, id).await?;
    region::Entity::delete_by_id(id)
        .exec(db.writer())
        .await
        .map_err(|err| in_use(err, "region"))?;
    Ok(())
}

/// A foreign-key refusal to delete, as a 409 that says what to do instead.
pub fn in_use(err: sea_orm::DbErr, what: &str) -> Error {
    if matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
    ) {
        Error::Conflict(format!(
            "This {what} is still in use; deactivate it instead."
        ))
    } else {
        err.into()
    }
}

/// Every region for admins; only active ones for everybody else.
pub async fn list(db: &Database, include_inactive: bool) -> Result<Vec<RegionView>> {
    let mut select = region::Entity::find().order_by_asc(region::Column::Slug);
    if !include_inactive {
        select = select.filter(region::Column::Active.eq(true));
    }
    Ok(select
        .all(db.reader())
        .await?
        .into_iter()
        .map(RegionView::from)
        .collect())
}
