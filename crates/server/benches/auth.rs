//! What every authenticated request pays before its handler runs: verifying
//! the access token's signature and claims, then the role check of the route.
//! (The revocation lookup is one cache round trip, measured end to end by
//! `bench/identity.sh`.)

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::ids::UserId;
use vmcloud_server::modules::auth::access::{self, Grant};
use vmcloud_server::modules::auth::keys::{KeyRing, generate_key};
use vmcloud_server::modules::auth::{Actor, Credential};

fn token_check(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("dir");
    let keys = KeyRing::load(Some(&generate_key().into()), &[], dir.path()).expect("keys");
    let token = access::issue(
        &keys,
        Grant {
            user_id: UserId::new(),
            role: UserRole::Support,
            session_id: uuid::Uuid::now_v7(),
            impersonator: None,
            two_factor: false,
        },
    )
    .expect("token")
    .token;
    c.bench_function("access token verify + staff check", |b| {
        b.iter(|| {
            let claims = access::verify(&keys, black_box(&token)).expect("valid");
            let actor = Actor {
                user_id: claims.sub,
                role: claims.role,
                credential: Credential::Session {
                    session_id: claims.sid,
                    jti: claims.jti,
                    expires_at: claims.expires_at(),
                },
                impersonator: claims.imp,
                two_factor: claims.mfa,
                staff_held_back: false,
            };
            black_box(actor.is_staff())
        });
    });
}

/// The argon2id cost each login pays (OWASP parameters: 19 MiB, t=2, p=1).
fn password_check(c: &mut Criterion) {
    use vmcloud_server::modules::users::password;
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let hash = runtime
        .block_on(password::hash("correct horse battery staple".into()))
        .expect("hash");
    let mut group = c.benchmark_group("argon2id");
    group.sample_size(20);
    group.bench_function("verify a password (one login)", |b| {
        b.iter(|| {
            runtime
                .block_on(password::verify(
                    "correct horse battery staple".into(),
                    black_box(hash.clone()),
                ))
                .expect("verify")
        });
    });
    group.finish();
}

criterion_group!(benches, token_check, password_check);
criterion_main!(benches);
