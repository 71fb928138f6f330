//! Image imports cannot be turned against the host (issue 14): no image
//! format that makes qemu-img read a host file, no path outside the import
//! directory, no download from an internal address (nor a reason that tells
//! ports apart), and nothing a customer can boot before an admin publishes
//! it. Real server, real qemu-img, real HTTP servers on loopback.

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::images::{PASSWORD, admin, created, image, raw_image, wait_for_import};
use common::{Session, TestApp, audit_actions, problem};
use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::modules::products::images::DOWNLOAD_FAILED;

/// What a host file the server can read holds; no image may end up with it.
const SECRET: &[u8] = b"root:$6$host-secret-hash:19000:0:99999:7:::";

fn qemu_img(args: &[&str]) {
    let output = std::process::Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img");
    assert!(
        output.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A 1 MiB host file starting with [`SECRET`].
fn host_secret(path: &Path) {
    let mut bytes = SECRET.to_vec();
    bytes.resize(1 << 20, 0);
    std::fs::write(path, bytes).expect("write");
}

/// A VMDK descriptor whose one extent is the host file `target`.
fn flat_vmdk(target: &Path) -> String {
    format!(
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\nRW 2048 FLAT \"{}\" 0\n\n\
         ddb.virtualHWVersion = \"4\"\n",
        target.display()
    )
}

/// Registers an image and returns it once its import has finished.
async fn import(app: &TestApp, admin: &Session, slug: &str, source: &str) -> serde_json::Value {
    let registered = created(
        app.send_json(
            Method::POST,
            "/api/v1/admin/images",
            admin,
            &image(slug, source, None),
        )
        .await,
    )
    .await;
    wait_for_import(app, admin, registered["id"].as_str().expect("id")).await
}

/// Imports and expects a failure; returns the reason.
async fn import_fails(app: &TestApp, admin: &Session, slug: &str, source: &str) -> String {
    let failed = import(app, admin, slug, source).await;
    assert_eq!(failed["status"], "failed", "{slug} from {source}: {failed}");
    assert!(failed["file_path"].is_null(), "{failed}");
    failed["status_reason"].as_str().expect("reason").to_owned()
}

#[tokio::test]
async fn images_that_make_qemu_img_read_host_files_are_refused() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let imports = app.state.config.image_import_dir();
    let host = tempfile::tempdir().expect("tempdir");
    let secret = host.path().join("shadow");
    host_secret(&secret);

    std::fs::write(imports.join("flat.vmdk"), flat_vmdk(&secret)).expect("write");
    let data_file = host.path().join("data.bin");
    let with_data_file = imports.join("data-file.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", data_file.display()),
        with_data_file.to_str().expect("utf-8"),
        "1M",
    ]);
    // The data file is the host file once the image is made.
    host_secret(&data_file);
    let backed = imports.join("backed.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-F",
        "raw",
        "-b",
        secret.to_str().expect("utf-8"),
        backed.to_str().expect("utf-8"),
    ]);
    // Raw bytes that carry another format's magic are not taken as raw
    // either: the admin learns the format is not accepted.
    let mut sparse_vmdk = b"KDMV\x01\0\0\0".to_vec();
    sparse_vmdk.resize(1 << 16, 0);
    std::fs::write(imports.join("sparse.vmdk"), sparse_vmdk).expect("write");

    for (slug, source, why) in [
        ("flat-vmdk", "flat.vmdk", "VMDK descriptor image"),
        ("data-file", "data-file.qcow2", "external file"),
        ("backed", "backed.qcow2", "backing file"),
        ("sparse-vmdk", "sparse.vmdk", "VMDK image"),
    ] {
        let reason = import_fails(&app, &admin, slug, source).await;
        assert!(reason.contains(why), "{slug}: {reason}");
    }
    let images = app
        .fetch_json(Method::GET, "/api/v1/admin/images", &admin)
        .await;
    assert!(
        images
            .as_array()
            .expect("images")
            .iter()
            .all(|i| i["status"] == "failed"),
        "{images}"
    );
    app.stop().await;
}

#[tokio::test]
async fn path_sources_must_be_regular_files_inside_the_import_directory() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let imports = app.state.config.image_import_dir();
    let host = tempfile::tempdir().expect("tempdir");
    host_secret(&host.path().join("shadow"));
    std::os::unix::fs::symlink(host.path().join("shadow"), imports.join("escape.img"))
        .expect("symlink");
    std::fs::create_dir(imports.join("folder")).expect("mkdir");
    std::fs::write(imports.join("disk.img"), vec![0_u8; 1 << 16]).expect("write");

    let outside = host.path().join("shadow");
    let outside = outside.to_str().expect("utf-8");
    for source in [
        "/etc/passwd",
        "file:///etc/passwd",
        "/proc/self/environ",
        outside,
        &format!("file://{outside}"),
        "../vmcloud.db",
        "folder/../disk.img",
        "escape.img",
        "folder",
        "missing.img",
        "ftp://example.org/disk.img",
    ] {
        let refused = app
            .send_json(
                Method::POST,
                "/api/v1/admin/images",
                &admin,
                &image("outside", source, None),
            )
            .await;
        assert_eq!(refused.status(), 422, "{source}");
        let problem = problem(refused).await;
        assert_eq!(
            problem["errors"][0]["field"], "source",
            "{source}: {problem}"
        );
    }
    let absolute = imports.join("disk.img");
    for (slug, source) in [
        ("relative", "disk.img".to_owned()),
        ("absolute", absolute.to_string_lossy().into_owned()),
        ("file-url", format!("file://{}", absolute.display())),
    ] {
        let imported = import(&app, &admin, slug, &source).await;
        assert_eq!(imported["status"], "available", "{source}: {imported}");
    }
    app.stop().await;
}

/// An HTTP server on loopback serving `files`, counting the requests it gets.
async fn http_server(files: axum::Router) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let files = files.layer(axum::middleware::from_fn(
        move |request: axum::extract::Request, next: axum::middleware::Next| {
            counter.fetch_add(1, Ordering::SeqCst);
            next.run(request)
        },
    ));
    tokio::spawn(async move { axum::serve(listener, files).await });
    (address, hits)
}

#[tokio::test]
async fn downloads_reach_no_internal_address_and_every_failure_reads_the_same() {
    let host = tempfile::tempdir().expect("tempdir");
    let (raw, _) = raw_image(host.path());
    let bytes = std::fs::read(&raw).expect("read");
    let served = bytes.clone();
    let (internal, internal_hits) = http_server(axum::Router::new().route(
        "/tiny.img",
        axum::routing::get(move || {
            let bytes = served.clone();
            async move { bytes }
        }),
    ))
    .await;
    let secret = host.path().join("shadow");
    host_secret(&secret);
    let vmdk = flat_vmdk(&secret);
    let (mirror, _) = http_server(
        axum::Router::new()
            .route(
                "/tiny.img",
                axum::routing::get(move || {
                    let bytes = bytes.clone();
                    async move { bytes }
                }),
            )
            .route(
                "/flat.vmdk",
                axum::routing::get(move || {
                    let vmdk = vmdk.clone();
                    async move { vmdk }
                }),
            )
            .route(
                "/elsewhere.img",
                axum::routing::get(move || async move {
                    axum::response::Redirect::temporary(&format!("http://{internal}/tiny.img"))
                }),
            ),
    )
    .await;
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let not_http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let not_http_address = not_http.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = not_http.accept().await {
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });

    // Only the mirror is allow-listed, as an operator lists an internal one.
    let app = TestApp::spawn_with(|config| {
        config.image_download_allowed_hosts =
            vec![mirror.to_string().try_into().expect("host pattern")];
    })
    .await;
    let admin = admin(&app).await;

    let port = internal.port();
    for (slug, url) in [
        ("open-port", format!("http://{internal}/tiny.img")),
        ("closed-port", format!("http://{closed}/tiny.img")),
        ("not-http", format!("http://{not_http_address}/tiny.img")),
        ("by-name", format!("http://localhost:{port}/tiny.img")),
        ("v6-loopback", format!("http://[::1]:{port}/tiny.img")),
        (
            "v4-mapped",
            format!("http://[::ffff:127.0.0.1]:{port}/tiny.img"),
        ),
        ("hex-v4", format!("http://0x7f000001:{port}/tiny.img")),
        (
            "link-local",
            "http://169.254.169.254/latest/meta-data/".to_owned(),
        ),
        ("redirected", format!("http://{mirror}/elsewhere.img")),
        ("mirror-404", format!("http://{mirror}/missing.img")),
    ] {
        let reason = import_fails(&app, &admin, slug, &url).await;
        assert_eq!(reason, DOWNLOAD_FAILED, "{slug}");
    }
    assert_eq!(
        internal_hits.load(Ordering::SeqCst),
        0,
        "no request reached the internal server, not even through the redirect"
    );

    let mirrored = import(
        &app,
        &admin,
        "mirrored",
        &format!("http://{mirror}/tiny.img"),
    )
    .await;
    assert_eq!(mirrored["status"], "available", "{mirrored}");
    let reason = import_fails(&app, &admin, "vmdk", &format!("http://{mirror}/flat.vmdk")).await;
    assert!(reason.contains("VMDK"), "{reason}");
    app.stop().await;
}

#[tokio::test]
async fn imported_images_are_unlisted_until_an_admin_publishes_them() {
    let app = TestApp::spawn().await;
    let admin = admin(&app).await;
    let imports = app.state.config.image_import_dir();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        imports.join("good.qcow2").to_str().expect("utf-8"),
        "16M",
    ]);
    raw_image(&imports);
    let customer_id = app
        .create_user("customer@example.org", PASSWORD, UserRole::Customer)
        .await;
    let customer = app.session_for(&customer_id).await;
    let order_problems = |slug: &'static str| {
        let (app, customer) = (&app, &customer);
        async move {
            let order = app
                .send_json(
                    Method::POST,
                    "/api/v1/instances",
                    customer,
                    &json!({"plan": "none", "image": slug, "region": "none", "hostname": "web-1"}),
                )
                .await;
            assert_eq!(order.status(), 422);
            let problem = problem(order).await;
            problem["errors"]
                .as_array()
                .expect("errors")
                .iter()
                .map(|e| e["field"].as_str().expect("field").to_owned())
                .collect::<Vec<_>>()
        }
    };

    let mut ids = Vec::new();
    for (slug, source) in [("good-qcow2", "good.qcow2"), ("good-raw", "tiny.img")] {
        let imported = import(&app, &admin, slug, source).await;
        assert_eq!(imported["status"], "available", "{imported}");
        assert_eq!(imported["active"], false, "{slug} starts unlisted");
        assert!(order_problems(slug).await.contains(&"image".to_owned()));
        ids.push(imported["id"].as_str().expect("id").to_owned());
    }
    let public: serde_json::Value = app.get("/api/v1/images").await.json().await.expect("json");
    assert_eq!(public, json!([]), "nothing listed before publication");

    for id in &ids {
        let published = app
            .send_json(
                Method::PATCH,
                &format!("/api/v1/admin/images/{id}"),
                &admin,
                &json!({"active": true}),
            )
            .await;
        assert_eq!(published.status(), 200);
    }
    let public: serde_json::Value = app.get("/api/v1/images").await.json().await.expect("json");
    let slugs: Vec<&str> = public
        .as_array()
        .expect("images")
        .iter()
        .map(|i| i["slug"].as_str().expect("slug"))
        .collect();
    assert_eq!(slugs, ["good-qcow2", "good-raw"]);
    assert!(
        !order_problems("good-raw")
            .await
            .contains(&"image".to_owned())
    );
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .filter(|a| *a == "image.updated")
            .count()
            >= 2,
        "publishing is audited"
    );

    let failed = import(&app, &admin, "failed", "http://127.0.0.1:9/x.img").await;
    let publish_failed = app
        .send_json(
            Method::PATCH,
            &format!(
                "/api/v1/admin/images/{}",
                failed["id"].as_str().expect("id")
            ),
            &admin,
            &json!({"active": true}),
        )
        .await;
    assert_eq!(
        publish_failed.status(),
        409,
        "only an imported image is published"
    );
    app.stop().await;
}
