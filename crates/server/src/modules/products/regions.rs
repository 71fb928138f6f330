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
use crate::validation::{check_name, check_slug};

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
    Error::check_fields(
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
    .map_err(|err| Error::on_duplicate(err, "This slug is taken already."))?;
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
        Error::check_fields(check_name("name", &name).into_iter().collect())?;
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
        .map_err(|err| {
            Error::on_still_referenced(err, "This region is still in use; deactivate it instead.")
        })?;
    Ok(())
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
