//! Instance metrics: the rollup and retention of stored rows, the series
//! served from them, and, on the real local QEMU node, a running VM sampled
//! into that series and onto `/metrics`.
//!
//! The booting test needs the test guest in `VMCLOUD_TEST_GUEST_IMAGE`
//! (see instances.rs); without it it is skipped, loudly. The others
//! need no VM.

use crate::common;

use chrono::{DateTime, TimeDelta, TimeZone as _, Utc};
use common::cloud::{Cloud, SLOW, guest_image};
use common::rows::{catalogue, new_instance, new_user};
use common::{TestApp, TestDatabase, eventually, eventually_within, problem};
use reqwest::Method;
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, IntoActiveModel as _,
    QueryFilter as _, QueryOrder as _,
};
use serde_json::Value;
use vmcloud_server::db::Database;
use vmcloud_server::db::entities::instance::InstanceStatus;
use vmcloud_server::db::entities::instance_metric;
use vmcloud_server::ids::{InstanceId, InstanceMetricId};
use vmcloud_server::modules::instances::metrics::roll_up;

/// A sample at `at` whose disk has read 100 bytes a second since `origin`.
fn sample(
    instance_id: InstanceId,
    origin: DateTime<Utc>,
    at: DateTime<Utc>,
    resolution_secs: i32,
) -> instance_metric::ActiveModel {
    let bytes = (at - origin).num_seconds() * 100;
    instance_metric::Model {
        id: InstanceMetricId::new(),
        instance_id,
        sampled_at: at,
        cpu_percent: 20.0,
        memory_used_mib: 100,
        disk_read_bytes: bytes,
        disk_write_bytes: bytes,
        net_rx_bytes: 0,
        net_tx_bytes: 0,
        resolution_secs,
        created_at: at,
        updated_at: at,
    }
    .into_active_model()
}

/// Raw samples every 10 s over `[from, to)`.
async fn insert_raw(
    db: &Database,
    instance: InstanceId,
    origin: DateTime<Utc>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) {
    let times: Vec<_> = std::iter::successors(Some(from), |t| Some(*t + TimeDelta::seconds(10)))
        .take_while(|t| *t < to)
        .collect();
    for chunk in times.chunks(500) {
        instance_metric::Entity::insert_many(
            chunk.iter().map(|t| sample(instance, origin, *t, 10)),
        )
        .exec(db.writer())
        .await
        .expect("insert samples");
    }
}

async fn rows_of(db: &Database, instance: InstanceId) -> Vec<instance_metric::Model> {
    instance_metric::Entity::find()
        .filter(instance_metric::Column::InstanceId.eq(instance))
        .order_by_asc(instance_metric::Column::SampledAt)
        .all(db.writer())
        .await
        .expect("rows")
}

#[tokio::test]
async fn old_rows_are_rolled_up_and_then_deleted() {
    let test_db = TestDatabase::fresh().await;
    let db = test_db.connect().await;
    let cat = catalogue(db.writer()).await;
    let instance = new_instance(db.writer(), &cat).await.id;
    let now = Utc
        .with_ymd_and_hms(2026, 3, 10, 12, 0, 0)
        .single()
        .expect("time");
    let hours = TimeDelta::hours;
    let origin = now - TimeDelta::days(10);
    // Two hours of samples straddling the raw window, an hour left behind
    // while no sampler ran, and a row past retention.
    insert_raw(&db, instance, origin, now - hours(3), now - hours(1)).await;
    insert_raw(&db, instance, origin, now - hours(50), now - hours(49)).await;
    instance_metric::Entity::insert(sample(instance, origin, now - TimeDelta::days(9), 3600))
        .exec(db.writer())
        .await
        .expect("insert");

    roll_up(&db, now).await.expect("rollup");
    let rows = rows_of(&db, instance).await;
    let of = |resolution: i32| -> Vec<_> {
        rows.iter()
            .filter(|row| row.resolution_secs == resolution)
            .collect()
    };
    assert_eq!(of(10).len(), 360, "the last two hours stay raw");
    assert!(of(10).iter().all(|row| row.sampled_at >= now - hours(2)));
    let five_minutes = of(300);
    assert_eq!(five_minutes.len(), 12, "the hour before, in 5-minute rows");
    for row in &five_minutes {
        // Each keeps its bucket's last sample: time and counters.
        assert_eq!(row.sampled_at.timestamp() % 300, 290, "{row:?}");
        assert_eq!(
            row.disk_read_bytes,
            (row.sampled_at - origin).num_seconds() * 100
        );
        assert!((row.cpu_percent - 20.0).abs() < 1e-9);
        assert_eq!(row.memory_used_mib, 100);
    }
    let hourly = of(3600);
    assert_eq!(hourly.len(), 1, "{hourly:?}");
    assert_eq!(
        hourly[0].sampled_at,
        now - hours(49) - TimeDelta::seconds(10)
    );
    assert_eq!(rows.len(), 373, "and the 9-day-old row is gone");

    roll_up(&db, now).await.expect("second rollup");
    assert_eq!(
        rows_of(&db, instance).await,
        rows,
        "a second pass changes nothing"
    );
}

#[tokio::test]
async fn the_series_is_served_to_its_owner_in_buckets() {
    let app = TestApp::spawn().await;
    let db = &app.state.db;
    let cat = catalogue(db.writer()).await;
    // Stopped, so the app's sampler leaves its made-up node alone; its
    // history stays readable.
    let mut stopped = new_instance(db.writer(), &cat).await.into_active_model();
    stopped.status = Set(InstanceStatus::Stopped);
    let instance = stopped.update(db.writer()).await.expect("stop").id;
    let now = vmcloud_server::db::entities::now();
    let origin = now - TimeDelta::days(1);
    insert_raw(db, instance, origin, now - TimeDelta::minutes(30), now).await;
    let owner = app.session_for(&cat.user.id.to_string()).await;
    let path = |range: &str| format!("/api/v1/instances/{instance}/metrics?range={range}");

    let hour = app.fetch_json(Method::GET, &path("1h"), &owner).await;
    let points = hour["points"].as_array().expect("points");
    assert_eq!(points.len(), 179, "one per pair of samples: {hour}");
    for point in points {
        assert_eq!(point["cpu_percent"], 20.0);
        assert_eq!(point["memory_used_mib"], 100.0);
        assert_eq!(point["disk_read_bps"], 100.0);
        assert_eq!(point["net_rx_bps"], 0.0);
    }
    let default = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/instances/{instance}/metrics"),
            &owner,
        )
        .await;
    assert_eq!(default, hour, "1h is the default");

    let day = app.fetch_json(Method::GET, &path("24h"), &owner).await;
    assert_eq!(day["bucket_secs"], 300);
    let buckets = day["points"].as_array().expect("points");
    assert!((6..=7).contains(&buckets.len()), "{day}");
    assert!(
        buckets.iter().all(|p| p["disk_write_bps"] == 100.0),
        "{day}"
    );

    let other = new_user(db.writer(), "eve@example.com").await;
    let other = app.session_for(&other.id.to_string()).await;
    assert_eq!(app.status_of(Method::GET, &path("1h"), &other).await, 404);

    let bad = app
        .authed(Method::GET, &path("1y"), &owner)
        .send()
        .await
        .expect("sent");
    assert_eq!(bad.status(), 422);
    let body = problem(bad).await;
    assert_eq!(body["errors"][0]["field"], "range", "{body}");
    app.stop().await;
}

#[tokio::test]
async fn a_running_vm_is_sampled_into_its_series_and_onto_metrics() {
    let Some(guest) = guest_image() else { return };
    let cloud = Cloud::start(|config| config.metrics_interval_secs = 1).await;
    let app = &cloud.app;
    cloud.image("tiny", &guest).await;
    cloud.plan("small", 1, 256, 1).await;
    let customer = cloud.customer("ada@example.org").await;
    let id = cloud.running_instance(&customer, "sampled").await;
    let path = format!("/api/v1/instances/{id}/metrics?range=1h");

    let points = eventually_within("two metric points", SLOW, || async {
        let series = app.fetch_json(Method::GET, &path, &customer).await;
        let points = series["points"].as_array()?.clone();
        (points.len() >= 2).then_some(points)
    })
    .await;
    for point in &points {
        let cpu = point["cpu_percent"].as_f64().expect("cpu");
        assert!((0.0..=100.0).contains(&cpu), "{point}");
        assert!(
            point["memory_used_mib"].as_f64().expect("memory") > 0.0,
            "{point}"
        );
    }

    let series = format!("vmcloud_instance_cpu_percent{{instance=\"{id}\"}}");
    let scrape = || async { app.scrape().await.text().await.expect("text") };
    assert!(scrape().await.contains(&series));

    let other = cloud.customer("eve@example.org").await;
    assert_eq!(app.status_of(Method::GET, &path, &other).await, 404);

    let deletion = app
        .authed(
            Method::DELETE,
            &format!("/api/v1/instances/{id}"),
            &customer,
        )
        .send()
        .await
        .expect("sent");
    let deletion: Value = deletion.json().await.expect("json");
    cloud.finished(&customer, &id, &deletion).await;
    eventually("the deleted instance to leave /metrics", || async {
        (!scrape().await.contains(&series)).then_some(())
    })
    .await;
    cloud.app.stop().await;
}
