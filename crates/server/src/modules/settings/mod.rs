//! Platform settings kept in the `settings` table: typed values with
//! defaults and validation ([`Setting`]), listed in one [`registry`] that
//! admins read and change through `/api/v1/admin/settings`.
//!
//! Reads go through the cache so a hot path can consult a setting on every
//! request. With Redis each process also keeps its own copy; a change evicts
//! it in every replica over the cache's pub/sub (see
//! [`Cache::invalidate_everywhere`]), so replicas see it at once.

mod registry;

use std::time::Duration;

use sea_orm::ActiveValue::Set;
use sea_orm::EntityTrait as _;
use sea_orm::sea_query::OnConflict;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::setting;
use crate::error::Result;
use crate::ids::UserId;

pub use registry::{SettingView, list, read, registry, write};

/// A typed setting: its key, its default (`Default`) and its rules (the
/// `garde` attributes and [`Setting::check`]).
pub trait Setting:
    Serialize + DeserializeOwned + Default + garde::Validate<Context = ()> + Send + Sync + 'static
{
    /// The key in the `settings` table and in the admin API
    /// (`/api/v1/admin/settings/{key}`).
    const KEY: &'static str;
    /// What it governs, for the admin console.
    const DESCRIPTION: &'static str;

    /// Rules that span fields, beyond the `garde` attributes.
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// The current value of `S`, or its default when never set.
pub async fn load<S: Setting>(db: &Database, cache: &Cache) -> Result<S> {
    get(db, cache, S::KEY, S::default()).await
}

/// Validates and stores a new value of `S`; 422 naming the bad fields.
pub async fn store<S: Setting>(db: &Database, cache: &Cache, value: &S, by: UserId) -> Result<()> {
    value.validate()?;
    value.check()?;
    set(db, cache, S::KEY, value, by).await
}

/// Every replica re-reads a setting at least this often; a change made
/// through [`set`] is seen at once by the replica that made it and by
/// every replica sharing the Redis cache.
const CACHE_TTL: Duration = Duration::from_secs(30);

fn cache_key(key: &str) -> String {
    format!("setting:{key}")
}

/// The setting `key`, or `default` when it was never set (or no longer
/// parses as a `T`, after a change of its shape).
pub async fn get<T>(db: &Database, cache: &Cache, key: &str, default: T) -> Result<T>
where
    T: Serialize + DeserializeOwned,
{
    if let Some(bytes) = cache.get_near(&cache_key(key)).await?
        && let Ok(value) = serde_json::from_slice(&bytes)
    {
        return Ok(value);
    }
    let value = setting::Entity::find_by_id(key.to_owned())
        .one(db.reader())
        .await?
        .and_then(|row| serde_json::from_value(row.value).ok())
        .unwrap_or(default);
    cache
        .set_json(&cache_key(key), &value, Some(CACHE_TTL))
        .await?;
    Ok(value)
}

pub async fn set<T: Serialize>(
    db: &Database,
    cache: &Cache,
    key: &str,
    value: &T,
    by: UserId,
) -> Result<()> {
    let now = crate::db::entities::now();
    setting::Entity::insert(setting::ActiveModel {
        key: Set(key.to_owned()),
        value: Set(serde_json::to_value(value).map_err(anyhow::Error::from)?),
        updated_by: Set(Some(by)),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(setting::Column::Key)
            .update_columns([
                setting::Column::Value,
                setting::Column::UpdatedBy,
                setting::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec(db.writer())
    .await?;
    cache.invalidate_everywhere(&cache_key(key)).await?;
    Ok(())
}
