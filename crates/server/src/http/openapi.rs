//! The OpenAPI 3.1 document, generated from the handlers' annotations. It is
//! served at `/api/openapi.json`, browsable at `/api/docs`, and checked in at
//! `openapi/vmcloud.json` (a test fails when they drift apart).

use axum::extract::DefaultBodyLimit;
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::http::{
    AppState, admin_addresses, admin_audit, admin_billing, admin_catalog, admin_dashboard,
    admin_instances, admin_jobs, admin_nodes, admin_outbox, admin_settings, admin_users,
    api_tokens, auth, billing, catalog, console, health, instances, notifications, ssh_keys,
    tickets, two_factor, users,
};
use crate::modules::support::policy::MAX_ATTACHMENT_BYTES;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "VMCloud API",
        description = "Rent, run and bill virtual machines. Errors are RFC 9457 \
                       `application/problem+json` documents with a stable `type`.",
        license(name = "AGPL-3.0-only", identifier = "AGPL-3.0-only"),
    ),
    tags(
        (name = "health", description = "Liveness and readiness probes"),
        (name = "auth", description = "Registration, sign-in and sessions"),
        (name = "users", description = "The signed-in account"),
        (name = "ssh-keys", description = "Public keys installed on new instances"),
        (name = "api-tokens", description = "Personal tokens for automation"),
        (name = "catalog", description = "Plans, regions and images on offer"),
        (name = "instances", description = "Virtual machines, their actions, snapshots and consoles"),
        (name = "notifications", description = "In-app notifications and email preferences"),
        (name = "billing", description = "The account's balance, usage, ledger and invoices"),
        (name = "support", description = "Support tickets, their messages and attachments"),
        (name = "admin", description = "Staff operations"),
    ),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// Declares the `bearer` scheme: an access token from `/auth/login` or a
/// personal API token (`vmc_…`).
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An access token from /auth/login, or a personal API token (vmc_…).",
                    ))
                    .build(),
            ),
        );
    }
}

/// Every documented route, with its OpenAPI description.
pub fn api_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(routes!(auth::register))
        .routes(routes!(auth::login))
        .routes(routes!(auth::refresh))
        .routes(routes!(auth::logout))
        .routes(routes!(auth::verify_email))
        .routes(routes!(auth::forgot_password))
        .routes(routes!(auth::reset_password))
        .routes(routes!(auth::setup))
        .routes(routes!(users::me, users::update_me))
        .routes(routes!(users::change_password))
        .routes(routes!(users::delete_me))
        .routes(routes!(users::resend_verification))
        .routes(routes!(users::list_sessions))
        .routes(routes!(users::revoke_session))
        .routes(routes!(
            notifications::get_preferences,
            notifications::update_preferences
        ))
        .routes(routes!(notifications::list))
        .routes(routes!(notifications::unread_count))
        .routes(routes!(notifications::mark_read))
        .routes(routes!(notifications::mark_all_read))
        .routes(routes!(two_factor::status))
        .routes(routes!(two_factor::enrol))
        .routes(routes!(two_factor::confirm))
        .routes(routes!(two_factor::disable))
        .routes(routes!(two_factor::regenerate_recovery_codes))
        .routes(routes!(ssh_keys::create, ssh_keys::list))
        .routes(routes!(ssh_keys::get, ssh_keys::delete))
        .routes(routes!(api_tokens::create, api_tokens::list))
        .routes(routes!(api_tokens::revoke))
        .routes(routes!(admin_users::list))
        .routes(routes!(admin_users::get))
        .routes(routes!(admin_users::change_role))
        .routes(routes!(admin_users::suspend))
        .routes(routes!(admin_users::unsuspend))
        .routes(routes!(admin_users::impersonate))
        .routes(routes!(admin_users::reset_two_factor))
        .routes(routes!(admin_settings::list))
        .routes(routes!(admin_audit::search))
        .routes(routes!(admin_dashboard::dashboard))
        .routes(routes!(admin_dashboard::revenue))
        .routes(routes!(admin_settings::get, admin_settings::update))
        .routes(routes!(admin_outbox::list))
        .routes(routes!(admin_jobs::list))
        .routes(routes!(admin_instances::list))
        .routes(routes!(admin_instances::request_action))
        .routes(routes!(admin_instances::delete))
        .routes(routes!(admin_jobs::get, admin_jobs::discard))
        .routes(routes!(admin_jobs::retry))
        .routes(routes!(catalog::products))
        .routes(routes!(catalog::regions))
        .routes(routes!(catalog::images))
        .routes(routes!(
            admin_catalog::list_regions,
            admin_catalog::create_region
        ))
        .routes(routes!(
            admin_catalog::update_region,
            admin_catalog::delete_region
        ))
        .routes(routes!(
            admin_catalog::list_images,
            admin_catalog::create_image
        ))
        .routes(routes!(
            admin_catalog::get_image,
            admin_catalog::update_image,
            admin_catalog::delete_image
        ))
        .routes(routes!(admin_catalog::retry_image_import))
        .routes(routes!(
            admin_catalog::list_products,
            admin_catalog::create_product
        ))
        .routes(routes!(
            admin_catalog::get_product,
            admin_catalog::update_product,
            admin_catalog::delete_product
        ))
        .routes(routes!(admin_nodes::list, admin_nodes::create))
        .routes(routes!(
            admin_nodes::get,
            admin_nodes::update,
            admin_nodes::delete
        ))
        .routes(routes!(admin_addresses::list, admin_addresses::add))
        .routes(routes!(admin_addresses::remove))
        .routes(routes!(instances::create, instances::list))
        .routes(routes!(
            instances::get,
            instances::rename,
            instances::delete
        ))
        .routes(routes!(instances::request_action, instances::list_actions))
        .routes(routes!(instances::get_action))
        .routes(routes!(instances::get_metrics))
        .routes(routes!(
            instances::list_snapshots,
            instances::create_snapshot
        ))
        .routes(routes!(instances::restore_snapshot))
        .routes(routes!(instances::delete_snapshot))
        .routes(routes!(console::issue_console_ticket))
        .routes(routes!(console::serial_console))
        .routes(routes!(console::vnc_console))
        .routes(routes!(billing::balance))
        .routes(routes!(billing::usage))
        .routes(routes!(billing::transactions))
        .routes(routes!(billing::list_invoices))
        .routes(routes!(billing::get_invoice))
        .routes(routes!(billing::top_up))
        .routes(routes!(billing::pay_invoice))
        .routes(routes!(billing::invoice_pdf))
        .routes(routes!(billing::stripe_webhook))
        .routes(routes!(admin_billing::transactions))
        .routes(routes!(admin_billing::adjust))
        .routes(routes!(admin_billing::list_invoices))
        .routes(routes!(admin_billing::issue_invoices))
        .routes(routes!(admin_billing::mark_paid))
        .routes(routes!(tickets::create, tickets::list))
        .routes(routes!(tickets::get))
        .routes(routes!(tickets::post_message))
        .routes(attachment_body_limit(routes!(tickets::upload_attachment)))
        .routes(routes!(tickets::download_attachment))
        .routes(routes!(tickets::assign))
        .routes(routes!(tickets::change_status))
        .routes(routes!(admin_billing::refund))
        .routes(routes!(admin_billing::void_invoice))
        .routes(routes!(admin_billing::invoice_pdf))
        .routes(routes!(billing::redeem_coupon))
        .routes(routes!(
            admin_billing::list_coupons,
            admin_billing::create_coupon
        ))
        .routes(routes!(
            admin_billing::get_coupon,
            admin_billing::update_coupon,
            admin_billing::delete_coupon
        ));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .nest("/api/v1", v1)
}

/// Raises the body limit of the attachment upload to the largest limit the
/// support settings allow (plus room for the multipart framing); the
/// handler enforces the configured limit as it reads.
fn attachment_body_limit(
    (schemas, paths, router): UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    let limit = usize::try_from(MAX_ATTACHMENT_BYTES).unwrap_or(usize::MAX) + 64 * 1024;
    (schemas, paths, router.layer(DefaultBodyLimit::max(limit)))
}

/// The document as served, pretty-printed with a trailing newline (the form
/// checked in).
pub fn document() -> String {
    let mut json = api_router()
        .into_openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    json.push('\n');
    json
}
