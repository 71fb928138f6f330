//! The OpenAPI 3.1 document, generated from the handlers' annotations. It is
//! served at `/api/openapi.json`, browsable at `/api/docs`, and checked in at
//! `openapi/vmcloud.json` (a test fails when they drift apart).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi, Ref, RefOr};
use utoipa::{Modify as _, OpenApi as _};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouter};
use utoipa_axum::routes;

use crate::http::problem::PROBLEM_CONTENT_TYPE;
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
    fn modify(&self, openapi: &mut OpenApi) {
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

/// `routes!` for handlers of one module, prefixing their operation ids with
/// the module's name (`instances_list`, `admin_nodes_create`): handler names
/// repeat across modules, operation ids must not.
macro_rules! module_routes {
    ($module:ident: $($handler:ident),+ $(,)?) => {
        with_operation_prefix(stringify!($module), routes!($($module::$handler),+))
    };
}

fn with_operation_prefix(
    prefix: &str,
    (schemas, mut paths, router): UtoipaMethodRouter<AppState>,
) -> UtoipaMethodRouter<AppState> {
    for operation in paths.paths.values_mut().flat_map(operations_mut) {
        let id = operation.operation_id.take().unwrap_or_default();
        operation.operation_id = Some(format!("{prefix}_{id}"));
    }
    (schemas, paths, router)
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
        &mut item.head,
        &mut item.options,
        &mut item.trace,
    ]
    .into_iter()
    .flatten()
}

/// Every documented route, with its OpenAPI description.
fn api_router() -> OpenApiRouter<AppState> {
    let v1 = OpenApiRouter::new()
        .routes(module_routes!(auth: register))
        .routes(module_routes!(auth: login))
        .routes(module_routes!(auth: refresh))
        .routes(module_routes!(auth: logout))
        .routes(module_routes!(auth: verify_email))
        .routes(module_routes!(auth: forgot_password))
        .routes(module_routes!(auth: reset_password))
        .routes(module_routes!(auth: setup))
        .routes(module_routes!(users: me, update_me))
        .routes(module_routes!(users: change_password))
        .routes(module_routes!(users: delete_me))
        .routes(module_routes!(users: resend_verification))
        .routes(module_routes!(users: list_sessions))
        .routes(module_routes!(users: revoke_session))
        .routes(module_routes!(notifications: get_preferences, update_preferences))
        .routes(module_routes!(notifications: list))
        .routes(module_routes!(notifications: unread_count))
        .routes(module_routes!(notifications: mark_read))
        .routes(module_routes!(notifications: mark_all_read))
        .routes(module_routes!(two_factor: status))
        .routes(module_routes!(two_factor: enrol))
        .routes(module_routes!(two_factor: confirm))
        .routes(module_routes!(two_factor: disable))
        .routes(module_routes!(two_factor: regenerate_recovery_codes))
        .routes(module_routes!(ssh_keys: create, list))
        .routes(module_routes!(ssh_keys: get, delete))
        .routes(module_routes!(api_tokens: create, list))
        .routes(module_routes!(api_tokens: revoke))
        .routes(module_routes!(admin_users: list))
        .routes(module_routes!(admin_users: get))
        .routes(module_routes!(admin_users: change_role))
        .routes(module_routes!(admin_users: suspend))
        .routes(module_routes!(admin_users: unsuspend))
        .routes(module_routes!(admin_users: impersonate))
        .routes(module_routes!(admin_users: reset_two_factor))
        .routes(module_routes!(admin_settings: list))
        .routes(module_routes!(admin_audit: search))
        .routes(module_routes!(admin_dashboard: overview))
        .routes(module_routes!(admin_dashboard: revenue))
        .routes(module_routes!(admin_settings: get, update))
        .routes(module_routes!(admin_outbox: list))
        .routes(module_routes!(admin_jobs: list))
        .routes(module_routes!(admin_instances: list))
        .routes(module_routes!(admin_instances: request_action))
        .routes(module_routes!(admin_instances: delete))
        .routes(module_routes!(admin_jobs: get, discard))
        .routes(module_routes!(admin_jobs: retry))
        .routes(module_routes!(catalog: products))
        .routes(module_routes!(catalog: regions))
        .routes(module_routes!(catalog: images))
        .routes(module_routes!(admin_catalog: list_regions, create_region))
        .routes(module_routes!(admin_catalog: update_region, delete_region))
        .routes(module_routes!(admin_catalog: list_images, create_image))
        .routes(module_routes!(admin_catalog: get_image, update_image, delete_image))
        .routes(module_routes!(admin_catalog: retry_image_import))
        .routes(module_routes!(admin_catalog: list_products, create_product))
        .routes(module_routes!(admin_catalog: get_product, update_product, delete_product))
        .routes(module_routes!(admin_nodes: list, create))
        .routes(module_routes!(admin_nodes: get, update, delete))
        .routes(module_routes!(admin_addresses: list, add))
        .routes(module_routes!(admin_addresses: remove))
        .routes(module_routes!(instances: create, list))
        .routes(module_routes!(instances: get, rename, delete))
        .routes(module_routes!(instances: request_action, list_actions))
        .routes(module_routes!(instances: get_action))
        .routes(module_routes!(instances: get_metrics))
        .routes(module_routes!(instances: list_snapshots, create_snapshot))
        .routes(module_routes!(instances: restore_snapshot))
        .routes(module_routes!(instances: delete_snapshot))
        .routes(module_routes!(console: issue_ticket))
        .routes(module_routes!(console: serial))
        .routes(module_routes!(console: vnc))
        .routes(module_routes!(billing: balance))
        .routes(module_routes!(billing: usage))
        .routes(module_routes!(billing: transactions))
        .routes(module_routes!(billing: list_invoices))
        .routes(module_routes!(billing: get_invoice))
        .routes(module_routes!(billing: top_up))
        .routes(module_routes!(billing: pay_invoice))
        .routes(module_routes!(billing: invoice_pdf))
        .routes(module_routes!(billing: stripe_webhook))
        .routes(module_routes!(admin_billing: transactions))
        .routes(module_routes!(admin_billing: adjust))
        .routes(module_routes!(admin_billing: list_invoices))
        .routes(module_routes!(admin_billing: issue_invoices))
        .routes(module_routes!(admin_billing: mark_paid))
        .routes(module_routes!(tickets: create, list))
        .routes(module_routes!(tickets: get))
        .routes(module_routes!(tickets: post_message))
        .routes(attachment_body_limit(
            module_routes!(tickets: upload_attachment),
        ))
        .routes(module_routes!(tickets: download_attachment))
        .routes(module_routes!(tickets: assign))
        .routes(module_routes!(tickets: change_status))
        .routes(module_routes!(admin_billing: refund))
        .routes(module_routes!(admin_billing: void_invoice))
        .routes(module_routes!(admin_billing: invoice_pdf))
        .routes(module_routes!(billing: redeem_coupon))
        .routes(module_routes!(admin_billing: list_coupons, create_coupon))
        .routes(module_routes!(admin_billing: get_coupon, update_coupon, delete_coupon));
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(module_routes!(health: healthz))
        .routes(module_routes!(health: readyz))
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

/// The API's routes and their complete OpenAPI document.
pub fn api() -> (Router<AppState>, OpenApi) {
    let (router, mut document) = api_router().split_for_parts();
    SharedResponses.modify(&mut document);
    (router, document)
}

/// The document as served, pretty-printed with a trailing newline (the form
/// checked in).
pub fn document() -> String {
    let mut json = api()
        .1
        .to_pretty_json()
        .expect("the OpenAPI document serialises");
    json.push('\n');
    json
}

/// A problem response that many operations share, kept once in
/// `components.responses`.
struct Shared {
    status: StatusCode,
    name: &'static str,
    description: &'static str,
    /// Whether `operation` can answer it.
    applies: fn(&Operation) -> bool,
}

const SHARED_RESPONSES: [Shared; 9] = [
    Shared {
        status: StatusCode::BAD_REQUEST,
        name: "MalformedRequest",
        description: "The body is not valid JSON, or a path or query parameter cannot be read.",
        applies: takes_input,
    },
    Shared {
        status: StatusCode::UNAUTHORIZED,
        name: "Unauthenticated",
        description: "No valid bearer token: missing, malformed, expired or revoked.",
        applies: is_authenticated,
    },
    Shared {
        status: StatusCode::FORBIDDEN,
        name: "Forbidden",
        description: "The caller's role, the token's scope or the account's state does not \
                      allow this (`type` says which).",
        applies: is_authenticated,
    },
    Shared {
        status: StatusCode::NOT_FOUND,
        name: "NotFound",
        description: "No such object, or not one the caller may see.",
        applies: has_path_parameters,
    },
    Shared {
        status: StatusCode::REQUEST_TIMEOUT,
        name: "RequestTimeout",
        description: "The request took longer than the server allows and was cancelled.",
        applies: |_| true,
    },
    Shared {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        name: "PayloadTooLarge",
        description: "The body is larger than the server accepts.",
        applies: has_body,
    },
    Shared {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        name: "UnsupportedMediaType",
        description: "The body is not of the documented content type.",
        applies: has_body,
    },
    Shared {
        status: StatusCode::UNPROCESSABLE_ENTITY,
        name: "ValidationFailed",
        description: "A field or parameter breaks a rule; `errors` names each.",
        applies: takes_input,
    },
    Shared {
        status: StatusCode::INTERNAL_SERVER_ERROR,
        name: "InternalError",
        description: "An unexpected error; quote the `request_id` when reporting it.",
        applies: |_| true,
    },
];

fn has_body(operation: &Operation) -> bool {
    operation.request_body.is_some()
}

fn takes_input(operation: &Operation) -> bool {
    has_body(operation) || operation.parameters.as_ref().is_some_and(|p| !p.is_empty())
}

fn has_path_parameters(operation: &Operation) -> bool {
    operation.parameters.iter().flatten().any(|parameter| {
        matches!(parameter, RefOr::T(p) if p.parameter_in == utoipa::openapi::path::ParameterIn::Path)
    })
}

fn is_authenticated(operation: &Operation) -> bool {
    operation.security.as_ref().is_some_and(|s| !s.is_empty())
}

/// Adds the problem responses every route of a kind can answer (malformed
/// input, authentication, timeouts, internal errors) to each operation, as
/// references to `components.responses`, unless the operation describes that
/// status itself; and names every other undescribed response after its
/// status, since OpenAPI requires a description.
struct SharedResponses;

impl utoipa::Modify for SharedResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for shared in &SHARED_RESPONSES {
            let response = ResponseBuilder::new()
                .description(shared.description)
                .content(
                    PROBLEM_CONTENT_TYPE,
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build();
            components
                .responses
                .insert(shared.name.to_owned(), RefOr::T(response));
        }
        for operation in openapi.paths.paths.values_mut().flat_map(operations_mut) {
            for shared in &SHARED_RESPONSES {
                let code = shared.status.as_str().to_owned();
                let undescribed = match operation.responses.responses.get(&code) {
                    None => (shared.applies)(operation),
                    Some(RefOr::T(response)) => response.description.is_empty(),
                    Some(RefOr::Ref(_)) => false,
                };
                if undescribed {
                    let reference = Ref::new(format!("#/components/responses/{}", shared.name));
                    operation
                        .responses
                        .responses
                        .insert(code, RefOr::Ref(reference));
                }
            }
            for (code, response) in &mut operation.responses.responses {
                if let RefOr::T(response) = response {
                    describe_by_status(code, response);
                }
            }
        }
    }
}

fn describe_by_status(code: &str, response: &mut Response) {
    if response.description.is_empty() {
        let reason = code
            .parse::<StatusCode>()
            .ok()
            .and_then(|status| status.canonical_reason());
        reason
            .unwrap_or("Success")
            .clone_into(&mut response.description);
    }
}
