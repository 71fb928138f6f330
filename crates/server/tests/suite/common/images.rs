//! Images for the tests: the admin who imports them, files to import, and
//! waiting for an import.

use std::path::{Path, PathBuf};

use reqwest::Method;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use vmcloud_server::db::entities::user::UserRole;

use super::{Session, TestApp, eventually};

pub const PASSWORD: &str = "correct horse battery staple";

pub async fn admin(app: &TestApp) -> Session {
    let id = app
        .create_user("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    app.session_for(&id).await
}

pub async fn created(response: reqwest::Response) -> serde_json::Value {
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.expect("json");
    assert!(status == 201 || status == 202, "{status}: {body}");
    body
}

/// A small raw disk image with recognisable content, in `dir`.
pub fn raw_image(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("tiny.img");
    let mut bytes = vec![0_u8; 1 << 20];
    bytes[..11].copy_from_slice(b"VMCLOUDTEST");
    std::fs::write(&path, &bytes).expect("write");
    let digest = hex::encode(Sha256::digest(&bytes));
    (path, format!("sha256:{digest}"))
}

pub async fn wait_for_import(app: &TestApp, admin: &Session, id: &str) -> serde_json::Value {
    eventually(&format!("the import of {id}"), || async {
        let image = app
            .fetch_json(Method::GET, &format!("/api/v1/admin/images/{id}"), admin)
            .await;
        (image["status"] != "importing").then_some(image)
    })
    .await
}

pub fn image(slug: &str, source: &str, checksum: Option<&str>) -> serde_json::Value {
    json!({
        "slug": slug, "name": format!("Image {slug}"), "os_family": "debian",
        "os_version": "12", "default_user": "debian", "min_disk_gib": 1,
        "source": source, "checksum": checksum,
    })
}
