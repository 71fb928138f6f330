//! Billing rows and accounts for the billing tests, on simulated time.

use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::instance::{self, InstanceStatus};
use vmcloud_server::db::entities::user::{self, UserRole};
use vmcloud_server::db::entities::{product, product_region};
use vmcloud_server::ids::UserId;
use vmcloud_server::modules::billing::subscriptions;

use super::{Session, TestApp, rows};

pub const PASSWORD: &str = "correct horse battery";

/// A plan priced `hourly` and `monthly` EUR cents, offered in the
/// catalogue's region.
pub async fn plan(
    app: &TestApp,
    cat: &rows::Catalogue,
    slug: &str,
    hourly: i64,
    monthly: i64,
) -> product::Model {
    let plan = product::ActiveModel {
        slug: Set(slug.to_owned()),
        name: Set(format!("Plan {slug}")),
        vcpus: Set(1),
        memory_mib: Set(512),
        disk_gib: Set(10),
        transfer_gib: Set(100),
        price_monthly_minor: Set(monthly),
        price_hourly_minor: Set(hourly),
        setup_fee_minor: Set(0),
        currency: Set("EUR".to_owned()),
        active: Set(true),
        hidden: Set(false),
        sort_order: Set(0),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("insert plan");
    product_region::ActiveModel {
        product_id: Set(plan.id),
        region_id: Set(cat.region.id),
        created_at: Set(vmcloud_server::db::entities::now()),
    }
    .insert(app.state.db.writer())
    .await
    .expect("offer the plan");
    plan
}

/// A running instance of `owner` on `plan`, with its subscription opened
/// at the clock's now.
pub async fn instance_of(
    app: &TestApp,
    clock: &ManualClock,
    cat: &rows::Catalogue,
    owner: UserId,
    plan: &product::Model,
) -> instance::Model {
    let row = instance::ActiveModel {
        user_id: Set(owner),
        product_id: Set(plan.id),
        region_id: Set(cat.region.id),
        image_id: Set(cat.image.id),
        node_id: Set(Some(cat.node.id)),
        name: Set("web".to_owned()),
        hostname: Set("web".to_owned()),
        status: Set(InstanceStatus::Running),
        vcpus: Set(1),
        memory_mib: Set(512),
        disk_gib: Set(10),
        ..Default::default()
    }
    .insert(app.state.db.writer())
    .await
    .expect("insert instance");
    subscriptions::track(
        &app.state.db,
        &row,
        vmcloud_server::clock::Clock::now(clock),
    )
    .await
    .expect("subscription");
    row
}

/// A customer in `country` (no VAT outside the EU), signed in.
pub async fn customer(app: &TestApp, email: &str, country: &str) -> (UserId, Session) {
    customer_with_vat_id(app, email, country, None).await
}

/// A customer in `country`, a company with `vat_id` when there is one,
/// signed in.
pub async fn customer_with_vat_id(
    app: &TestApp,
    email: &str,
    country: &str,
    vat_id: Option<&str>,
) -> (UserId, Session) {
    let id = app.create_user(email, PASSWORD, UserRole::Customer).await;
    let user_id: UserId = id.parse().expect("id");
    let row = user::Entity::find_by_id(user_id)
        .one(app.state.db.writer())
        .await
        .expect("select")
        .expect("user");
    let mut active = row.into_active_model();
    active.country = Set(Some(country.to_owned()));
    active.vat_id = Set(vat_id.map(str::to_owned));
    active.company = Set(vat_id.map(|_| "Beispiel GmbH".to_owned()));
    active.update(app.state.db.writer()).await.expect("update");
    (user_id, app.session_for(&id).await)
}
