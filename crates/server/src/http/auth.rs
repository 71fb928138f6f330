//! `/api/v1/auth`: registration, login, token refresh and logout.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::db::entities::user::UserRole;
use crate::error::{Error, Result};
use crate::http::AppState;
use crate::http::extract::{ClientInfo, CurrentUser};
use crate::http::json::ValidJson;
use crate::http::problem::Problem;
use crate::mail::templates::SecurityChange;
use crate::modules::audit::{self, Event};
use crate::modules::auth::access::{self, ACCESS_TOKEN_TTL, Grant};
use crate::modules::auth::login::{self, LoginFailure};
use crate::modules::auth::sessions::{self, IssuedRefresh, RefreshError};
use crate::modules::auth::two_factor::{self, SecondFactor};
use crate::modules::auth::{Credential, rate_limit, revocation};
use crate::modules::users::{self, NewUser, UserView, flows};

/// The refresh cookie, sent only to the auth endpoints.
pub const REFRESH_COOKIE: &str = "vmcloud_refresh";
const REFRESH_COOKIE_PATH: &str = "/api/v1/auth";

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[garde(skip)]
    pub email: String,
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    #[garde(skip)]
    pub name: String,
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[garde(length(min = 1, max = 320))]
    pub email: String,
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// The current code of the authenticator app, or a recovery code, when
    /// two-factor authentication is on.
    #[garde(length(max = 32))]
    pub totp_code: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub user: UserView,
}

/// Builds the access token and the refresh cookie of a session.
pub(crate) fn session_response(
    state: &AppState,
    jar: CookieJar,
    refresh: &IssuedRefresh,
    user: UserView,
) -> Result<(CookieJar, Json<TokenResponse>)> {
    let token = access::issue(
        &state.keys,
        Grant {
            user_id: refresh.user_id,
            role: user.role,
            session_id: refresh.session_id,
            impersonator: refresh.impersonator,
            two_factor: user.two_factor_enabled,
        },
    )?;
    let max_age = (refresh.expires_at - chrono::Utc::now())
        .num_seconds()
        .max(0);
    let cookie = Cookie::build((REFRESH_COOKIE, refresh.token.clone()))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.config.served_over_tls())
        .path(REFRESH_COOKIE_PATH)
        .max_age(time_seconds(max_age))
        .build();
    Ok((
        jar.add(cookie),
        Json(TokenResponse {
            access_token: token.token,
            token_type: "Bearer",
            expires_in: ACCESS_TOKEN_TTL.num_seconds(),
            user,
        }),
    ))
}

fn time_seconds(seconds: i64) -> cookie::time::Duration {
    cookie::time::Duration::seconds(seconds)
}

fn removal_cookie() -> Cookie<'static> {
    Cookie::build((REFRESH_COOKIE, ""))
        .path(REFRESH_COOKIE_PATH)
        .max_age(time_seconds(0))
        .build()
}

/// Cookie-authenticated endpoints also check `Origin`, so a cross-site page
/// cannot ride the cookie even where `SameSite` is not honoured.
fn check_origin(headers: &HeaderMap, state: &AppState) -> Result<()> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let allowed = origin == state.config.public_url()
        || state
            .config
            .cors_allowed_origins
            .iter()
            .any(|o| o == origin);
    if allowed {
        Ok(())
    } else {
        Err(Error::Forbidden(
            "This origin may not use the session cookie.".to_owned(),
        ))
    }
}

/// Create a customer account.
#[utoipa::path(post, path = "/auth/register", tag = "auth", request_body = RegisterRequest,
    responses(
        (status = 201, description = "Account created; a verification email is on its way", body = UserView),
        (status = 403, description = "Registration is closed", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn register(
    State(state): State<AppState>,
    client: ClientInfo,
    ValidJson(body): ValidJson<RegisterRequest>,
) -> Result<(StatusCode, Json<UserView>)> {
    rate_limit::hit(
        &state.cache,
        rate_limit::REGISTER_PER_IP,
        &client.ip_string(),
    )
    .await?;
    users::policy::require_open_registration(&state.db, &state.cache).await?;
    let user = users::create_user(
        &state.db,
        NewUser {
            email: body.email,
            name: Some(body.name),
            password: body.password,
            role: UserRole::Customer,
            email_verified: false,
        },
    )
    .await?;
    flows::send_verification(&state.db, &state.jobs, &state.config.public_url(), &user).await?;
    let context = client.audit(None);
    audit::record(
        &state.db,
        &context,
        Event::new("user.registered").on("user", user.id),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Sign in with email and password (and a second factor when enabled).
#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the refresh token is set as an HttpOnly cookie", body = TokenResponse),
        (status = 401, description = "Wrong credentials, or a second factor is needed", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account suspended", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    ValidJson(body): ValidJson<LoginRequest>,
) -> Result<(CookieJar, Json<TokenResponse>)> {
    let email = crate::db::entities::user::normalise_email(&body.email);
    rate_limit::hit(&state.cache, rate_limit::LOGIN_PER_IP, &client.ip_string()).await?;
    rate_limit::hit(&state.cache, rate_limit::LOGIN_PER_ACCOUNT, &email).await?;
    let account = match login::check_password(&state.db, &state.cache, &email, body.password).await
    {
        Ok(account) => account,
        Err(LoginFailure::Rejected { locked_for }) => {
            let event = Event::new("auth.login.failed").details(serde_json::json!({
                "email": email, "locked_for_secs": locked_for.map(|d| d.as_secs()),
            }));
            audit::record(&state.db, &client.audit(None), event).await?;
            return Err(match locked_for {
                Some(lock) => Error::RateLimited {
                    message: "Too many failed sign-ins; try again later.".to_owned(),
                    retry_after_secs: lock.as_secs().max(1),
                },
                None => Error::Unauthorized("Invalid email or password.".to_owned()),
            });
        }
        Err(LoginFailure::Suspended(account)) => {
            let event = Event::new("auth.login.suspended").on("user", account.id);
            audit::record(&state.db, &client.audit(None), event).await?;
            return Err(Error::Forbidden("This account is suspended.".to_owned()));
        }
        Err(LoginFailure::Error(err)) => return Err(err),
    };
    let second_factor = if account.totp_enabled_at.is_some() {
        Some(
            check_second_factor(&state, &client, &email, &account, body.totp_code.as_deref())
                .await?,
        )
    } else {
        None
    };
    let account =
        login::record_success(&state.db, &state.cache, &state.user_views, account).await?;
    let refresh = sessions::open(&state.db, account.id, None, &client.session_origin()).await?;
    let mut context = client.audit(None);
    context.actor = Some(account.id);
    let event = Event::new("auth.login.succeeded")
        .on("user", account.id)
        .details(serde_json::json!({
            "session_id": refresh.session_id, "second_factor": second_factor,
        }));
    audit::record(&state.db, &context, event).await?;
    session_response(&state, jar, &refresh, account.into())
}

/// The second step of a login for an account with two-factor authentication.
/// A missing code is a prompt; a wrong one counts towards the lockout like a
/// wrong password, since whoever sends it knows the password already.
async fn check_second_factor(
    state: &AppState,
    client: &ClientInfo,
    email: &str,
    account: &crate::db::entities::user::Model,
    code: Option<&str>,
) -> Result<SecondFactor> {
    let Some(code) = code.filter(|c| !c.trim().is_empty()) else {
        return Err(Error::TwoFactorRequired(
            "Enter the code from your authenticator app, or a recovery code.".to_owned(),
        ));
    };
    if let Some(factor) = two_factor::verify(&state.db, &state.sealer, account, code).await? {
        return Ok(factor);
    }
    let locked_for =
        login::record_failure(&state.db, &state.cache, email, Some(account.clone())).await?;
    let mut context = client.audit(None);
    context.actor = Some(account.id);
    let event = Event::new("auth.login.second_factor_failed")
        .on("user", account.id)
        .details(serde_json::json!({ "locked_for_secs": locked_for.map(|d| d.as_secs()) }));
    audit::record(&state.db, &context, event).await?;
    Err(match locked_for {
        Some(lock) => Error::RateLimited {
            message: "Too many failed sign-ins; try again later.".to_owned(),
            retry_after_secs: lock.as_secs().max(1),
        },
        None => Error::TwoFactorRequired("That code is not valid, or was used already.".to_owned()),
    })
}

/// Exchange the refresh cookie for a new access token and a new cookie.
#[utoipa::path(post, path = "/auth/refresh", tag = "auth",
    responses(
        (status = 200, description = "Rotated", body = TokenResponse),
        (status = 401, description = "Missing, expired, revoked or reused refresh token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Foreign Origin", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn refresh(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<(CookieJar, Json<TokenResponse>), (CookieJar, Problem)> {
    let attempt = async {
        check_origin(&headers, &state)?;
        rate_limit::hit(
            &state.cache,
            rate_limit::REFRESH_PER_IP,
            &client.ip_string(),
        )
        .await?;
        let presented = jar
            .get(REFRESH_COOKIE)
            .map(|c| c.value().to_owned())
            .ok_or_else(|| Error::Unauthorized("No session cookie.".to_owned()))?;
        let issued = match sessions::rotate(&state.db, &presented, &client.session_origin()).await {
            Ok(issued) => issued,
            Err(RefreshError::Invalid) => {
                return Err(Error::Unauthorized(
                    "The session has expired; sign in again.".to_owned(),
                ));
            }
            Err(RefreshError::Reused {
                user_id,
                session_id,
            }) => {
                revocation::revoke_sessions(&state.cache, &[session_id]).await?;
                let mut context = client.audit(None);
                context.actor = Some(user_id);
                let event = Event::new("auth.refresh.reused")
                    .on("user", user_id)
                    .details(serde_json::json!({ "session_id": session_id }));
                audit::record(&state.db, &context, event).await?;
                return Err(Error::Unauthorized(
                    "The session has expired; sign in again.".to_owned(),
                ));
            }
            Err(RefreshError::Internal(err)) => return Err(err),
        };
        let user = users::find(&state.db, issued.user_id).await?;
        if user.status != crate::db::entities::user::UserStatus::Active {
            revocation::end_session(&state.db, &state.cache, issued.session_id).await?;
            return Err(Error::Unauthorized(
                "The session has expired; sign in again.".to_owned(),
            ));
        }
        session_response(&state, jar.clone(), &issued, user.into())
    };
    match attempt.await {
        Ok(ok) => Ok(ok),
        Err(err) => Err((jar.clone().add(removal_cookie()), Problem::from(err))),
    }
}

/// End this session: its refresh token is revoked and every access token it
/// was issued stops working, older ones included.
#[utoipa::path(post, path = "/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "Signed out"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn logout(
    State(state): State<AppState>,
    CurrentUser(actor): CurrentUser,
    client: ClientInfo,
    headers: HeaderMap,
    jar: CookieJar,
) -> Result<(StatusCode, CookieJar)> {
    check_origin(&headers, &state)?;
    let Credential::Session { session_id, .. } = actor.credential else {
        return Err(Error::invalid_field(
            "authorization",
            "API tokens have no session to end; revoke the token instead",
        ));
    };
    revocation::end_session(&state.db, &state.cache, session_id).await?;
    let event = Event::new("auth.logout").on("user", actor.user_id);
    audit::record(&state.db, &client.audit(Some(&actor)), event).await?;
    Ok((StatusCode::NO_CONTENT, jar.add(removal_cookie())))
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The token from the emailed link.
    #[garde(length(min = 1, max = 128))]
    pub token: String,
}

/// Confirm an email address with the token from the verification link.
#[utoipa::path(post, path = "/auth/verify-email", tag = "auth", request_body = TokenRequest,
    responses(
        (status = 200, body = UserView),
        (status = 422, description = "Invalid or expired token", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn verify_email(
    State(state): State<AppState>,
    client: ClientInfo,
    ValidJson(body): ValidJson<TokenRequest>,
) -> Result<Json<UserView>> {
    let account = flows::verify_email(&state.db, &state.user_views, &body.token).await?;
    let mut context = client.audit(None);
    context.actor = Some(account.id);
    audit::record(
        &state.db,
        &context,
        Event::new("user.email_verified").on("user", account.id),
    )
    .await?;
    Ok(Json(account.into()))
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordRequest {
    #[garde(length(min = 1, max = 320))]
    pub email: String,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    pub detail: &'static str,
}

/// Ask for a password reset link. The answer is the same whether or not the
/// address has an account.
#[utoipa::path(post, path = "/auth/forgot-password", tag = "auth", request_body = ForgotPasswordRequest,
    responses(
        (status = 202, description = "If the address has an account, a link is on its way", body = Accepted),
        (status = 422, body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many requests; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn forgot_password(
    State(state): State<AppState>,
    client: ClientInfo,
    ValidJson(body): ValidJson<ForgotPasswordRequest>,
) -> Result<(StatusCode, Json<Accepted>)> {
    let email = crate::db::entities::user::normalise_email(&body.email);
    rate_limit::hit(&state.cache, rate_limit::FORGOT_PER_IP, &client.ip_string()).await?;
    rate_limit::hit(&state.cache, rate_limit::FORGOT_PER_ACCOUNT, &email).await?;
    flows::request_password_reset(&state.jobs, &email).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            detail: "If an account uses this address, a reset link is on its way.",
        }),
    ))
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    #[garde(length(min = 1, max = 128))]
    pub token: String,
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Set a new password with the token from the reset link; every session of
/// the account ends.
#[utoipa::path(post, path = "/auth/reset-password", tag = "auth", request_body = ResetPasswordRequest,
    responses(
        (status = 204, description = "Password changed"),
        (status = 422, description = "Invalid or expired token, or a weak password", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn reset_password(
    State(state): State<AppState>,
    client: ClientInfo,
    ValidJson(body): ValidJson<ResetPasswordRequest>,
) -> Result<StatusCode> {
    let user_id =
        flows::reset_password(&state.db, &state.user_views, &body.token, body.new_password).await?;
    revocation::end_sessions_of(&state.db, &state.cache, user_id, None).await?;
    let mut context = client.audit(None);
    context.actor = Some(user_id);
    audit::record(
        &state.db,
        &context,
        Event::new("user.password_reset").on("user", user_id),
    )
    .await?;
    flows::send_security_alert(
        &state.db,
        &state.jobs,
        user_id,
        SecurityChange::PasswordReset,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The token of the setup link printed in the log at start-up.
    #[garde(length(min = 1, max = 128))]
    pub token: String,
    #[garde(skip)]
    pub email: String,
    #[garde(skip)]
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    #[garde(skip)]
    pub name: String,
}

/// Create the first admin with the one-time setup link. Refused once any
/// admin exists.
#[utoipa::path(post, path = "/auth/setup", tag = "auth", request_body = SetupRequest,
    responses(
        (status = 201, body = UserView),
        (status = 409, description = "An admin exists already", body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn setup(
    State(state): State<AppState>,
    client: ClientInfo,
    ValidJson(body): ValidJson<SetupRequest>,
) -> Result<(StatusCode, Json<UserView>)> {
    let admin = NewUser {
        email: body.email,
        name: Some(body.name),
        password: body.password,
        role: UserRole::Admin,
        email_verified: true,
    };
    let account = flows::complete_setup(&state.db, &body.token, admin).await?;
    let mut context = client.audit(None);
    context.actor = Some(account.id);
    audit::record(
        &state.db,
        &context,
        Event::new("user.first_admin_created").on("user", account.id),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(account.into())))
}
