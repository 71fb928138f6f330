//! Support tickets over HTTP, on simulated time: the workflow from opening
//! to closing with its emails, internal notes the customer never sees,
//! Markdown rendered harmless, attachment limits and access, and resolved
//! tickets closing themselves after the configured silence.

use crate::common;
use crate::live;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use reqwest::Method;
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};
use vmcloud_server::clock::ManualClock;
use vmcloud_server::db::entities::user::UserRole;
use vmcloud_server::modules::support;

use common::{Session, TestApp, audit_actions, problem, rows};
use live::connect_with;

const PASSWORD: &str = "correct horse battery staple";
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0";
const ELF: &[u8] = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0";
const ZIP: &[u8] = b"PK\x03\x04\x14\0\0\0\x08\0";

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap()
}

/// Sends a JSON body and reads the JSON answer, checking the status.
async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    session: &Session,
    body: &Value,
    expected: u16,
) -> Value {
    let response = app.send_json(method.clone(), path, session, body).await;
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    assert_eq!(status, expected, "{method} {path}: {text}");
    serde_json::from_str(&text).expect("json")
}

async fn open_ticket(app: &TestApp, session: &Session, subject: &str) -> Value {
    call(
        app,
        Method::POST,
        "/api/v1/tickets",
        session,
        &json!({"subject": subject, "category": "technical", "priority": "normal", "body": "Help."}),
        201,
    )
    .await
}

/// The kinds of the outbox messages to `to`, oldest first, with subjects.
async fn emails_to(app: &TestApp, admin: &Session, to: &str) -> Vec<(String, String)> {
    let outbox = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/admin/outbox?to={to}&limit=100"),
            admin,
        )
        .await;
    let mut emails: Vec<(String, String)> = outbox["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().expect("kind").to_owned(),
                e["subject"].as_str().expect("subject").to_owned(),
            )
        })
        .collect();
    emails.reverse();
    emails
}

async fn ticket_replies_to(app: &TestApp, admin: &Session, to: &str) -> usize {
    emails_to(app, admin, to)
        .await
        .iter()
        .filter(|(kind, _)| kind == "ticket_reply")
        .count()
}

/// The ids of the tickets `session` lists with `query`.
async fn listed(app: &TestApp, session: &Session, query: &str) -> Vec<String> {
    let page = app
        .fetch_json(Method::GET, &format!("/api/v1/tickets{query}"), session)
        .await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["id"].as_str().expect("id").to_owned())
        .collect()
}

struct Cast {
    admin: Session,
    agent: (String, Session),
    second_agent: (String, Session),
    ada: Session,
    ada_instance: String,
    bob: (String, Session),
}

async fn cast(app: &TestApp) -> Cast {
    let catalogue = rows::catalogue(app.state.db.writer()).await;
    let instance = rows::new_instance(app.state.db.writer(), &catalogue).await;
    let ada = app.session_for(&catalogue.user.id.to_string()).await;
    call(
        app,
        Method::PATCH,
        "/api/v1/users/me",
        &ada,
        &json!({"locale": "fr"}),
        200,
    )
    .await;
    Cast {
        admin: app
            .signed_in("root@example.org", PASSWORD, UserRole::Admin)
            .await
            .1,
        agent: app
            .signed_in("agent@example.org", PASSWORD, UserRole::Support)
            .await,
        second_agent: app
            .signed_in("agent2@example.org", PASSWORD, UserRole::Support)
            .await,
        ada,
        ada_instance: instance.id.to_string(),
        bob: app
            .signed_in("bob@example.org", PASSWORD, UserRole::Customer)
            .await,
    }
}

#[tokio::test]
async fn a_ticket_goes_from_open_to_closed_with_emails_and_hidden_notes() {
    let clock = ManualClock::new(start());
    let app = TestApp::spawn_at(clock.clone()).await;
    let Cast {
        admin,
        agent: (_, agent),
        second_agent: (second_agent_id, second_agent),
        ada,
        ada_instance,
        bob: (bob_id, bob),
    } = cast(&app).await;

    let opened = call(
        &app,
        Method::POST,
        "/api/v1/tickets",
        &ada,
        &json!({
            "subject": "  Disk full  ",
            "category": "technical",
            "priority": "high",
            "instance_id": ada_instance,
            "body": "My disk is **full**.",
        }),
        201,
    )
    .await;
    let id = opened["id"].as_str().expect("id").to_owned();
    let path = format!("/api/v1/tickets/{id}");
    assert_eq!(opened["subject"], "Disk full");
    assert_eq!(opened["status"], "open");
    assert_eq!(opened["instance_id"], ada_instance.as_str());
    assert_eq!(
        opened["messages"][0]["body_html"],
        "<p>My disk is <strong>full</strong>.</p>\n"
    );
    assert!(opened["first_response_secs"].is_null());
    // Nobody is assigned: every Support account hears of it.
    for to in ["agent@example.org", "agent2@example.org"] {
        assert_eq!(ticket_replies_to(&app, &admin, to).await, 1, "{to}");
    }

    // Bad input.
    let bad = problem(
        app.send_json(
            Method::POST,
            "/api/v1/tickets",
            &ada,
            &json!({"subject": " ", "category": "technical", "priority": "low",
                    "instance_id": uuid::Uuid::now_v7(), "body": ""}),
        )
        .await,
    )
    .await;
    assert_eq!(bad["status"], 422);
    let fields: Vec<&str> = bad["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .map(|e| e["field"].as_str().expect("field"))
        .collect();
    assert_eq!(fields, ["subject", "body", "instance_id"]);
    // Another account's instance is not one to open a ticket about.
    let others = problem(
        app.send_json(
            Method::POST,
            "/api/v1/tickets",
            &bob,
            &json!({"subject": "Hi", "category": "abuse", "priority": "low",
                    "instance_id": ada_instance, "body": "Hello"}),
        )
        .await,
    )
    .await;
    assert_eq!(others["status"], 422);
    assert_eq!(others["errors"][0]["field"], "instance_id");
    let wrong = app
        .send_json(
            Method::POST,
            "/api/v1/tickets",
            &ada,
            &json!({"subject": "Hi", "category": "gossip", "priority": "low", "body": "x"}),
        )
        .await;
    assert_eq!(wrong.status(), 422);

    // A customer cannot write internal notes.
    let note = app
        .send_json(
            Method::POST,
            &format!("{path}/messages"),
            &ada,
            &json!({"body": "psst", "internal": true}),
        )
        .await;
    assert_eq!(note.status(), 403);

    // Two hours later, Support answers and leaves a note for colleagues.
    clock.advance(Duration::hours(2));
    let answer = call(
        &app,
        Method::POST,
        &format!("{path}/messages"),
        &agent,
        &json!({"body": "Run `df -h` please."}),
        201,
    )
    .await;
    assert_eq!(answer["from_staff"], true);
    assert_eq!(answer["internal"], false);
    call(
        &app,
        Method::POST,
        &format!("{path}/messages"),
        &agent,
        &json!({"body": "Customer had this last month too.", "internal": true}),
        201,
    )
    .await;
    let seen_by_ada = app.fetch_json(Method::GET, &path, &ada).await;
    assert_eq!(seen_by_ada["status"], "awaiting_customer");
    assert_eq!(seen_by_ada["first_response_secs"], 7200);
    assert_eq!(seen_by_ada["first_response_at"], "2026-03-02T11:00:00Z");
    let bodies: Vec<&str> = seen_by_ada["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["body"].as_str().expect("body"))
        .collect();
    assert_eq!(bodies, ["My disk is **full**.", "Run `df -h` please."]);
    let seen_by_staff = app.fetch_json(Method::GET, &path, &second_agent).await;
    assert_eq!(seen_by_staff["messages"].as_array().expect("all").len(), 3);
    assert_eq!(seen_by_staff["messages"][2]["internal"], true);
    // Ada is emailed the answer in French, never the note.
    let to_ada = emails_to(&app, &admin, "owner@example.com").await;
    assert_eq!(
        to_ada,
        [(
            "ticket_reply".to_owned(),
            "Nouvelle réponse : Disk full".to_owned()
        )]
    );

    // Assignment: staff only, to staff only.
    let refused = app
        .send_json(
            Method::POST,
            &format!("{path}/assign"),
            &ada,
            &json!({"assignee_id": second_agent_id}),
        )
        .await;
    assert_eq!(refused.status(), 403);
    let not_staff = problem(
        app.send_json(
            Method::POST,
            &format!("{path}/assign"),
            &agent,
            &json!({"assignee_id": bob_id}),
        )
        .await,
    )
    .await;
    assert_eq!(not_staff["status"], 422);
    assert_eq!(not_staff["errors"][0]["field"], "assignee_id");
    let assigned = call(
        &app,
        Method::POST,
        &format!("{path}/assign"),
        &agent,
        &json!({"assignee_id": second_agent_id}),
        200,
    )
    .await;
    assert_eq!(assigned["assignee_id"], second_agent_id.as_str());

    // Ada's reply goes to the assignee only.
    call(
        &app,
        Method::POST,
        &format!("{path}/messages"),
        &ada,
        &json!({"body": "It says 100%."}),
        201,
    )
    .await;
    assert_eq!(
        app.fetch_json(Method::GET, &path, &ada).await["status"],
        "awaiting_support"
    );
    assert_eq!(
        ticket_replies_to(&app, &admin, "agent2@example.org").await,
        2
    );
    assert_eq!(
        ticket_replies_to(&app, &admin, "agent@example.org").await,
        1
    );

    // Customers only resolve and close; the workflow refuses jumps.
    let jump = app
        .send_json(
            Method::POST,
            &format!("{path}/status"),
            &ada,
            &json!({"status": "awaiting_customer"}),
        )
        .await;
    assert_eq!(jump.status(), 403);
    let backwards = problem(
        app.send_json(
            Method::POST,
            &format!("{path}/status"),
            &agent,
            &json!({"status": "open"}),
        )
        .await,
    )
    .await;
    assert_eq!(backwards["status"], 409);
    assert_eq!(backwards["state"], "awaiting_support");

    clock.advance(Duration::hours(1));
    let resolved = call(
        &app,
        Method::POST,
        &format!("{path}/status"),
        &second_agent,
        &json!({"status": "resolved"}),
        200,
    )
    .await;
    assert_eq!(resolved["resolution_secs"], 3 * 3600);
    // A customer reply reopens it.
    call(
        &app,
        Method::POST,
        &format!("{path}/messages"),
        &ada,
        &json!({"body": "It is full again!"}),
        201,
    )
    .await;
    let reopened = app.fetch_json(Method::GET, &path, &ada).await;
    assert_eq!(reopened["status"], "awaiting_support");
    assert!(reopened["resolved_at"].is_null());
    call(
        &app,
        Method::POST,
        &format!("{path}/status"),
        &second_agent,
        &json!({"status": "resolved"}),
        200,
    )
    .await;
    let closed = call(
        &app,
        Method::POST,
        &format!("{path}/status"),
        &ada,
        &json!({"status": "closed"}),
        200,
    )
    .await;
    assert_eq!(closed["status"], "closed");
    assert_eq!(closed["closed_at"], "2026-03-02T12:00:00Z");

    // A closed ticket takes nothing more: open a new one.
    for (session, body) in [
        (&ada, json!({"body": "One more thing"})),
        (&agent, json!({"body": "note", "internal": true})),
    ] {
        let late = problem(
            app.send_json(Method::POST, &format!("{path}/messages"), session, &body)
                .await,
        )
        .await;
        assert_eq!(late["status"], 409);
        assert!(
            late["detail"]
                .as_str()
                .expect("detail")
                .contains("open a new ticket"),
            "{late}"
        );
    }
    let reopen = app
        .send_json(
            Method::POST,
            &format!("{path}/status"),
            &agent,
            &json!({"status": "awaiting_support"}),
        )
        .await;
    assert_eq!(reopen.status(), 409);

    // Lists: customers see their own, staff all, filtered.
    let other = open_ticket(&app, &bob, "Billing question").await;
    let other_id = other["id"].as_str().expect("id").to_owned();
    assert_eq!(listed(&app, &ada, "").await, [id.as_str()]);
    assert_eq!(listed(&app, &bob, "").await, [other_id.as_str()]);
    assert_eq!(
        listed(&app, &agent, "").await,
        [other_id.as_str(), id.as_str()]
    );
    assert_eq!(listed(&app, &agent, "?status=closed").await, [id.as_str()]);
    assert_eq!(listed(&app, &agent, "?priority=high").await, [id.as_str()]);
    assert!(listed(&app, &agent, "?category=billing").await.is_empty());
    let assigned = format!("?assignee={second_agent_id}");
    assert_eq!(listed(&app, &admin, &assigned).await, [id.as_str()]);
    assert_eq!(app.status_of(Method::GET, &path, &bob).await, 404);

    let actions = audit_actions(&app).await;
    for action in [
        "ticket.opened",
        "ticket.message_posted",
        "ticket.assigned",
        "ticket.status_changed",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn scripts_in_messages_are_rendered_harmless() {
    let app = TestApp::spawn().await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let (_, agent) = app
        .signed_in("agent@example.org", PASSWORD, UserRole::Support)
        .await;
    let ticket = open_ticket(&app, &ada, "XSS").await;
    let path = format!("/api/v1/tickets/{}", ticket["id"].as_str().expect("id"));
    let attack = "Hello <script>alert('xss')</script>\n\n\
                  [click me](javascript:alert(1))\n\n\
                  <img src=\"x\" onerror=\"alert(2)\">\n\n\
                  <a href=\"javascript:alert(3)\" onclick=\"alert(4)\">here</a>\n\n\
                  **still bold**";
    call(
        &app,
        Method::POST,
        &format!("{path}/messages"),
        &ada,
        &json!({"body": attack}),
        201,
    )
    .await;
    for reader in [&ada, &agent] {
        let ticket = app.fetch_json(Method::GET, &path, reader).await;
        let message = &ticket["messages"][1];
        assert_eq!(message["body"], attack, "stored as written");
        let html = message["body_html"].as_str().expect("html");
        for needle in [
            "<script",
            "alert('xss')",
            "javascript:",
            "onerror",
            "onclick",
        ] {
            assert!(!html.contains(needle), "{needle} survived in {html}");
        }
        assert!(html.contains("<strong>still bold</strong>"), "{html}");
        assert!(html.contains("<img src=\"x\">"), "{html}");
    }
    app.stop().await;
}

async fn attach(
    app: &TestApp,
    session: &Session,
    ticket: &str,
    name: &str,
    declared: &str,
    content: &[u8],
) -> reqwest::Response {
    let part = Part::bytes(content.to_vec())
        .file_name(name.to_owned())
        .mime_str(declared)
        .expect("mime");
    app.authed(
        Method::POST,
        &format!("/api/v1/tickets/{ticket}/attachments"),
        session,
    )
    .multipart(Form::new().part("file", part))
    .send()
    .await
    .expect("sent")
}

#[tokio::test]
async fn attachments_are_limited_checked_by_content_and_private() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (_, agent) = app
        .signed_in("agent@example.org", PASSWORD, UserRole::Support)
        .await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let (_, bob) = app
        .signed_in("bob@example.org", PASSWORD, UserRole::Customer)
        .await;

    let defaults = app
        .fetch_json(Method::GET, "/api/v1/admin/settings/support", &admin)
        .await;
    assert_eq!(defaults["max_attachment_bytes"], 10 * 1024 * 1024);
    assert_eq!(defaults["auto_close_days"], 7);
    let invalid = problem(
        app.send_json(
            Method::PUT,
            "/api/v1/admin/settings/support",
            &admin,
            &json!({"max_attachment_bytes": 0, "allowed_attachment_types": ["text/html"],
                    "auto_close_days": 7}),
        )
        .await,
    )
    .await;
    assert_eq!(invalid["status"], 422);
    assert_eq!(invalid["errors"].as_array().expect("errors").len(), 2);
    // Beyond the server's 1 MiB body limit, within the default 10 MiB.
    let early = open_ticket(&app, &ada, "Big log").await;
    let log = vec![b'x'; 2 * 1024 * 1024];
    let early_id = early["id"].as_str().expect("id");
    let big_log = attach(&app, &ada, early_id, "big.log", "text/plain", &log).await;
    assert_eq!(big_log.status(), 201);
    call(
        &app,
        Method::PUT,
        "/api/v1/admin/settings/support",
        &admin,
        &json!({"max_attachment_bytes": 1024,
                "allowed_attachment_types": ["image/png", "text/plain"],
                "auto_close_days": 7}),
        200,
    )
    .await;

    let ticket = open_ticket(&app, &ada, "Screenshot").await;
    let id = ticket["id"].as_str().expect("id");
    let stored = attach(&app, &ada, id, "../shot.png", "image/png", PNG).await;
    assert_eq!(stored.status(), 201);
    let stored: Value = stored.json().await.expect("json");
    assert_eq!(stored["file_name"], "shot.png");
    assert_eq!(stored["content_type"], "image/png");
    assert_eq!(stored["size_bytes"], PNG.len());
    let log = attach(
        &app,
        &agent,
        id,
        "log.txt",
        "text/plain",
        b"line 1\nline 2\n",
    )
    .await;
    assert_eq!(log.status(), 201);

    // Over the limit: 413. Not allowed, or not what it claims to be: 415.
    let big = vec![b'a'; 1025];
    let too_big = problem(attach(&app, &ada, id, "big.txt", "text/plain", &big).await).await;
    assert_eq!(too_big["status"], 413);
    assert!(too_big["detail"].as_str().expect("detail").contains("1024"));
    for (name, declared, content) in [
        ("tool.exe", "application/octet-stream", ELF),
        ("logs.zip", "application/zip", ZIP),
        ("shot.png", "image/png", ELF),
        ("doc.pdf", "application/pdf", PNG),
    ] {
        let refused = problem(attach(&app, &ada, id, name, declared, content).await).await;
        assert_eq!(refused["status"], 415, "{name} as {declared}");
    }
    let unnamed = app
        .authed(
            Method::POST,
            &format!("/api/v1/tickets/{id}/attachments"),
            &ada,
        )
        .multipart(Form::new().part("other", Part::bytes(PNG.to_vec())))
        .send()
        .await
        .expect("sent");
    assert_eq!(unnamed.status(), 422);

    // Downloads: the owner and staff, nobody else.
    let listed = app
        .fetch_json(Method::GET, &format!("/api/v1/tickets/{id}"), &ada)
        .await;
    assert_eq!(listed["attachments"].as_array().expect("list").len(), 2);
    let download = format!(
        "/api/v1/tickets/{id}/attachments/{}",
        stored["id"].as_str().expect("id")
    );
    for reader in [&ada, &agent] {
        let response = app
            .authed(Method::GET, &download, reader)
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/png");
        assert!(
            response.headers()["content-disposition"]
                .to_str()
                .expect("ascii")
                .starts_with("attachment;")
        );
        assert_eq!(response.bytes().await.expect("bytes").as_ref(), PNG);
    }
    assert_eq!(app.status_of(Method::GET, &download, &bob).await, 404);
    let elsewhere = open_ticket(&app, &bob, "Mine").await;
    let crossed = format!(
        "/api/v1/tickets/{}/attachments/{}",
        elsewhere["id"].as_str().expect("id"),
        stored["id"].as_str().expect("id")
    );
    assert_eq!(app.status_of(Method::GET, &crossed, &bob).await, 404);
    assert_eq!(
        attach(&app, &bob, id, "x.png", "image/png", PNG)
            .await
            .status(),
        404
    );
    // A closed ticket takes no more files.
    let status = format!("/api/v1/tickets/{id}/status");
    call(
        &app,
        Method::POST,
        &status,
        &agent,
        &json!({"status": "resolved"}),
        200,
    )
    .await;
    call(
        &app,
        Method::POST,
        &status,
        &ada,
        &json!({"status": "closed"}),
        200,
    )
    .await;
    let late = problem(attach(&app, &ada, id, "late.png", "image/png", PNG).await).await;
    assert_eq!(late["status"], 409);
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|a| a == "settings.changed")
    );
    app.stop().await;
}

#[tokio::test]
async fn resolved_tickets_left_silent_close_themselves() {
    let clock = ManualClock::new(start());
    let app = TestApp::spawn_at(clock.clone()).await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let (_, agent) = app
        .signed_in("agent@example.org", PASSWORD, UserRole::Support)
        .await;
    let silent = open_ticket(&app, &ada, "Silent").await;
    let answered = open_ticket(&app, &ada, "Answered").await;
    for ticket in [&silent, &answered] {
        let path = format!(
            "/api/v1/tickets/{}/status",
            ticket["id"].as_str().expect("id")
        );
        call(
            &app,
            Method::POST,
            &path,
            &agent,
            &json!({"status": "resolved"}),
            200,
        )
        .await;
    }
    let services = app.state.support();
    clock.advance(Duration::days(3));
    // The customer writes back on one: it reopens and stays open.
    call(
        &app,
        Method::POST,
        &format!(
            "/api/v1/tickets/{}/messages",
            answered["id"].as_str().expect("id")
        ),
        &ada,
        &json!({"body": "Not fixed."}),
        201,
    )
    .await;
    clock.advance(Duration::days(4) - Duration::minutes(1));
    assert_eq!(
        support::close_silent(&services).await.expect("pass"),
        [],
        "not yet seven days"
    );
    clock.advance(Duration::minutes(1));
    let closed = support::close_silent(&services).await.expect("pass");
    assert_eq!(closed.len(), 1);
    assert_eq!(closed[0].to_string(), silent["id"].as_str().expect("id"));
    assert!(
        support::close_silent(&services)
            .await
            .expect("again")
            .is_empty()
    );

    let silent = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/tickets/{}", silent["id"].as_str().expect("id")),
            &ada,
        )
        .await;
    assert_eq!(silent["status"], "closed");
    assert_eq!(silent["closed_at"], "2026-03-09T09:00:00Z");
    let answered = app
        .fetch_json(
            Method::GET,
            &format!("/api/v1/tickets/{}", answered["id"].as_str().expect("id")),
            &ada,
        )
        .await;
    assert_eq!(answered["status"], "awaiting_support");
    assert!(
        audit_actions(&app)
            .await
            .iter()
            .any(|a| a == "ticket.auto_closed")
    );
    app.stop().await;
}

#[tokio::test]
async fn replies_are_pushed_live_and_notes_only_to_staff() {
    let app = TestApp::spawn().await;
    let (ada_id, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let (_, agent) = app
        .signed_in("agent@example.org", PASSWORD, UserRole::Support)
        .await;
    let (_, bob) = app
        .signed_in("bob@example.org", PASSWORD, UserRole::Customer)
        .await;
    let mut ada_live = connect_with(&app.url("/"), &ada.access_token).await;
    let mut agent_live = connect_with(&app.url("/"), &agent.access_token).await;
    let mut bob_live = connect_with(&app.url("/"), &bob.access_token).await;
    let ticket = open_ticket(&app, &ada, "Live").await;
    let id = ticket["id"].as_str().expect("id");
    let opened = agent_live.next("ticket.message").await;
    assert_eq!(opened["id"], id);
    assert_eq!(opened["message"]["author_id"], ada_id.as_str());

    let messages = format!("/api/v1/tickets/{id}/messages");
    for body in [
        json!({"body": "Only for us", "internal": true}),
        json!({"body": "Hello <script>x()</script>Ada"}),
    ] {
        call(&app, Method::POST, &messages, &agent, &body, 201).await;
    }
    // Ada hears her own first message, then the reply: never the note.
    assert_eq!(
        ada_live.next("ticket.message").await["message"]["body"],
        "Help."
    );
    let reply = ada_live.next("ticket.message").await;
    assert_eq!(reply["ticket_id"], id);
    assert_eq!(reply["message"]["internal"], false);
    assert_eq!(reply["message"]["body_html"], "<p>Hello Ada</p>\n");
    assert_eq!(
        agent_live.next("ticket.message").await["message"]["body"],
        "Only for us"
    );
    assert_eq!(
        agent_live.next("ticket.message").await["message"]["internal"],
        false
    );
    // Bob hears nothing of it: a ticket of his own is the next he hears of.
    let mine = open_ticket(&app, &bob, "Mine").await;
    assert_eq!(bob_live.next("ticket.message").await["id"], mine["id"]);
    app.stop().await;
}

/// The caller's notifications of `kind`, newest first.
async fn notices(app: &TestApp, session: &Session, kind: &str) -> Vec<Value> {
    let page = app
        .fetch_json(Method::GET, "/api/v1/notifications?limit=100", session)
        .await;
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|n| n["kind"] == kind)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_reply_is_a_notification_and_an_email_unless_the_email_is_turned_off() {
    let app = TestApp::spawn().await;
    let (_, admin) = app
        .signed_in("root@example.org", PASSWORD, UserRole::Admin)
        .await;
    let (_, agent) = app
        .signed_in("agent@example.org", PASSWORD, UserRole::Support)
        .await;
    let (_, ada) = app
        .signed_in("ada@example.org", PASSWORD, UserRole::Customer)
        .await;
    let ticket = open_ticket(&app, &ada, "Disk full").await;
    let id = ticket["id"].as_str().expect("id");
    let messages = format!("/api/v1/tickets/{id}/messages");
    // The opening message reaches Support in the app too.
    assert_eq!(notices(&app, &agent, "ticket.reply").await.len(), 1);

    let reply = json!({"body": "Run `df -h` please."});
    call(&app, Method::POST, &messages, &agent, &reply, 201).await;
    let told = notices(&app, &ada, "ticket.reply").await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0]["title"], "New reply: Disk full");
    assert_eq!(told[0]["link"], format!("/support/tickets/{id}"));
    let outbox = app
        .fetch_json(
            Method::GET,
            "/api/v1/admin/outbox?to=ada@example.org",
            &admin,
        )
        .await;
    let emails = outbox["items"].as_array().expect("items");
    assert_eq!(emails.len(), 1, "{outbox}");
    assert_eq!(emails[0]["kind"], "ticket_reply");
    assert!(
        emails[0]["body_text"]
            .as_str()
            .is_some_and(|b| b.contains("Run `df -h` please.") && b.contains(id)),
        "{outbox}"
    );

    // Turned off, the email stops; the notification does not.
    let off = app
        .send_json(
            Method::PUT,
            "/api/v1/users/me/notification-preferences",
            &ada,
            &json!({"email": {"ticket_reply": false}}),
        )
        .await;
    assert_eq!(off.status(), 200);
    call(&app, Method::POST, &messages, &agent, &reply, 201).await;
    assert_eq!(notices(&app, &ada, "ticket.reply").await.len(), 2);
    assert_eq!(ticket_replies_to(&app, &admin, "ada@example.org").await, 1);
    // An internal note tells nobody.
    let note = json!({"body": "Seen before.", "internal": true});
    call(&app, Method::POST, &messages, &agent, &note, 201).await;
    assert_eq!(notices(&app, &ada, "ticket.reply").await.len(), 2);
    app.stop().await;
}
