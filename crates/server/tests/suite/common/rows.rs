//! Rows inserted directly, for tests of the database layer: an account and
//! the catalogue an instance needs.

use sea_orm::ActiveModelTrait as _;
use sea_orm::ActiveValue::Set;
use sea_orm::DatabaseConnection;
use vmcloud_server::db::entities::{image, instance, node, product, region, user};

/// A user with only the required columns; the rest come from the entity's
/// hooks and the column defaults.
pub async fn new_user(conn: &DatabaseConnection, email: &str) -> user::Model {
    user::ActiveModel {
        email: Set(email.to_owned()),
        name: Set("Test User".to_owned()),
        password_hash: Set("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        role: Set(user::UserRole::Customer),
        status: Set(user::UserStatus::Active),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert user")
}

/// The rows an instance needs: its owner, region, product, image and node.
pub struct Catalogue {
    pub user: user::Model,
    pub region: region::Model,
    pub product: product::Model,
    pub image: image::Model,
    pub node: node::Model,
}

pub async fn catalogue(conn: &DatabaseConnection) -> Catalogue {
    let user = new_user(conn, "owner@example.com").await;
    let region = region::ActiveModel {
        slug: Set("par1".to_owned()),
        name: Set("Paris 1".to_owned()),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert region");
    let product = product::ActiveModel {
        slug: Set("s-1".to_owned()),
        name: Set("Small".to_owned()),
        vcpus: Set(1),
        memory_mib: Set(1024),
        disk_gib: Set(20),
        transfer_gib: Set(1000),
        price_monthly_minor: Set(500),
        price_hourly_minor: Set(1),
        currency: Set("EUR".to_owned()),
        active: Set(true),
        hidden: Set(false),
        sort_order: Set(0),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert product");
    let image = image::ActiveModel {
        slug: Set("debian-12".to_owned()),
        name: Set("Debian 12".to_owned()),
        os_family: Set("debian".to_owned()),
        os_version: Set("12".to_owned()),
        default_user: Set("debian".to_owned()),
        min_disk_gib: Set(4),
        status: Set(image::ImageStatus::Available),
        active: Set(true),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert image");
    let node = new_node(
        conn,
        &region,
        "node-1",
        node::NodeDriver::Qemu,
        "/var/lib/vmcloud/run",
    )
    .await;
    Catalogue {
        user,
        region,
        product,
        image,
        node,
    }
}

/// An online node of `region` with room for a few instances.
pub async fn new_node(
    conn: &DatabaseConnection,
    region: &region::Model,
    name: &str,
    driver: node::NodeDriver,
    uri: &str,
) -> node::Model {
    node::ActiveModel {
        name: Set(name.to_owned()),
        region_id: Set(region.id),
        driver: Set(driver),
        uri: Set(uri.to_owned()),
        status: Set(node::NodeStatus::Online),
        vcpus_total: Set(8),
        memory_mib_total: Set(16_384),
        disk_gib_total: Set(500),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert node")
}

pub async fn new_instance(conn: &DatabaseConnection, cat: &Catalogue) -> instance::Model {
    instance::ActiveModel {
        user_id: Set(cat.user.id),
        product_id: Set(cat.product.id),
        region_id: Set(cat.region.id),
        image_id: Set(cat.image.id),
        node_id: Set(Some(cat.node.id)),
        name: Set("web".to_owned()),
        hostname: Set("web".to_owned()),
        status: Set(instance::InstanceStatus::Running),
        vcpus: Set(1),
        memory_mib: Set(1024),
        disk_gib: Set(20),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert instance")
}
