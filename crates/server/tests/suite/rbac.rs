//! The RBAC matrix: every operation of the OpenAPI document, called as an
//! anonymous client and as each role, gets the answer its access level
//! dictates. An operation missing from the table fails the test, so a new
//! endpoint cannot ship without deciding who may call it.

use crate::common;

use std::collections::BTreeMap;

use common::{Session, TestApp};
use reqwest::Method;
use vmcloud_server::db::entities::user::UserRole;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in account.
    Account,
    /// Any signed-in account, proven by the refresh cookie rather than a
    /// bearer token.
    SessionCookie,
    /// Support and admin.
    Staff,
    Admin,
    /// Authenticated by a ticket in the URL only (console WebSockets, which
    /// browsers open without headers): everyone without one gets 401, a
    /// bearer token does not stand in for it.
    Ticket,
}

/// Who may call each operation, keyed `METHOD /path` as in the document.
fn matrix() -> BTreeMap<&'static str, Access> {
    use Access::{Account, Admin, Public, SessionCookie, Staff, Ticket};
    BTreeMap::from([
        ("GET /healthz", Public),
        ("GET /readyz", Public),
        ("POST /api/v1/auth/register", Public),
        ("POST /api/v1/auth/login", Public),
        ("POST /api/v1/auth/refresh", SessionCookie),
        ("POST /api/v1/auth/logout", Account),
        ("POST /api/v1/auth/verify-email", Public),
        ("POST /api/v1/auth/forgot-password", Public),
        ("POST /api/v1/auth/reset-password", Public),
        ("POST /api/v1/auth/setup", Public),
        ("GET /api/v1/users/me", Account),
        ("PATCH /api/v1/users/me", Account),
        ("POST /api/v1/users/me/password", Account),
        ("POST /api/v1/users/me/deletion", Account),
        ("POST /api/v1/users/me/email-verification", Account),
        ("GET /api/v1/users/me/sessions", Account),
        ("DELETE /api/v1/users/me/sessions/{id}", Account),
        ("GET /api/v1/users/me/2fa", Account),
        ("POST /api/v1/users/me/2fa/enrol", Account),
        ("POST /api/v1/users/me/2fa/confirm", Account),
        ("POST /api/v1/users/me/2fa/disable", Account),
        ("POST /api/v1/users/me/2fa/recovery-codes", Account),
        ("GET /api/v1/users/me/notification-preferences", Account),
        ("PUT /api/v1/users/me/notification-preferences", Account),
        ("GET /api/v1/notifications", Account),
        ("GET /api/v1/notifications/unread-count", Account),
        ("POST /api/v1/notifications/{id}/read", Account),
        ("POST /api/v1/notifications/read-all", Account),
        ("POST /api/v1/ssh-keys", Account),
        ("GET /api/v1/ssh-keys", Account),
        ("GET /api/v1/ssh-keys/{id}", Account),
        ("DELETE /api/v1/ssh-keys/{id}", Account),
        ("POST /api/v1/api-tokens", Account),
        ("GET /api/v1/api-tokens", Account),
        ("DELETE /api/v1/api-tokens/{id}", Account),
        ("GET /api/v1/admin/users", Staff),
        ("GET /api/v1/admin/users/{id}", Staff),
        ("PATCH /api/v1/admin/users/{id}/role", Admin),
        ("POST /api/v1/admin/users/{id}/suspend", Admin),
        ("POST /api/v1/admin/users/{id}/unsuspend", Admin),
        ("POST /api/v1/admin/users/{id}/impersonate", Admin),
        ("POST /api/v1/admin/users/{id}/reset-2fa", Admin),
        ("GET /api/v1/admin/outbox", Admin),
        ("GET /api/v1/admin/jobs", Admin),
        ("GET /api/v1/admin/jobs/{id}", Admin),
        ("DELETE /api/v1/admin/jobs/{id}", Admin),
        ("POST /api/v1/admin/jobs/{id}/retry", Admin),
        // Support reads every instance; only admins act on them.
        ("GET /api/v1/admin/instances", Staff),
        ("POST /api/v1/admin/instances/{id}/actions", Admin),
        ("DELETE /api/v1/admin/instances/{id}", Admin),
        ("GET /api/v1/products", Public),
        ("GET /api/v1/regions", Public),
        ("GET /api/v1/images", Public),
        ("GET /api/v1/admin/regions", Admin),
        ("POST /api/v1/admin/regions", Admin),
        ("PATCH /api/v1/admin/regions/{id}", Admin),
        ("DELETE /api/v1/admin/regions/{id}", Admin),
        ("GET /api/v1/admin/images", Admin),
        ("POST /api/v1/admin/images", Admin),
        ("GET /api/v1/admin/images/{id}", Admin),
        ("PATCH /api/v1/admin/images/{id}", Admin),
        ("DELETE /api/v1/admin/images/{id}", Admin),
        ("POST /api/v1/admin/images/{id}/import", Admin),
        ("GET /api/v1/admin/products", Admin),
        ("POST /api/v1/admin/products", Admin),
        ("GET /api/v1/admin/products/{id}", Admin),
        ("PATCH /api/v1/admin/products/{id}", Admin),
        ("DELETE /api/v1/admin/products/{id}", Admin),
        ("GET /api/v1/admin/nodes", Staff),
        ("POST /api/v1/admin/nodes", Admin),
        ("GET /api/v1/admin/nodes/{id}", Staff),
        ("PATCH /api/v1/admin/nodes/{id}", Admin),
        ("DELETE /api/v1/admin/nodes/{id}", Admin),
        ("GET /api/v1/admin/ip-addresses", Staff),
        ("POST /api/v1/admin/ip-addresses", Admin),
        ("DELETE /api/v1/admin/ip-addresses/{id}", Admin),
        ("POST /api/v1/instances", Account),
        ("GET /api/v1/instances", Account),
        ("GET /api/v1/instances/{id}", Account),
        ("PATCH /api/v1/instances/{id}", Account),
        ("DELETE /api/v1/instances/{id}", Account),
        ("POST /api/v1/instances/{id}/actions", Account),
        ("GET /api/v1/instances/{id}/actions", Account),
        ("GET /api/v1/instances/{id}/actions/{action_id}", Account),
        ("GET /api/v1/instances/{id}/metrics", Account),
        ("GET /api/v1/instances/{id}/snapshots", Account),
        ("POST /api/v1/instances/{id}/snapshots", Account),
        (
            "POST /api/v1/instances/{id}/snapshots/{name}/restore",
            Account,
        ),
        ("DELETE /api/v1/instances/{id}/snapshots/{name}", Account),
        // The owner or an admin; support staff get 403 on others' instances
        // (console.rs).
        ("POST /api/v1/instances/{id}/console", Account),
        ("GET /api/v1/instances/{id}/console/serial", Ticket),
        ("GET /api/v1/instances/{id}/console/vnc", Ticket),
        ("GET /api/v1/billing/balance", Account),
        ("POST /api/v1/billing/coupons/redeem", Account),
        ("GET /api/v1/billing/usage", Account),
        ("GET /api/v1/billing/transactions", Account),
        ("GET /api/v1/billing/invoices", Account),
        // Authenticated by Stripe's signature (billing.rs).
        ("POST /api/v1/webhooks/stripe", Public),
        ("GET /api/v1/billing/invoices/{id}", Account),
        ("GET /api/v1/billing/invoices/{id}/pdf", Account),
        ("POST /api/v1/billing/invoices/{id}/pay", Account),
        ("POST /api/v1/billing/top-ups", Account),
        ("GET /api/v1/admin/billing/invoices/{id}/pdf", Staff),
        ("POST /api/v1/admin/billing/invoices/{id}/void", Admin),
        ("POST /api/v1/admin/billing/refunds", Admin),
        ("GET /api/v1/admin/billing/invoices", Staff),
        ("POST /api/v1/admin/billing/users/{id}/invoices", Admin),
        ("POST /api/v1/admin/billing/invoices/{id}/payments", Admin),
        ("GET /api/v1/admin/billing/transactions", Staff),
        ("POST /api/v1/admin/billing/users/{id}/adjustments", Admin),
        ("GET /api/v1/admin/settings", Admin),
        ("GET /api/v1/admin/audit-logs", Admin),
        ("GET /api/v1/admin/dashboard", Admin),
        ("GET /api/v1/admin/billing/revenue", Staff),
        ("GET /api/v1/admin/settings/{key}", Admin),
        ("PUT /api/v1/admin/settings/{key}", Admin),
        // Customers reach only their own tickets (ownership.rs).
        ("POST /api/v1/tickets", Account),
        ("GET /api/v1/tickets", Account),
        ("GET /api/v1/tickets/{id}", Account),
        ("POST /api/v1/tickets/{id}/messages", Account),
        ("POST /api/v1/tickets/{id}/attachments", Account),
        (
            "GET /api/v1/tickets/{id}/attachments/{attachment_id}",
            Account,
        ),
        ("POST /api/v1/tickets/{id}/assign", Staff),
        ("POST /api/v1/tickets/{id}/status", Account),
        ("GET /api/v1/admin/billing/coupons", Admin),
        ("POST /api/v1/admin/billing/coupons", Admin),
        ("GET /api/v1/admin/billing/coupons/{id}", Admin),
        ("PUT /api/v1/admin/billing/coupons/{id}", Admin),
        ("DELETE /api/v1/admin/billing/coupons/{id}", Admin),
    ])
}

fn permitted(access: Access, role: Option<UserRole>) -> bool {
    match (access, role) {
        (Access::Public, _) | (Access::Account | Access::SessionCookie, Some(_)) => true,
        (_, None) | (Access::Ticket, _) => false,
        (Access::Staff, Some(role)) => role != UserRole::Customer,
        (Access::Admin, Some(role)) => role == UserRole::Admin,
    }
}

fn operations(document: &serde_json::Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            found.push((method.to_uppercase(), path.clone()));
        }
    }
    found
}

#[tokio::test]
async fn every_operation_answers_each_role_as_the_matrix_says() {
    let app = TestApp::spawn().await;
    let matrix = matrix();
    let document: serde_json::Value =
        serde_json::from_str(&vmcloud_server::http::openapi::document()).expect("json");
    let operations = operations(&document);
    let missing: Vec<String> = operations
        .iter()
        .map(|(m, p)| format!("{m} {p}"))
        .filter(|key| !matrix.contains_key(key.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "operations without an RBAC decision: {missing:?}"
    );
    let stale: Vec<&&str> = matrix
        .keys()
        .filter(|key| !operations.iter().any(|(m, p)| format!("{m} {p}") == **key))
        .collect();
    assert!(
        stale.is_empty(),
        "matrix entries for operations that no longer exist: {stale:?}"
    );

    let admin_id = app
        .create_user("root@example.org", "correct horse battery", UserRole::Admin)
        .await;
    let support_id = app
        .create_user(
            "help@example.org",
            "correct horse battery",
            UserRole::Support,
        )
        .await;
    let customer_id = app
        .create_user(
            "ada@example.org",
            "correct horse battery",
            UserRole::Customer,
        )
        .await;
    // The object that `{id}` stands for: another customer, so no route
    // refuses because the target is the caller or an admin.
    let target_id = app
        .create_user(
            "target@example.org",
            "correct horse battery",
            UserRole::Customer,
        )
        .await;
    let roles = [
        (None, None::<&str>),
        (Some(UserRole::Customer), Some(customer_id.as_str())),
        (Some(UserRole::Support), Some(support_id.as_str())),
        (Some(UserRole::Admin), Some(admin_id.as_str())),
    ];

    let mut failures = Vec::new();
    for (method, path) in &operations {
        let access = matrix[format!("{method} {path}").as_str()];
        for (role, user) in roles {
            // A fresh session per call: some operations end the session.
            let session: Option<Session> = match user {
                Some(id) => Some(app.session_for(id).await),
                None => None,
            };
            let url = path.replace("{id}", &target_id);
            let method = Method::from_bytes(method.as_bytes()).expect("method");
            let mut request = app.client.request(method.clone(), app.url(&url));
            if let Some(session) = &session {
                request = if access == Access::SessionCookie {
                    request.header(
                        "cookie",
                        format!("vmcloud_refresh={}", session.refresh_cookie),
                    )
                } else {
                    request.bearer_auth(&session.access_token)
                };
            }
            if method != Method::GET && method != Method::DELETE {
                // An empty object: enough to get past authorization, never
                // enough to change anything.
                request = request.json(&serde_json::json!({}));
            }
            let status = request.send().await.expect("sent").status().as_u16();
            let ok = if permitted(access, role) {
                status != 401 && status != 403
            } else if role.is_none() || access == Access::Ticket {
                status == 401
            } else {
                status == 403
            };
            if !ok {
                failures.push(format!(
                    "{method} {path} as {role:?}: {status} (access {access:?})"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "RBAC violations:\n{}",
        failures.join("\n")
    );
    app.stop().await;
}
