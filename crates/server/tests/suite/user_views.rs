//! The near cache of account views: a write in one process drops the view in
//! every process sharing the cache (Redis in production).

use crate::common;

use std::time::Duration;

use sea_orm::IntoActiveModel as _;
use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use vmcloud_server::cache::Cache;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::modules::users::{self, NewUser, UserViews};

#[tokio::test]
async fn a_write_in_one_replica_drops_the_view_in_another() {
    let database = common::TestDatabase::fresh().await;
    let db = database.connect().await;
    let (replica_a, replica_b) = if let Some((url, prefix)) = common::test_redis() {
        (
            Cache::connect(Some(&url), &prefix).await.expect("redis"),
            Cache::connect(Some(&url), &prefix).await.expect("redis"),
        )
    } else {
        let shared = Cache::in_memory();
        (shared.clone(), shared)
    };
    let views_a = UserViews::new(replica_a);
    let views_b = UserViews::new(replica_b);
    let shutdown = CancellationToken::new();
    tokio::spawn(views_b.clone().listen(shutdown.clone()));
    // Let the listener subscribe before anything is published.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let account = users::create_user(
        &db,
        NewUser {
            email: "ada@example.org".into(),
            name: Some("Ada".into()),
            password: SecretString::from("correct horse battery staple"),
            role: UserRole::Customer,
            email_verified: true,
        },
    )
    .await
    .expect("user");
    assert_eq!(
        views_b.get(&db, account.id).await.expect("view").name,
        "Ada"
    );

    let mut renamed = account.clone().into_active_model();
    renamed.name = sea_orm::ActiveValue::Set("Ada Lovelace".into());
    users::save(&db, &views_a, renamed).await.expect("saved");

    let mut seen = String::new();
    for _ in 0..50 {
        seen = views_b.get(&db, account.id).await.expect("view").name;
        if seen == "Ada Lovelace" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "Ada Lovelace", "replica B still serves the old view");
    shutdown.cancel();
}
