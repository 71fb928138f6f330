//! Personal API tokens: the secret is shown once and stored only as a hash,
//! only live tokens authenticate, and a user only ever sees their own.

use crate::common;

use chrono::{Duration, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, EntityTrait as _, IntoActiveModel as _};
use sha2::{Digest as _, Sha256};
use vmcloud_server::db::Database;
use vmcloud_server::db::entities::api_token::{self, TokenScope};
use vmcloud_server::db::entities::{now, user};
use vmcloud_server::error::Error;
use vmcloud_server::ids::{ApiTokenId, UserId};
use vmcloud_server::modules::api_tokens::{self, AuthenticatedToken, CreatedApiToken, NewApiToken};
use vmcloud_server::pagination::{PageRequest, decode_cursor};

async fn setup() -> (common::TestDatabase, Database) {
    let test_db = common::TestDatabase::fresh().await;
    let db = test_db.connect().await;
    (test_db, db)
}

async fn new_user(db: &Database, email: &str) -> UserId {
    user::ActiveModel {
        email: Set(email.to_owned()),
        name: Set("Test User".to_owned()),
        password_hash: Set("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        role: Set(user::UserRole::Customer),
        status: Set(user::UserStatus::Active),
        ..Default::default()
    }
    .insert(db.writer())
    .await
    .expect("insert user")
    .id
}

fn request(name: &str, scope: TokenScope) -> NewApiToken {
    NewApiToken {
        name: name.to_owned(),
        scope,
        expires_at: None,
    }
}

async fn make(db: &Database, owner: UserId, name: &str) -> CreatedApiToken {
    api_tokens::create(db, owner, request(name, TokenScope::ReadWrite))
        .await
        .expect("token created")
}

async fn row(db: &Database, id: ApiTokenId) -> api_token::Model {
    api_token::Entity::find_by_id(id)
        .one(db.writer())
        .await
        .expect("select")
        .expect("row exists")
}

async fn authenticate(db: &Database, presented: &str) -> Option<AuthenticatedToken> {
    api_tokens::authenticate(db, presented)
        .await
        .expect("database answers")
}

fn field_errors(result: Result<CreatedApiToken, Error>) -> Vec<(String, String)> {
    match result {
        Err(Error::Validation { fields, .. }) => fields
            .into_iter()
            .map(|field| (field.field, field.message))
            .collect(),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_secret_is_shown_once_and_stored_only_as_a_hash() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let created = api_tokens::create(
        &db,
        owner,
        NewApiToken {
            name: "  ci deploy  ".to_owned(),
            scope: TokenScope::Read,
            expires_at: Some(Utc::now() + Duration::days(30)),
        },
    )
    .await
    .expect("created");

    let token = &created.token;
    let random = token.strip_prefix("vmc_").expect("vmc_ prefix");
    assert_eq!(random.len(), 40);
    assert!(random.bytes().all(|b| b.is_ascii_alphanumeric()), "{token}");
    assert_eq!(created.view.token_prefix, random[..8]);
    assert_eq!(created.view.name, "ci deploy");
    assert_eq!(created.view.scope, TokenScope::Read);
    assert_eq!(created.view.last_used_at, None);
    assert_eq!(created.view.revoked_at, None);
    assert!(
        !format!("{created:?}").contains(token.as_str()),
        "Debug redacts"
    );

    let stored = row(&db, created.view.id).await;
    assert_eq!(
        stored.token_hash,
        hex::encode(Sha256::digest(token.as_bytes()))
    );
    assert_eq!(stored.expires_at, created.view.expires_at);

    let listed = api_tokens::list(&db, owner, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(listed.items, vec![created.view.clone()]);
    let json = serde_json::to_string(&listed).expect("serialise");
    assert!(!json.contains(random), "the list never carries the secret");
    assert!(!json.contains(&stored.token_hash), "nor its hash");

    let other = make(&db, owner, "second").await;
    assert_ne!(other.token, created.token);
}

#[tokio::test]
async fn a_live_token_authenticates_and_records_its_use_once_a_minute() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let created = make(&db, owner, "cli").await;

    let before = now();
    let auth = authenticate(&db, &created.token).await.expect("valid");
    assert_eq!(
        auth,
        AuthenticatedToken {
            token_id: created.view.id,
            user_id: owner,
            scope: TokenScope::ReadWrite,
            expires_at: None,
        }
    );
    let first_use = row(&db, created.view.id)
        .await
        .last_used_at
        .expect("last use recorded");
    assert!(first_use >= before, "{first_use} < {before}");

    // Within the minute: no new write.
    authenticate(&db, &created.token)
        .await
        .expect("still valid");
    assert_eq!(
        row(&db, created.view.id).await.last_used_at,
        Some(first_use)
    );

    // Over a minute old: written again.
    let mut stale = row(&db, created.view.id).await.into_active_model();
    let long_ago = first_use - Duration::minutes(5);
    stale.last_used_at = Set(Some(long_ago));
    stale.update(db.writer()).await.expect("age last use");
    authenticate(&db, &created.token)
        .await
        .expect("still valid");
    let refreshed = row(&db, created.view.id).await.last_used_at.expect("set");
    assert!(refreshed >= first_use, "{refreshed} was not refreshed");
}

#[tokio::test]
async fn anything_but_a_live_token_is_refused() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let created = make(&db, owner, "cli").await;
    let token = created.token.as_str();

    let last = token.chars().last().expect("non-empty");
    let flipped_char = if last == 'a' { 'b' } else { 'a' };
    let flipped = format!("{}{flipped_char}", &token[..token.len() - 1]);
    let unknown = format!("vmc_{}", "A".repeat(40));
    let rejected = [
        String::new(),
        "vmc_".to_owned(),
        "garbage".to_owned(),
        format!("Bearer {token}"),
        format!("{token} "),
        token[..token.len() - 1].to_owned(),
        flipped,
        unknown,
    ];
    for presented in &rejected {
        assert_eq!(authenticate(&db, presented).await, None, "{presented:?}");
    }
    assert!(
        authenticate(&db, token).await.is_some(),
        "the real one works"
    );
}

#[tokio::test]
async fn a_revoked_token_stops_working_and_stays_listed() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let created = make(&db, owner, "cli").await;
    let kept = make(&db, owner, "other").await;

    let revoked = api_tokens::revoke(&db, owner, created.view.id)
        .await
        .expect("revoke");
    let revoked_at = revoked.revoked_at.expect("revoked_at set");
    assert_eq!(authenticate(&db, &created.token).await, None);

    let again = api_tokens::revoke(&db, owner, created.view.id)
        .await
        .expect("revoking twice is fine");
    assert_eq!(again.revoked_at, Some(revoked_at), "first revocation kept");

    let listed = api_tokens::list(&db, owner, PageRequest::default())
        .await
        .expect("list");
    let names: Vec<_> = listed
        .items
        .iter()
        .map(|t| (t.name.as_str(), t.revoked_at))
        .collect();
    assert_eq!(names, [("other", None), ("cli", Some(revoked_at))]);
    assert!(
        authenticate(&db, &kept.token).await.is_some(),
        "others unaffected"
    );
}

#[tokio::test]
async fn an_expired_token_stops_working() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let created = api_tokens::create(
        &db,
        owner,
        NewApiToken {
            expires_at: Some(Utc::now() + Duration::hours(1)),
            ..request("short-lived", TokenScope::Read)
        },
    )
    .await
    .expect("created");
    assert!(authenticate(&db, &created.token).await.is_some());

    // Expiry in the past cannot be asked for, so age the row directly.
    let mut expired = row(&db, created.view.id).await.into_active_model();
    expired.expires_at = Set(Some(now() - Duration::seconds(1)));
    expired.update(db.writer()).await.expect("expire");
    assert_eq!(authenticate(&db, &created.token).await, None);
}

#[tokio::test]
async fn names_and_expiry_are_validated() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let with = |name: &str, expires_in: Option<Duration>| NewApiToken {
        name: name.to_owned(),
        scope: TokenScope::Read,
        expires_at: expires_in.map(|d| Utc::now() + d),
    };
    let cases = [
        (with("", None), vec!["name"]),
        (with("   ", None), vec!["name"]),
        (with(&"n".repeat(101), None), vec!["name"]),
        (with("line\nbreak", None), vec!["name"]),
        (
            with("past", Some(Duration::seconds(-1))),
            vec!["expires_at"],
        ),
        (
            with("too far", Some(Duration::days(400))),
            vec!["expires_at"],
        ),
        (
            with("", Some(Duration::days(-3))),
            vec!["name", "expires_at"],
        ),
    ];
    for (new, expected) in cases {
        let errors = field_errors(api_tokens::create(&db, owner, new).await);
        let fields: Vec<&str> = errors.iter().map(|(field, _)| field.as_str()).collect();
        assert_eq!(fields, expected, "{errors:?}");
    }
    let longest = api_tokens::create(
        &db,
        owner,
        with(&"n".repeat(100), Some(Duration::days(365))),
    )
    .await
    .expect("100 chars and a year are allowed");
    assert_eq!(longest.view.name.chars().count(), 100);
    let listed = api_tokens::list(&db, owner, PageRequest::default())
        .await
        .expect("list");
    assert_eq!(
        listed.items,
        vec![longest.view],
        "nothing invalid was stored"
    );
}

#[tokio::test]
async fn another_users_tokens_do_not_exist_for_them() {
    let (_guard, db) = setup().await;
    let alice = new_user(&db, "alice@example.com").await;
    let bob = new_user(&db, "bob@example.com").await;
    let alices = make(&db, alice, "alice's").await;

    let bobs_list = api_tokens::list(&db, bob, PageRequest::default())
        .await
        .expect("list");
    assert!(bobs_list.items.is_empty());
    let result = api_tokens::revoke(&db, bob, alices.view.id).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
    let result = api_tokens::revoke(&db, alice, ApiTokenId::new()).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");

    assert_eq!(row(&db, alices.view.id).await.revoked_at, None);
    assert_eq!(
        authenticate(&db, &alices.token)
            .await
            .map(|auth| auth.user_id),
        Some(alice)
    );
}

#[tokio::test]
async fn lists_page_by_cursor_newest_first() {
    let (_guard, db) = setup().await;
    let owner = new_user(&db, "alice@example.com").await;
    let mut created = Vec::new();
    for name in ["one", "two", "three"] {
        created.push(make(&db, owner, name).await.view);
    }
    let first = api_tokens::list(
        &db,
        owner,
        PageRequest {
            limit: 2,
            after: None,
        },
    )
    .await
    .expect("first page");
    assert_eq!(first.items, vec![created[2].clone(), created[1].clone()]);
    let after = decode_cursor(&first.next_cursor.expect("more")).expect("our cursor");
    let second = api_tokens::list(
        &db,
        owner,
        PageRequest {
            limit: 2,
            after: Some(after),
        },
    )
    .await
    .expect("second page");
    assert_eq!(second.items, vec![created[0].clone()]);
    assert_eq!(second.next_cursor, None);
}
