//! Every setting admins can read and change, by key, as JSON: the generic
//! side of `/api/v1/admin/settings`. Each entry is a typed [`Setting`], so a
//! value is parsed and validated by the same rules as its own endpoint.

use futures::future::BoxFuture;
use serde::Serialize;

use super::{Setting, load, store};
use crate::cache::Cache;
use crate::db::Database;
use crate::error::{Error, FieldError, Result};
use crate::ids::UserId;

/// One setting as admins see it.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct SettingView {
    pub key: &'static str,
    pub description: &'static str,
    /// The current value (the default when never changed).
    pub value: serde_json::Value,
    pub default: serde_json::Value,
}

type Read = for<'a> fn(&'a Database, &'a Cache) -> BoxFuture<'a, Result<serde_json::Value>>;
type Write = for<'a> fn(
    &'a Database,
    &'a Cache,
    serde_json::Value,
    UserId,
) -> BoxFuture<'a, Result<serde_json::Value>>;

/// A [`Setting`] with its type erased.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub key: &'static str,
    pub description: &'static str,
    default: fn() -> serde_json::Value,
    read: Read,
    write: Write,
}

impl Entry {
    fn of<S: Setting>() -> Self {
        Self {
            key: S::KEY,
            description: S::DESCRIPTION,
            default: || to_json(&S::default()),
            read: |db, cache| Box::pin(async move { Ok(to_json(&load::<S>(db, cache).await?)) }),
            write: |db, cache, value, by| {
                Box::pin(async move {
                    let value: S = crate::validation::from_json(value)?;
                    store(db, cache, &value, by).await?;
                    Ok(to_json(&value))
                })
            },
        }
    }
}

fn to_json(value: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(value).expect("settings serialize to JSON")
}

/// The settings of every module, in the order the console lists them.
pub fn registry() -> Vec<Entry> {
    use crate::modules::{auth, billing, instances, nodes, support, users};
    vec![
        Entry::of::<users::policy::AccountPolicy>(),
        Entry::of::<auth::policy::SecurityPolicy>(),
        Entry::of::<billing::policy::BillingPolicy>(),
        Entry::of::<billing::tax::InvoicingSettings>(),
        Entry::of::<billing::dunning::DunningPolicy>(),
        Entry::of::<instances::policy::InstancePolicy>(),
        Entry::of::<nodes::NodeDefaults>(),
        Entry::of::<crate::realtime::policy::RealtimePolicy>(),
        Entry::of::<support::policy::SupportSettings>(),
    ]
}

fn entry(key: &str) -> Result<Entry> {
    registry()
        .into_iter()
        .find(|entry| entry.key == key)
        .ok_or_else(|| {
            Error::invalid(vec![FieldError::new(
                "key",
                format!(
                    "unknown setting; one of {}",
                    registry()
                        .iter()
                        .map(|entry| entry.key)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )])
        })
}

async fn view(db: &Database, cache: &Cache, entry: Entry) -> Result<SettingView> {
    Ok(SettingView {
        key: entry.key,
        description: entry.description,
        value: (entry.read)(db, cache).await?,
        default: (entry.default)(),
    })
}

/// Every setting with its current value and default.
pub async fn list(db: &Database, cache: &Cache) -> Result<Vec<SettingView>> {
    let mut views = Vec::new();
    for entry in registry() {
        views.push(view(db, cache, entry).await?);
    }
    Ok(views)
}

/// One setting; an unknown key is a 422 listing the known ones.
pub async fn read(db: &Database, cache: &Cache, key: &str) -> Result<SettingView> {
    view(db, cache, entry(key)?).await
}

/// Replaces a setting's value after parsing it as its type and checking its
/// rules: an unknown key or a bad value is a 422 naming the field.
pub async fn write(
    db: &Database,
    cache: &Cache,
    key: &str,
    value: serde_json::Value,
    by: UserId,
) -> Result<SettingView> {
    let entry = entry(key)?;
    (entry.write)(db, cache, value, by).await?;
    view(db, cache, entry).await
}
