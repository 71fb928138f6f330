//! The entities match the migrations on the backend under test: every column
//! of every table survives a write and a read, and the constraints the
//! services rely on are enforced by the database itself.

use crate::common;

use std::fmt::Debug;

use chrono::{DateTime, Duration, TimeZone as _, Utc};
use common::rows::{catalogue, new_instance, new_user};
use sea_orm::ActiveValue::Set;
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait as _, DatabaseConnection, DbErr,
    EntityTrait, IntoActiveModel, Iterable as _, ModelTrait, QueryFilter as _, SqlErr,
};
use serde_json::json;
use vmcloud_server::db::entities::{
    api_token, audit_log, coupon, coupon_redemption, dunning_case, image, instance,
    instance_action, instance_metric, invoice, invoice_counter, invoice_line, ip_address, node,
    notification, notification_opt_out, product, product_region, refresh_token, region, setting,
    ssh_key, subscription, support_ticket, ticket_message, transaction, usage_segment, user,
};
use vmcloud_server::ids::{
    ApiTokenId, AuditLogId, CouponId, CouponRedemptionId, DunningCaseId, ImageId, InstanceActionId,
    InstanceId, InstanceMetricId, InvoiceId, InvoiceLineId, IpAddressId, JobId, NodeId,
    NotificationId, ProductId, RefreshTokenId, RegionId, SshKeyId, SubscriptionId, TicketId,
    TicketMessageId, TransactionId, UsageSegmentId, UserId,
};

/// A fixed instant with microseconds, the finest precision both backends keep.
fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 10, 20, 30)
        .single()
        .expect("valid date")
        + Duration::microseconds(123_456)
}

async fn db() -> (common::TestDatabase, vmcloud_server::db::Database) {
    let test_db = common::TestDatabase::fresh().await;
    let db = test_db.connect().await;
    (test_db, db)
}

/// Inserts `expected` with every column set, checks the row the database
/// returns is identical, and that reading the table back finds it.
async fn round_trip<M, A>(conn: &DatabaseConnection, expected: M) -> M
where
    M: ModelTrait + IntoActiveModel<A> + Clone + PartialEq + Debug,
    M::Entity: EntityTrait<Model = M>,
    A: ActiveModelTrait<Entity = M::Entity> + ActiveModelBehavior + Send,
{
    let inserted = expected
        .clone()
        .into_active_model()
        .reset_all()
        .insert(conn)
        .await
        .expect("insert");
    assert_eq!(inserted, expected, "the returned row differs");
    let rows = M::Entity::find().all(conn).await.expect("select");
    assert!(
        rows.contains(&expected),
        "row not read back as written: {expected:?} not in {rows:?}"
    );
    inserted
}

fn sql_err(result: Result<impl Debug, DbErr>) -> SqlErr {
    let err = result.expect_err("the database accepted a row it must reject");
    err.sql_err()
        .unwrap_or_else(|| panic!("not a constraint violation: {err}"))
}

fn assert_unique_violation(result: Result<impl Debug, DbErr>) {
    let err = sql_err(result);
    assert!(
        matches!(err, SqlErr::UniqueConstraintViolation(_)),
        "expected a unique violation, got {err:?}"
    );
}

fn assert_foreign_key_violation(result: Result<impl Debug, DbErr>) {
    let err = sql_err(result);
    assert!(
        matches!(err, SqlErr::ForeignKeyConstraintViolation(_)),
        "expected a foreign key violation, got {err:?}"
    );
}

async fn new_ticket(conn: &DatabaseConnection, owner: UserId) -> support_ticket::Model {
    support_ticket::ActiveModel {
        user_id: Set(owner),
        subject: Set("It does not boot".to_owned()),
        category: Set(support_ticket::TicketCategory::Technical),
        priority: Set(support_ticket::TicketPriority::Normal),
        status: Set(support_ticket::TicketStatus::Open),
        last_message_at: Set(at(1)),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert ticket")
}

#[tokio::test]
async fn every_entity_round_trips_with_every_column_set() {
    let (_guard, db) = db().await;
    let conn = db.writer();

    let admin = round_trip(
        conn,
        user::Model {
            id: UserId::new(),
            email: "admin@example.com".to_owned(),
            name: "Ada Admin".to_owned(),
            password_hash: "$argon2id$hash".to_owned(),
            role: user::UserRole::Admin,
            status: user::UserStatus::Suspended,
            email_verified_at: Some(at(1)),
            totp_secret: Some("JBSWY3DPEHPK3PXP".to_owned()),
            totp_enabled_at: Some(at(2)),
            totp_last_step: Some(59_000_000),
            failed_login_count: 3,
            locked_until: Some(at(3)),
            last_login_at: Some(at(4)),
            locale: "fr".to_owned(),
            country: Some("FR".to_owned()),
            company: Some("Example SAS".to_owned()),
            vat_id: Some("FR12345678901".to_owned()),
            deleted_at: Some(at(5)),
            created_at: at(6),
            updated_at: at(7),
        },
    )
    .await;
    let customer = new_user(conn, "customer@example.com").await;

    round_trip(
        conn,
        refresh_token::Model {
            id: RefreshTokenId::new(),
            user_id: customer.id,
            family_id: uuid::Uuid::now_v7(),
            token_hash: "a".repeat(64),
            user_agent: Some("Mozilla/5.0".to_owned()),
            ip: Some("2001:db8::1".to_owned()),
            expires_at: at(8),
            used_at: Some(at(2)),
            revoked_at: Some(at(3)),
            impersonator_id: Some(admin.id),
            created_at: at(1),
            updated_at: at(1),
        },
    )
    .await;
    round_trip(
        conn,
        api_token::Model {
            id: ApiTokenId::new(),
            user_id: customer.id,
            name: "ci".to_owned(),
            token_hash: "b".repeat(64),
            token_prefix: "vmc_abcd".to_owned(),
            scope: api_token::TokenScope::ReadWrite,
            expires_at: Some(at(9)),
            last_used_at: Some(at(2)),
            revoked_at: Some(at(3)),
            created_at: at(1),
            updated_at: at(1),
        },
    )
    .await;
    round_trip(
        conn,
        ssh_key::Model {
            id: SshKeyId::new(),
            user_id: customer.id,
            name: "laptop".to_owned(),
            public_key: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE laptop".to_owned(),
            key_type: "ssh-ed25519".to_owned(),
            fingerprint: "SHA256:abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG".to_owned(),
            created_at: at(1),
            updated_at: at(1),
        },
    )
    .await;

    let region = round_trip(
        conn,
        region::Model {
            id: RegionId::new(),
            slug: "fra1".to_owned(),
            name: "Frankfurt 1".to_owned(),
            active: false,
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    let product = round_trip(
        conn,
        product::Model {
            id: ProductId::new(),
            slug: "m-2".to_owned(),
            name: "Medium".to_owned(),
            description: Some("Two cores".to_owned()),
            vcpus: 2,
            memory_mib: 4096,
            disk_gib: 80,
            transfer_gib: 4000,
            // Beyond 32 bits, so a narrowed column would fail.
            price_monthly_minor: 5_000_000_000,
            price_hourly_minor: 7,
            setup_fee_minor: 100,
            currency: "EUR".to_owned(),
            active: true,
            hidden: true,
            sort_order: -1,
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        product_region::Model {
            product_id: product.id,
            region_id: region.id,
            created_at: at(1),
        },
    )
    .await;
    let image = round_trip(
        conn,
        image::Model {
            id: ImageId::new(),
            slug: "ubuntu-24.04".to_owned(),
            name: "Ubuntu 24.04".to_owned(),
            os_family: "ubuntu".to_owned(),
            os_version: "24.04".to_owned(),
            default_user: "ubuntu".to_owned(),
            min_disk_gib: 5,
            source_url: Some("https://cloud-images.ubuntu.com/noble.img".to_owned()),
            file_path: Some("/var/lib/vmcloud/images/ubuntu.qcow2".to_owned()),
            checksum: Some(format!("sha256:{}", "c".repeat(64))),
            size_bytes: Some(600_000_000_000),
            status: image::ImageStatus::Failed,
            status_reason: Some("checksum mismatch".to_owned()),
            active: false,
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    let node = round_trip(
        conn,
        node::Model {
            id: NodeId::new(),
            name: "hv-1".to_owned(),
            region_id: region.id,
            driver: node::NodeDriver::Libvirt,
            uri: "qemu+ssh://root@hv-1/system".to_owned(),
            status: node::NodeStatus::Draining,
            bridge: Some("br0".to_owned()),
            accelerator: Some(node::Accelerator::Tcg),
            vcpus_total: 64,
            memory_mib_total: 1_048_576,
            disk_gib_total: 10_000,
            cpu_overcommit_pct: 400,
            memory_overcommit_pct: 100,
            last_seen_at: Some(at(3)),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    let instance = round_trip(
        conn,
        instance::Model {
            id: InstanceId::new(),
            user_id: customer.id,
            product_id: product.id,
            region_id: region.id,
            image_id: image.id,
            node_id: Some(node.id),
            name: "db".to_owned(),
            hostname: "db.example.com".to_owned(),
            status: instance::InstanceStatus::Rebooting,
            status_reason: Some("requested by owner".to_owned()),
            vcpus: 2,
            memory_mib: 4096,
            disk_gib: 80,
            ssh_port: Some(2222),
            ipv4: Some("192.0.2.10".to_owned()),
            user_data: Some("#cloud-config\npackages: [nginx]\n".to_owned()),
            idempotency_key: Some("key-1".to_owned()),
            ssh_authorized_keys: Some(r#"["ssh-ed25519 AAAAC3Nza test"]"#.to_owned()),
            queue_holder: Some(JobId::new()),
            queue_lease_until: Some(at(4)),
            deleted_at: Some(at(9)),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        instance_action::Model {
            id: InstanceActionId::new(),
            instance_id: instance.id,
            kind: instance_action::ActionKind::Resize,
            status: instance_action::ActionStatus::Running,
            params: serde_json::json!({ "plan_id": product.id }),
            step: 2,
            total_steps: 5,
            step_label: Some("Stopping the VM".to_owned()),
            error: Some("timeout".to_owned()),
            requested_by: Some(customer.id),
            started_at: Some(at(3)),
            finished_at: Some(at(4)),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        ip_address::Model {
            id: IpAddressId::new(),
            region_id: region.id,
            node_id: Some(node.id),
            address: "192.0.2.10".to_owned(),
            version: 4,
            prefix_len: 24,
            gateway: Some("192.0.2.1".to_owned()),
            nameservers: Some(r#"["192.0.2.53"]"#.to_owned()),
            instance_id: Some(instance.id),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    let subscription = round_trip(
        conn,
        subscription::Model {
            id: SubscriptionId::new(),
            user_id: customer.id,
            instance_id: Some(instance.id),
            product_id: product.id,
            status: subscription::SubscriptionStatus::PastDue,
            current_period_start: at(1),
            current_period_end: at(28),
            cancelled_at: Some(at(20)),
            accrued_until: Some(at(19)),
            accrued_month_minor: Some(1_234),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        usage_segment::Model {
            id: UsageSegmentId::new(),
            subscription_id: subscription.id,
            product_id: product.id,
            running: false,
            hourly_minor: 7,
            monthly_minor: 4900,
            currency: "EUR".to_owned(),
            started_at: at(1),
            ended_at: Some(at(20)),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        dunning_case::Model {
            id: DunningCaseId::new(),
            user_id: customer.id,
            open_user_id: Some(customer.id),
            overdue_since: at(1),
            past_due_at: Some(at(2)),
            suspended_at: Some(at(4)),
            warned_at: Some(at(11)),
            terminated_at: Some(at(15)),
            resolved_at: Some(at(16)),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    let coupon = round_trip(
        conn,
        coupon::Model {
            id: CouponId::new(),
            code: "SPRING26".to_owned(),
            percent_basis_points: Some(1500),
            amount_off_minor: Some(250),
            currency: Some("EUR".to_owned()),
            expires_at: Some(at(28)),
            max_redemptions: Some(100),
            redemptions: 3,
            plan_ids: json!([product.id]),
            invoice_limit: Some(2),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        coupon_redemption::Model {
            id: CouponRedemptionId::new(),
            coupon_id: coupon.id,
            user_id: customer.id,
            invoices_applied: 1,
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    let invoice = round_trip(
        conn,
        invoice::Model {
            id: InvoiceId::new(),
            user_id: customer.id,
            number: Some("2026-000001".to_owned()),
            status: invoice::InvoiceStatus::Paid,
            currency: "EUR".to_owned(),
            subtotal_minor: 1000,
            tax_minor: 200,
            total_minor: 1200,
            tax_rate_basis_points: 2000,
            reverse_charge: true,
            period_start: at(1),
            period_end: at(28),
            issued_at: Some(at(2)),
            due_at: Some(at(16)),
            paid_at: Some(at(3)),
            voided_at: Some(at(4)),
            billing_snapshot: json!({
                "seller": {"name": "VMCloud SAS", "vat_id": "FR00000000000"},
                "customer": {"name": "Example SAS", "country": "DE", "lines": [1, 2.5, null]},
            }),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        invoice_counter::Model {
            year: 2026,
            last_number: 41,
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        invoice_line::Model {
            id: InvoiceLineId::new(),
            invoice_id: invoice.id,
            instance_id: Some(instance.id),
            description: "Medium, March 2026".to_owned(),
            quantity: 672,
            unit_amount_minor: 7,
            amount_minor: 4704,
            period_start: Some(at(1)),
            period_end: Some(at(28)),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        transaction::Model {
            id: TransactionId::new(),
            user_id: customer.id,
            kind: transaction::TransactionKind::CreditAdjustment,
            amount_minor: -1200,
            currency: "EUR".to_owned(),
            invoice_id: Some(invoice.id),
            instance_id: Some(instance.id),
            provider: Some("stripe".to_owned()),
            provider_ref: Some("pi_123".to_owned()),
            idempotency_key: Some("usage:x:1".to_owned()),
            usage_hour: Some(at(1)),
            description: "Goodwill credit".to_owned(),
            created_by: Some(admin.id),
            created_at: at(1),
            updated_at: at(1),
        },
    )
    .await;
    let ticket = round_trip(
        conn,
        support_ticket::Model {
            id: TicketId::new(),
            user_id: customer.id,
            instance_id: Some(instance.id),
            assignee_id: Some(admin.id),
            subject: "Slow disk".to_owned(),
            category: support_ticket::TicketCategory::Abuse,
            priority: support_ticket::TicketPriority::Urgent,
            status: support_ticket::TicketStatus::AwaitingCustomer,
            first_response_at: Some(at(2)),
            resolved_at: Some(at(3)),
            closed_at: Some(at(4)),
            last_message_at: at(2),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        ticket_message::Model {
            id: TicketMessageId::new(),
            ticket_id: ticket.id,
            author_id: admin.id,
            body: "**Looking into it.** <script>alert(1)</script>".to_owned(),
            internal: true,
            created_at: at(2),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        audit_log::Model {
            id: AuditLogId::new(),
            actor_id: Some(customer.id),
            impersonator_id: Some(admin.id),
            action: "instance.reboot".to_owned(),
            object_type: Some("instance".to_owned()),
            object_id: Some(instance.id.to_string()),
            ip: Some("203.0.113.5".to_owned()),
            user_agent: Some("curl/8.5".to_owned()),
            request_id: Some("req-1".to_owned()),
            details: json!({"from": "running", "to": "rebooting"}),
            created_at: at(2),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        setting::Model {
            key: "billing.tax_rate".to_owned(),
            value: json!({"basis_points": 2000, "enabled": true}),
            updated_by: Some(admin.id),
            created_at: at(1),
            updated_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        notification::Model {
            id: NotificationId::new(),
            user_id: customer.id,
            kind: "instance.running".to_owned(),
            title: "db is running".to_owned(),
            body: "Your instance db is up.".to_owned(),
            link: Some(format!("/instances/{}", instance.id)),
            read_at: Some(at(3)),
            dedupe_key: Some(format!("instance.ready:{}", instance.id)),
            created_at: at(2),
            updated_at: at(3),
        },
    )
    .await;
    round_trip(
        conn,
        notification_opt_out::Model {
            user_id: customer.id,
            kind: "instance_ready".to_owned(),
            created_at: at(2),
        },
    )
    .await;
    round_trip(
        conn,
        instance_metric::Model {
            id: InstanceMetricId::new(),
            instance_id: instance.id,
            sampled_at: at(2),
            cpu_percent: 37.5,
            memory_used_mib: 2048,
            disk_read_bytes: 5_000_000_000,
            disk_write_bytes: 6_000_000_000,
            net_rx_bytes: 7_000_000_000,
            net_tx_bytes: 8_000_000_000,
            resolution_secs: 300,
            created_at: at(2),
            updated_at: at(2),
        },
    )
    .await;
}

#[tokio::test]
async fn every_enum_variant_fits_its_column_and_matches_its_json_form() {
    fn check<E>()
    where
        E: sea_orm::ActiveEnum<Value = String> + serde::Serialize,
    {
        for variant in E::iter() {
            let stored = variant.to_value();
            assert!(stored.len() <= 32, "{stored} does not fit varchar(32)");
            assert_eq!(
                serde_json::to_value(&variant).expect("serialise"),
                json!(stored),
                "API and database spell a variant differently"
            );
        }
    }
    check::<user::UserRole>();
    check::<user::UserStatus>();
    check::<api_token::TokenScope>();
    check::<image::ImageStatus>();
    check::<node::NodeDriver>();
    check::<node::NodeStatus>();
    check::<node::Accelerator>();
    check::<instance::InstanceStatus>();
    check::<subscription::SubscriptionStatus>();
    check::<invoice::InvoiceStatus>();
    check::<transaction::TransactionKind>();
    check::<support_ticket::TicketCategory>();
    check::<support_ticket::TicketPriority>();
    check::<support_ticket::TicketStatus>();

    // And the database stores and returns each of the longest set.
    let (_guard, db) = db().await;
    let conn = db.writer();
    let owner = new_user(conn, "statuses@example.com").await;
    let ticket = new_ticket(conn, owner.id).await;
    for status in support_ticket::TicketStatus::iter() {
        let mut active = ticket.clone().into_active_model();
        active.status = Set(status);
        let updated = active.update(conn).await.expect("update");
        let read = support_ticket::Entity::find_by_id(ticket.id)
            .one(conn)
            .await
            .expect("select")
            .expect("row");
        assert_eq!(read.status, status);
        assert_eq!(read, updated);
    }
}

#[tokio::test]
async fn saving_fills_ids_timestamps_defaults_and_normalises_email() {
    let (_guard, db) = db().await;
    let conn = db.writer();
    let before = vmcloud_server::db::entities::now();
    let created = new_user(conn, "  Mixed.Case@Example.COM ").await;
    assert_eq!(created.email, "mixed.case@example.com");
    assert_eq!(created.failed_login_count, 0);
    assert_eq!(created.locale, "en");
    assert!(created.created_at >= before);
    assert_eq!(created.created_at, created.updated_at);

    let read = user::Entity::find()
        .filter(user::Column::Email.eq(user::normalise_email("MIXED.case@example.com")))
        .one(conn)
        .await
        .expect("select")
        .expect("found by normalised email");
    assert_eq!(read, created);

    let mut active = read.into_active_model();
    active.name = Set("Renamed".to_owned());
    let updated = active.update(conn).await.expect("update");
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);

    let region = region::ActiveModel {
        slug: Set("ams1".to_owned()),
        name: Set("Amsterdam 1".to_owned()),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert region");
    assert!(region.active, "regions default to active");

    let cat = catalogue(conn).await;
    assert_eq!(cat.product.setup_fee_minor, 0);
    let message = ticket_message::ActiveModel {
        ticket_id: Set(new_ticket(conn, cat.user.id).await.id),
        author_id: Set(cat.user.id),
        body: Set("hello".to_owned()),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert message");
    assert!(!message.internal, "messages default to public");
}

#[tokio::test]
async fn duplicate_email_is_rejected_whatever_its_case() {
    let (_guard, db) = db().await;
    let conn = db.writer();
    new_user(conn, "alice@example.com").await;
    let duplicate = user::ActiveModel {
        email: Set("Alice@Example.com".to_owned()),
        name: Set("Other Alice".to_owned()),
        password_hash: Set("x".to_owned()),
        role: Set(user::UserRole::Customer),
        status: Set(user::UserStatus::Active),
        ..Default::default()
    }
    .insert(conn)
    .await;
    assert_unique_violation(duplicate);
}

#[tokio::test]
async fn ssh_key_fingerprint_is_unique_per_user_only() {
    let (_guard, db) = db().await;
    let conn = db.writer();
    let alice = new_user(conn, "alice@example.com").await;
    let bob = new_user(conn, "bob@example.com").await;
    let key = |user_id: UserId, name: &str| ssh_key::ActiveModel {
        user_id: Set(user_id),
        name: Set(name.to_owned()),
        public_key: Set("ssh-ed25519 AAAA shared".to_owned()),
        key_type: Set("ssh-ed25519".to_owned()),
        fingerprint: Set("SHA256:shared".to_owned()),
        ..Default::default()
    };
    key(alice.id, "laptop")
        .insert(conn)
        .await
        .expect("first key");
    key(bob.id, "laptop")
        .insert(conn)
        .await
        .expect("the same key for another user");
    assert_unique_violation(key(alice.id, "again").insert(conn).await);
}

#[tokio::test]
async fn other_unique_constraints_hold() {
    let (_guard, db) = db().await;
    let conn = db.writer();
    let cat = catalogue(conn).await;

    // A retried create with the same Idempotency-Key cannot make a second VM.
    let keyed = |key: Option<&str>| instance::ActiveModel {
        user_id: Set(cat.user.id),
        product_id: Set(cat.product.id),
        region_id: Set(cat.region.id),
        image_id: Set(cat.image.id),
        name: Set("vm".to_owned()),
        hostname: Set("vm".to_owned()),
        status: Set(instance::InstanceStatus::Provisioning),
        vcpus: Set(1),
        memory_mib: Set(512),
        disk_gib: Set(10),
        idempotency_key: Set(key.map(str::to_owned)),
        ..Default::default()
    };
    keyed(Some("k1")).insert(conn).await.expect("first");
    keyed(None).insert(conn).await.expect("no key");
    keyed(None).insert(conn).await.expect("keys are optional");
    assert_unique_violation(keyed(Some("k1")).insert(conn).await);

    // A replayed payment webhook cannot credit twice.
    let payment = |provider_ref: Option<&str>| transaction::ActiveModel {
        user_id: Set(cat.user.id),
        kind: Set(transaction::TransactionKind::Payment),
        amount_minor: Set(1000),
        currency: Set("EUR".to_owned()),
        provider: Set(provider_ref.map(|_| "stripe".to_owned())),
        provider_ref: Set(provider_ref.map(str::to_owned)),
        description: Set("Card payment".to_owned()),
        ..Default::default()
    };
    payment(Some("pi_1")).insert(conn).await.expect("first");
    payment(None).insert(conn).await.expect("internal entry");
    payment(None)
        .insert(conn)
        .await
        .expect("another internal entry");
    assert_unique_violation(payment(Some("pi_1")).insert(conn).await);
    // A usage hour is booked once, however many billing runs try.
    let charge = |key: Option<&str>| transaction::ActiveModel {
        user_id: Set(cat.user.id),
        kind: Set(transaction::TransactionKind::Usage),
        amount_minor: Set(-7),
        currency: Set("EUR".to_owned()),
        idempotency_key: Set(key.map(str::to_owned)),
        description: Set("Usage".to_owned()),
        ..Default::default()
    };
    charge(Some("usage:s:1")).insert(conn).await.expect("first");
    charge(None).insert(conn).await.expect("unkeyed entry");
    charge(None)
        .insert(conn)
        .await
        .expect("another unkeyed entry");
    assert_unique_violation(charge(Some("usage:s:1")).insert(conn).await);

    // An instance is announced ready once per account, whatever retries do;
    // notices without a key repeat freely.
    let other = new_user(conn, "other@example.com").await;
    let notice = |user: UserId, key: Option<&str>| notification::ActiveModel {
        user_id: Set(user),
        kind: Set("instance.ready".to_owned()),
        title: Set("web is ready".to_owned()),
        body: Set("Your instance web is running.".to_owned()),
        dedupe_key: Set(key.map(str::to_owned)),
        ..Default::default()
    };
    notice(cat.user.id, Some("instance.ready:1"))
        .insert(conn)
        .await
        .expect("first");
    notice(other.id, Some("instance.ready:1"))
        .insert(conn)
        .await
        .expect("keys are per account");
    notice(cat.user.id, None)
        .insert(conn)
        .await
        .expect("unkeyed");
    notice(cat.user.id, None)
        .insert(conn)
        .await
        .expect("another unkeyed");
    assert_unique_violation(
        notice(cat.user.id, Some("instance.ready:1"))
            .insert(conn)
            .await,
    );
}

#[tokio::test]
async fn foreign_keys_are_enforced() {
    let (_guard, db) = db().await;
    let conn = db.writer();

    let orphan = ssh_key::ActiveModel {
        user_id: Set(UserId::new()),
        name: Set("orphan".to_owned()),
        public_key: Set("ssh-ed25519 AAAA".to_owned()),
        key_type: Set("ssh-ed25519".to_owned()),
        fingerprint: Set("SHA256:orphan".to_owned()),
        ..Default::default()
    }
    .insert(conn)
    .await;
    assert_foreign_key_violation(orphan);

    // Billing records keep their owner: a user with an invoice cannot go.
    let owner = new_user(conn, "billed@example.com").await;
    invoice::ActiveModel {
        user_id: Set(owner.id),
        status: Set(invoice::InvoiceStatus::Draft),
        currency: Set("EUR".to_owned()),
        subtotal_minor: Set(0),
        tax_minor: Set(0),
        total_minor: Set(0),
        tax_rate_basis_points: Set(0),
        reverse_charge: Set(false),
        period_start: Set(at(1)),
        period_end: Set(at(28)),
        billing_snapshot: Set(json!({})),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert invoice");
    assert_foreign_key_violation(user::Entity::delete_by_id(owner.id).exec(conn).await);
}

#[tokio::test]
async fn deleting_a_ticket_deletes_its_messages() {
    let (_guard, db) = db().await;
    let conn = db.writer();
    let owner = new_user(conn, "owner@example.com").await;
    let ticket = new_ticket(conn, owner.id).await;
    let other = new_ticket(conn, owner.id).await;
    for ticket_id in [ticket.id, ticket.id, other.id] {
        ticket_message::ActiveModel {
            ticket_id: Set(ticket_id),
            author_id: Set(owner.id),
            body: Set("hello".to_owned()),
            ..Default::default()
        }
        .insert(conn)
        .await
        .expect("insert message");
    }
    assert_eq!(
        ticket
            .find_related(ticket_message::Entity)
            .all(conn)
            .await
            .expect("select")
            .len(),
        2
    );

    ticket.delete(conn).await.expect("delete ticket");

    let left = ticket_message::Entity::find()
        .all(conn)
        .await
        .expect("select");
    assert_eq!(left.len(), 1);
    assert!(left.iter().all(|m| m.ticket_id == other.id));
}

#[tokio::test]
async fn deleting_an_instance_keeps_billing_history_and_drops_samples() {
    let (_guard, db) = db().await;
    let conn = db.writer();
    let cat = catalogue(conn).await;
    let instance = new_instance(conn, &cat).await;
    let subscription = subscription::ActiveModel {
        user_id: Set(cat.user.id),
        instance_id: Set(Some(instance.id)),
        product_id: Set(cat.product.id),
        status: Set(subscription::SubscriptionStatus::Active),
        current_period_start: Set(at(1)),
        current_period_end: Set(at(28)),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert subscription");
    let address = ip_address::ActiveModel {
        region_id: Set(cat.region.id),
        address: Set("198.51.100.7".to_owned()),
        version: Set(4),
        prefix_len: Set(24),
        instance_id: Set(Some(instance.id)),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert address");
    instance_metric::ActiveModel {
        instance_id: Set(instance.id),
        sampled_at: Set(at(2)),
        cpu_percent: Set(1.0),
        memory_used_mib: Set(100),
        disk_read_bytes: Set(0),
        disk_write_bytes: Set(0),
        net_rx_bytes: Set(0),
        net_tx_bytes: Set(0),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert metric");

    // An instance cannot take a second address or subscription.
    let second_address = ip_address::ActiveModel {
        region_id: Set(cat.region.id),
        address: Set("198.51.100.8".to_owned()),
        version: Set(4),
        prefix_len: Set(24),
        instance_id: Set(Some(instance.id)),
        ..Default::default()
    }
    .insert(conn)
    .await;
    assert_unique_violation(second_address);

    instance::Entity::delete_by_id(instance.id)
        .exec(conn)
        .await
        .expect("delete instance");

    let subscription = subscription::Entity::find_by_id(subscription.id)
        .one(conn)
        .await
        .expect("select")
        .expect("subscription kept");
    assert_eq!(subscription.instance_id, None);
    let address = ip_address::Entity::find_by_id(address.id)
        .one(conn)
        .await
        .expect("select")
        .expect("address kept");
    assert_eq!(address.instance_id, None, "the address is free again");
    assert!(
        instance_metric::Entity::find()
            .all(conn)
            .await
            .expect("select")
            .is_empty()
    );

    // The catalogue an instance points at cannot be pulled from under it.
    let pinned = new_instance(conn, &cat).await;
    assert_foreign_key_violation(image::Entity::delete_by_id(cat.image.id).exec(conn).await);
    assert_foreign_key_violation(region::Entity::delete_by_id(cat.region.id).exec(conn).await);
    node::Entity::delete_by_id(cat.node.id)
        .exec(conn)
        .await
        .expect("a node can go; its instances become unscheduled");
    let pinned = instance::Entity::find_by_id(pinned.id)
        .one(conn)
        .await
        .expect("select")
        .expect("instance kept");
    assert_eq!(pinned.node_id, None);
}

#[tokio::test]
async fn relations_follow_the_right_columns() {
    let (_guard, db) = db().await;
    let conn = db.writer();
    let cat = catalogue(conn).await;
    let agent = new_user(conn, "agent@example.com").await;
    let mut ticket = new_ticket(conn, cat.user.id).await.into_active_model();
    ticket.assignee_id = Set(Some(agent.id));
    let ticket = ticket.update(conn).await.expect("assign");

    // Owner, not assignee, is the ticket's user.
    let owned = cat
        .user
        .find_related(support_ticket::Entity)
        .all(conn)
        .await
        .expect("select");
    assert_eq!(owned, vec![ticket.clone()]);
    assert!(
        agent
            .find_related(support_ticket::Entity)
            .all(conn)
            .await
            .expect("select")
            .is_empty()
    );

    // Many-to-many through product_regions, both ways.
    let other_region = region::ActiveModel {
        slug: Set("lon1".to_owned()),
        name: Set("London 1".to_owned()),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("insert region");
    product_region::ActiveModel {
        product_id: Set(cat.product.id),
        region_id: Set(cat.region.id),
        ..Default::default()
    }
    .insert(conn)
    .await
    .expect("offer product");
    let offered = cat
        .product
        .find_related(region::Entity)
        .all(conn)
        .await
        .expect("select");
    assert_eq!(offered, vec![cat.region.clone()]);
    let products = cat
        .region
        .find_related(product::Entity)
        .all(conn)
        .await
        .expect("select");
    assert_eq!(products, vec![cat.product.clone()]);
    assert!(
        other_region
            .find_related(product::Entity)
            .all(conn)
            .await
            .expect("select")
            .is_empty()
    );

    let instance = new_instance(conn, &cat).await;
    let via_node = cat
        .node
        .find_related(instance::Entity)
        .filter(instance::Column::Status.eq(instance::InstanceStatus::Running))
        .all(conn)
        .await
        .expect("select");
    assert_eq!(via_node, vec![instance]);
}

#[tokio::test]
async fn core_schema_migration_reverts_and_reapplies() {
    use sea_orm_migration::{MigratorTrait as _, SchemaManager};

    const TABLES: [&str; 21] = [
        "users",
        "refresh_tokens",
        "api_tokens",
        "ssh_keys",
        "regions",
        "products",
        "product_regions",
        "images",
        "nodes",
        "instances",
        "ip_addresses",
        "subscriptions",
        "invoices",
        "invoice_lines",
        "transactions",
        "support_tickets",
        "ticket_messages",
        "audit_logs",
        "settings",
        "notifications",
        "instance_metrics",
    ];
    let (_guard, db) = db().await;
    let manager = SchemaManager::new(db.writer());
    // Every later migration builds on the core schema, so all of them go
    // down with it; each must therefore implement `down`.
    vmcloud_server::db::Migrator::down(db.writer(), None)
        .await
        .expect("down");
    for table in TABLES.iter().chain(&[
        "jobs",
        "one_time_tokens",
        "recovery_codes",
        "emails",
        "usage_segments",
        "dunning_cases",
        "coupons",
        "coupon_redemptions",
    ]) {
        assert!(
            !manager.has_table(*table).await.expect("has_table"),
            "{table} left behind"
        );
    }
    vmcloud_server::db::Migrator::up(db.writer(), None)
        .await
        .expect("up again");
    for table in TABLES {
        assert!(
            manager.has_table(table).await.expect("has_table"),
            "{table} missing"
        );
    }
}
