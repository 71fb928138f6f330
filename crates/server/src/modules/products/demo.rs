//! `vmcloud serve --demo`: a catalog a newcomer can order from at once — the
//! project's tiny test guest as an image, and small plans in the local
//! node's region. Seeding is idempotent: what exists already is kept.
//!
//! The guest image is the operator's own file, so it is published at once;
//! it is copied into the import directory, the one place imports read from.

use std::path::Path;

use anyhow::Context as _;

use sea_orm::{ColumnTrait as _, EntityTrait as _, PaginatorTrait as _, QueryFilter as _};

use crate::cache::Cache;
use crate::db::Database;
use crate::db::entities::{image, product};
use crate::error::{Error, Result};
use crate::jobs::JobQueue;
use crate::modules::auth::Actor;
use crate::modules::products::image_source::SourcePolicy;
use crate::modules::products::images::{self, NewImage};
use crate::modules::products::plans::{self, NewPlan};

pub const IMAGE_SLUG: &str = "vmcloud-test-guest";

/// (slug, name, vCPUs, MiB, GiB, monthly and hourly price in cents): small
/// enough to boot under emulation.
const PLANS: [(&str, &str, i32, i32, i32, i64, i64); 2] = [
    ("demo-nano", "Demo nano", 1, 256, 1, 100, 1),
    ("demo-micro", "Demo micro", 2, 512, 2, 200, 1),
];

pub async fn seed(
    db: &Database,
    cache: &Cache,
    jobs: &JobQueue,
    sources: &SourcePolicy,
    region: &str,
    guest_image: &Path,
) -> Result<()> {
    let platform = Actor::platform();
    let guest_image = std::path::absolute(guest_image).map_err(anyhow::Error::from)?;
    if !guest_image.is_file() {
        return Err(Error::Unavailable(format!(
            "The demo image {} does not exist; build it with `guest/build.sh --out guest/out`.",
            guest_image.display()
        )));
    }
    let has_image = image::Entity::find()
        .filter(image::Column::Slug.eq(IMAGE_SLUG))
        .count(db.writer())
        .await?
        > 0;
    if !has_image {
        let staged = sources.import_dir.join(format!("{IMAGE_SLUG}.qcow2"));
        tokio::fs::copy(&guest_image, &staged)
            .await
            .with_context(|| format!("copying the demo image to {}", staged.display()))?;
        images::register(
            db,
            jobs,
            &platform,
            sources,
            NewImage {
                slug: IMAGE_SLUG.to_owned(),
                name: "VMCloud test guest (busybox + dropbear)".to_owned(),
                os_family: "busybox".to_owned(),
                os_version: "1".to_owned(),
                default_user: "root".to_owned(),
                min_disk_gib: 1,
                source: staged.to_string_lossy().into_owned(),
                checksum: None,
            },
            true,
        )
        .await?;
    }
    for (sort_order, (slug, name, vcpus, memory_mib, disk_gib, monthly, hourly)) in (0..).zip(PLANS)
    {
        let exists = product::Entity::find()
            .filter(product::Column::Slug.eq(slug))
            .count(db.writer())
            .await?
            > 0;
        if !exists {
            plans::create(
                db,
                cache,
                &platform,
                NewPlan {
                    slug: slug.to_owned(),
                    name: name.to_owned(),
                    description: Some("A tiny VM of the demo catalog.".to_owned()),
                    vcpus,
                    memory_mib,
                    disk_gib,
                    transfer_gib: 100,
                    price_monthly_minor: monthly,
                    price_hourly_minor: hourly,
                    setup_fee_minor: None,
                    currency: None,
                    regions: vec![region.to_owned()],
                    active: Some(true),
                    hidden: Some(false),
                    sort_order: Some(sort_order),
                },
            )
            .await?;
        }
    }
    tracing::info!(region, image = IMAGE_SLUG, "demo catalog ready");
    Ok(())
}
