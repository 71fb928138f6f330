//! Platform settings kept in the `settings` table, read through the cache so
//! a hot path can consult them on every request.

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

/// Whether Support and Admin accounts must use two-factor authentication.
pub const REQUIRE_2FA_FOR_STAFF: &str = "security.require_2fa_for_staff";

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
    if let Some(value) = cache.get_json::<T>(&cache_key(key)).await? {
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
    cache.delete(&cache_key(key)).await?;
    Ok(())
}
