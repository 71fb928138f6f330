//! The job queue as admins see it, over HTTP on the configured backend
//! (database or Redis): a job that keeps failing is listed with its error,
//! dies, is run again and discarded; jobs in other states are refused.

use crate::common;

use std::time::Duration;

use common::{Session, TestApp, audit_actions, eventually, problem};
use reqwest::Method;
use serde_json::{Value, json};
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::jobs::{JobQueue, NewJob};

const PASSWORD: &str = "correct horse battery staple";

/// A server whose idle workers only look for jobs once a minute unless
/// something in this process wakes them, and its admin.
async fn quiet_app() -> (TestApp, Session) {
    let app = TestApp::spawn_with(|config| config.worker_poll_interval_ms = 60_000).await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    (app, admin)
}

async fn job(app: &TestApp, admin: &Session, id: &str) -> Value {
    app.fetch_json(Method::GET, &format!("/api/v1/admin/jobs/{id}"), admin)
        .await
}

async fn listed(app: &TestApp, admin: &Session, query: &str) -> Vec<String> {
    app.fetch_json(Method::GET, &format!("/api/v1/admin/jobs{query}"), admin)
        .await["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|job| job["id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test]
async fn a_failing_job_is_listed_with_its_error_dies_is_retried_and_discarded() {
    let (app, admin) = quiet_app().await;
    // No worker has a handler for this kind: every run fails.
    let id = app
        .state
        .jobs
        .enqueue(NewJob::new("test.broken", json!({"n": 1})).max_attempts(2))
        .await
        .expect("enqueued")
        .id()
        .to_string();

    let failed = eventually("the first run to fail", || async {
        let job = job(&app, &admin, &id).await;
        (job["state"] == "failed").then_some(job)
    })
    .await;
    assert_eq!(failed["kind"], "test.broken");
    assert_eq!(failed["attempts"], 1);
    assert_eq!(failed["max_attempts"], 2);
    assert!(
        failed["last_error"]
            .as_str()
            .expect("error")
            .contains("no handler"),
        "{failed}"
    );
    assert_eq!(listed(&app, &admin, "?status=failed").await, [id.as_str()]);
    assert_eq!(
        listed(&app, &admin, "?kind=test.broken").await,
        [id.as_str()]
    );
    assert!(listed(&app, &admin, "?status=dead").await.is_empty());
    assert!(listed(&app, &admin, "?kind=send_email").await.is_empty());

    // Retried now instead of after its backoff: its last attempt fails too.
    let path = format!("/api/v1/admin/jobs/{id}/retry");
    let retried = app.send_json(Method::POST, &path, &admin, &json!({})).await;
    assert_eq!(retried.status(), 200);
    let dead = eventually("the job to die", || async {
        let job = job(&app, &admin, &id).await;
        (job["state"] == "dead").then_some(job)
    })
    .await;
    assert_eq!(dead["attempts"], 2);
    assert!(
        dead["last_error"]
            .as_str()
            .expect("error")
            .contains("no handler")
    );
    assert_eq!(listed(&app, &admin, "?status=dead").await, [id.as_str()]);
    assert!(listed(&app, &admin, "?status=failed").await.is_empty());

    // A dead job gets a fresh set of attempts.
    let revived = app.send_json(Method::POST, &path, &admin, &json!({})).await;
    assert_eq!(revived.status(), 200);
    eventually("the revived job to run and fail again", || async {
        let job = job(&app, &admin, &id).await;
        (job["state"] == "failed" && job["attempts"] == 1).then_some(())
    })
    .await;

    let discard = format!("/api/v1/admin/jobs/{id}");
    assert_eq!(app.status_of(Method::DELETE, &discard, &admin).await, 204);
    assert_eq!(app.status_of(Method::GET, &discard, &admin).await, 404);
    assert_eq!(app.status_of(Method::DELETE, &discard, &admin).await, 404);
    assert!(listed(&app, &admin, "").await.is_empty());

    let audited = audit_actions(&app).await;
    assert_eq!(
        audited.iter().filter(|a| *a == "job.retried").count(),
        2,
        "{audited:?}"
    );
    assert!(audited.contains(&"job.discarded".to_owned()));
    app.stop().await;
}

#[tokio::test]
async fn only_dead_or_failed_jobs_are_retried_and_running_ones_stay() {
    let (app, admin) = quiet_app().await;
    // Another handle on the same queue: what it enqueues does not wake this
    // server's workers, so the test claims jobs itself, as a worker would.
    let queue = match &app.config.redis_url {
        Some(url) => JobQueue::redis(url, &app.config.redis_prefix)
            .await
            .expect("redis"),
        None => JobQueue::database(app.state.db.clone()),
    };

    let later = queue
        .enqueue(
            NewJob::new("test.later", json!({}))
                .run_at(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        )
        .await
        .expect("enqueued")
        .id()
        .to_string();
    assert_eq!(
        listed(&app, &admin, "?status=scheduled").await,
        [later.as_str()]
    );
    let refused = app
        .send_json(
            Method::POST,
            &format!("/api/v1/admin/jobs/{later}/retry"),
            &admin,
            &json!({}),
        )
        .await;
    assert_eq!(refused.status(), 409);
    assert_eq!(problem(refused).await["state"], "scheduled");

    let held = queue
        .enqueue(NewJob::new("test.held", json!({})))
        .await
        .expect("enqueued")
        .id();
    let claimed = queue
        .claim("test-worker", 10, Duration::from_secs(60))
        .await
        .expect("claimed");
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].lease.id, held);
    let running = job(&app, &admin, &held.to_string()).await;
    assert_eq!(running["state"], "running");
    assert_eq!(running["worker"], "test-worker");
    assert_eq!(
        listed(&app, &admin, "?status=running").await,
        [held.to_string()]
    );
    assert_eq!(
        listed(&app, &admin, "?status=queued").await,
        Vec::<String>::new()
    );
    let path = format!("/api/v1/admin/jobs/{held}");
    let retry = app
        .send_json(Method::POST, &format!("{path}/retry"), &admin, &json!({}))
        .await;
    assert_eq!(retry.status(), 409);
    let discard = app
        .authed(Method::DELETE, &path, &admin)
        .send()
        .await
        .expect("sent");
    assert_eq!(discard.status(), 409);
    assert_eq!(problem(discard).await["state"], "running");
    assert!(queue.complete(&claimed[0].lease).await.expect("completed"));
    assert_eq!(app.status_of(Method::GET, &path, &admin).await, 404);

    // Newest first, a page at a time.
    assert_eq!(listed(&app, &admin, "").await, [later.as_str()]);
    let newer = queue
        .enqueue(
            NewJob::new("test.later", json!({}))
                .run_at(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
        )
        .await
        .expect("enqueued")
        .id()
        .to_string();
    let page = app
        .fetch_json(Method::GET, "/api/v1/admin/jobs?limit=1", &admin)
        .await;
    assert_eq!(page["items"][0]["id"], newer.as_str());
    let cursor = page["next_cursor"].as_str().expect("a next page");
    assert_eq!(
        listed(&app, &admin, &format!("?limit=1&cursor={cursor}")).await,
        [later.as_str()]
    );
    app.stop().await;
}
