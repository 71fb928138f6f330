//! The catalog over HTTP: admins manage regions, plans and images (imported
//! for real with qemu-img, from a file and over HTTP); the public sees what
//! is on sale.

use crate::common;

use std::path::Path;

use common::images::{admin, created, image, raw_image, wait_for_import};
use common::{TestApp, problem};
use reqwest::Method;
use serde_json::json;

fn plan(slug: &str, regions: &[&str]) -> serde_json::Value {
    json!({
        "slug": slug, "name": format!("Plan {slug}"), "vcpus": 1, "memory_mib": 512,
        "disk_gib": 10, "transfer_gib": 1000, "price_monthly_minor": 490,
        "price_hourly_minor": 1, "regions": regions,
    })
}

#[tokio::test]
async fn admins_manage_regions_and_plans_and_the_public_sees_what_is_on_sale() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let eu = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/regions",
            &admin,
            &json!({"slug": "eu-west", "name": "Europe West"}),
        )
        .await,
    )
    .await;
    created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/regions",
            &admin,
            &json!({"slug": "us-east", "name": "US East", "active": false}),
        )
        .await,
    )
    .await;
    let duplicate = app
        .send_json(
            Method::POST,
            "/api/v1/admin/regions",
            &admin,
            &json!({"slug": "eu-west", "name": "Again"}),
        )
        .await;
    assert_eq!(duplicate.status(), 409);
    let bad = app
        .send_json(
            Method::POST,
            "/api/v1/admin/regions",
            &admin,
            &json!({"slug": "EU West", "name": ""}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let fields: Vec<String> = problem(bad).await["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_owned())
        .collect();
    assert_eq!(fields, ["slug", "name"]);

    let small = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/products",
            &admin,
            &plan("small", &["eu-west"]),
        )
        .await,
    )
    .await;
    assert_eq!(small["regions"], json!(["eu-west"]));
    assert_eq!(
        (
            &small["price_monthly_minor"],
            &small["price_hourly_minor"],
            &small["setup_fee_minor"],
            &small["currency"]
        ),
        (&json!(490), &json!(1), &json!(0), &json!("EUR")),
        "prices default to no setup fee, in the platform's currency"
    );
    let mut hidden = plan("secret", &["eu-west", "us-east"]);
    hidden["hidden"] = json!(true);
    created(
        app.send_json(Method::POST, "/api/v1/admin/products", &admin, &hidden)
            .await,
    )
    .await;
    let unknown = app
        .send_json(
            Method::POST,
            "/api/v1/admin/products",
            &admin,
            &plan("big", &["mars-1"]),
        )
        .await;
    assert_eq!(unknown.status(), 422);
    let unknown = problem(unknown).await;
    assert_eq!(unknown["errors"][0]["field"], "regions");
    assert!(
        unknown["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("mars-1")
    );
    let mut zero = plan("zero", &[]);
    zero["vcpus"] = json!(0);
    let zero = app
        .send_json(Method::POST, "/api/v1/admin/products", &admin, &zero)
        .await;
    assert_eq!(zero.status(), 422);
    assert_eq!(problem(zero).await["errors"][0]["field"], "vcpus");
    let mut mispriced = plan("mispriced", &[]);
    mispriced["price_hourly_minor"] = json!(500);
    mispriced["currency"] = json!("XYZ");
    let mispriced = app
        .send_json(Method::POST, "/api/v1/admin/products", &admin, &mispriced)
        .await;
    assert_eq!(mispriced.status(), 422);
    let fields: Vec<String> = problem(mispriced).await["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_owned())
        .collect();
    assert_eq!(fields, ["price_hourly_minor", "currency"]);
    let mut negative = plan("negative", &[]);
    negative["price_monthly_minor"] = json!(-1);
    let negative = app
        .send_json(Method::POST, "/api/v1/admin/products", &admin, &negative)
        .await;
    assert_eq!(negative.status(), 422);
    assert_eq!(
        problem(negative).await["errors"][0]["field"],
        "price_monthly_minor"
    );

    let public: serde_json::Value = app
        .get("/api/v1/products")
        .await
        .json()
        .await
        .expect("json");
    let slugs: Vec<&str> = public
        .as_array()
        .expect("plans")
        .iter()
        .map(|p| p["slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(slugs, ["small"], "hidden plans are not listed");
    assert_eq!(
        public[0]["price_monthly_minor"], 490,
        "the public sees prices"
    );
    let regions: serde_json::Value = app.get("/api/v1/regions").await.json().await.expect("json");
    assert_eq!(regions.as_array().expect("regions").len(), 1, "{regions}");

    let id = small["id"].as_str().expect("id");
    let changed = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/admin/products/{id}"),
            &admin,
            &json!({"memory_mib": 1024, "regions": [], "sort_order": 5, "price_monthly_minor": 590}),
        )
        .await;
    assert_eq!(changed.status(), 200);
    let changed: serde_json::Value = changed.json().await.expect("json");
    assert_eq!(changed["memory_mib"], 1024);
    assert_eq!(changed["price_monthly_minor"], 590);
    let below_hourly = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/admin/products/{id}"),
            &admin,
            &json!({"price_monthly_minor": 0}),
        )
        .await;
    assert_eq!(below_hourly.status(), 422, "monthly below the hourly price");
    assert_eq!(changed["regions"], json!([]));

    let eu_id = eu["id"].as_str().expect("id");
    let renamed = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/admin/regions/{eu_id}"),
            &admin,
            &json!({"name": "Paris"}),
        )
        .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(
        app.status_of(
            Method::DELETE,
            &format!("/api/v1/admin/products/{id}"),
            &admin
        )
        .await,
        204
    );
    assert_eq!(
        app.status_of(
            Method::DELETE,
            &format!("/api/v1/admin/regions/{eu_id}"),
            &admin
        )
        .await,
        204
    );
    assert_eq!(
        app.status_of(
            Method::DELETE,
            &format!("/api/v1/admin/regions/{eu_id}"),
            &admin
        )
        .await,
        404
    );
    app.stop().await;
}

#[tokio::test]
async fn images_are_imported_checked_and_converted_to_qcow2() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let (_, checksum) = raw_image(&app.state.config.image_import_dir());
    let source = "tiny.img";

    let registered = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/images",
            &admin,
            &image("tiny", source, Some(&checksum)),
        )
        .await,
    )
    .await;
    assert_eq!(registered["status"], "importing");
    let id = registered["id"].as_str().expect("id");
    let imported = wait_for_import(&app, &admin, id).await;
    assert_eq!(imported["status"], "available", "{imported}");
    let file = imported["file_path"].as_str().expect("file");
    let info = std::process::Command::new("qemu-img")
        .args(["info", "--output=json", file])
        .output()
        .expect("qemu-img");
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 1 << 20);

    assert_eq!(imported["active"], false, "a new image starts unlisted");
    let public: serde_json::Value = app.get("/api/v1/images").await.json().await.expect("json");
    assert_eq!(public, json!([]), "unlisted until published");
    let published = app
        .send_json(
            Method::PATCH,
            &format!("/api/v1/admin/images/{id}"),
            &admin,
            &json!({"active": true}),
        )
        .await;
    assert_eq!(published.status(), 200);
    let public: serde_json::Value = app.get("/api/v1/images").await.json().await.expect("json");
    assert_eq!(public[0]["slug"], "tiny");
    assert!(public[0].get("file_path").is_none(), "paths are for admins");

    let wrong = format!("sha256:{}", "0".repeat(64));
    let mismatched = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/images",
            &admin,
            &image("mismatch", source, Some(&wrong)),
        )
        .await,
    )
    .await;
    let mismatched_id = mismatched["id"].as_str().expect("id");
    let failed = wait_for_import(&app, &admin, mismatched_id).await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["status_reason"]
            .as_str()
            .expect("reason")
            .contains("checksum mismatch")
    );
    let retried = app
        .authed(
            Method::POST,
            &format!("/api/v1/admin/images/{mismatched_id}/import"),
            &admin,
        )
        .send()
        .await
        .expect("sent");
    assert_eq!(retried.status(), 202);
    assert_eq!(
        wait_for_import(&app, &admin, mismatched_id).await["status"],
        "failed"
    );

    assert_eq!(
        app.status_of(
            Method::DELETE,
            &format!("/api/v1/admin/images/{id}"),
            &admin
        )
        .await,
        204
    );
    assert!(!Path::new(file).exists(), "the file goes with the image");
    app.stop().await;
}

#[tokio::test]
async fn images_download_over_http_and_backing_files_are_refused() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    // The test mirror is on loopback: allow-listed, as an internal one is.
    let app = TestApp::spawn_with(|config| {
        config.image_download_allowed_hosts =
            vec![address.to_string().try_into().expect("host pattern")];
    })
    .await;
    let admin = admin(&app).await;
    let imports = app.state.config.image_import_dir();
    let (raw, checksum) = raw_image(&imports);
    let bytes = std::fs::read(&raw).expect("read");
    let overlay = imports.join("overlay.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(&raw)
        .arg(&overlay)
        .output()
        .expect("qemu-img");
    assert!(made.status.success());

    let files = axum::Router::new().route(
        "/tiny.img",
        axum::routing::get(move || {
            let bytes = bytes.clone();
            async move { bytes }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, files).await });

    let downloaded = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/images",
            &admin,
            &image(
                "downloaded",
                &format!("http://{address}/tiny.img"),
                Some(&checksum),
            ),
        )
        .await,
    )
    .await;
    let id = downloaded["id"].as_str().expect("id");
    assert_eq!(
        wait_for_import(&app, &admin, id).await["status"],
        "available"
    );

    let missing = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/images",
            &admin,
            &image("missing", &format!("http://{address}/nope.img"), None),
        )
        .await,
    )
    .await;
    let failed = wait_for_import(&app, &admin, missing["id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(
        failed["status_reason"],
        vmcloud_server::modules::products::images::DOWNLOAD_FAILED,
        "the cause (a 404) is for the log"
    );

    let backed = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/images",
            &admin,
            &image("backed", "overlay.qcow2", None),
        )
        .await,
    )
    .await;
    let failed = wait_for_import(&app, &admin, backed["id"].as_str().expect("id")).await;
    assert_eq!(failed["status"], "failed");
    assert!(
        failed["status_reason"]
            .as_str()
            .expect("reason")
            .contains("backing file")
    );

    let invalid = app
        .send_json(
            Method::POST,
            "/api/v1/admin/images",
            &admin,
            &image("relative", "disk.qcow2", Some("md5:abc")),
        )
        .await;
    assert_eq!(invalid.status(), 422);
    let fields: Vec<String> = problem(invalid).await["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field").to_owned())
        .collect();
    assert_eq!(fields, ["source", "checksum"]);
    app.stop().await;
}
