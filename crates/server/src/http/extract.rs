//! Extractors for who is calling and from where. Each route declares who may
//! call it by the extractor it takes: [`CurrentUser`] (any signed-in account),
//! [`AccountHolder`] (the account holder in a signed-in session, for the
//! account's own credentials), [`Staff`] (support or admin) or [`Admin`].

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, header};

use crate::db::entities::user::{UserRole, UserStatus};
use crate::error::Error;
use crate::http::AppState;
use crate::http::problem::Problem;
use crate::http::request_id::RequestId;
use crate::modules::audit;
use crate::modules::auth::policy::SecurityPolicy;
use crate::modules::auth::{Actor, Credential, access, revocation};
use crate::modules::{api_tokens, settings, users};

/// The client as far as we can tell: the peer address, or the address a
/// trusted proxy says it forwarded for.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
}

impl ClientInfo {
    pub fn ip_string(&self) -> String {
        self.ip
            .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
    }

    /// The audit context for `actor` (or an anonymous caller).
    pub fn audit(&self, actor: Option<&Actor>) -> audit::Context {
        audit::Context {
            actor: actor.map(|a| a.user_id),
            impersonator: actor.and_then(|a| a.impersonator),
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
            request_id: self.request_id.clone(),
        }
    }

    pub fn session_origin(&self) -> crate::modules::auth::sessions::Origin {
        crate::modules::auth::sessions::Origin {
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// The rightmost `X-Forwarded-For` hop not added by one of our proxies.
fn forwarded_client(parts: &Parts, trusted: &[IpAddr]) -> Option<IpAddr> {
    let header = parts.headers.get("x-forwarded-for")?.to_str().ok()?;
    header
        .rsplit(',')
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
}

impl FromRequestParts<AppState> for ClientInfo {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        let trusted = &state.config.trusted_proxies;
        let ip = match peer {
            Some(peer) if trusted.contains(&peer) => {
                forwarded_client(parts, trusted).or(Some(peer))
            }
            other => other,
        };
        let user_agent = parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(512).collect());
        let request_id = parts.extensions.get::<RequestId>().map(|id| id.0.clone());
        Ok(Self {
            ip,
            user_agent,
            request_id,
        })
    }
}

fn unauthorized(detail: &str) -> Problem {
    Problem::from(Error::Unauthorized(detail.to_owned()))
}

/// Authenticates the `Authorization: Bearer` credential: an access token or
/// a personal API token (`vmc_…`).
async fn authenticate(parts: &Parts, state: &AppState) -> Result<Actor, Problem> {
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            unauthorized("Sign in, or send an access token as `Authorization: Bearer …`.")
        })?;
    let actor = authenticate_token(state, token).await?;
    if !matches!(parts.method, Method::GET | Method::HEAD) {
        actor.require_write().map_err(Problem::from)?;
    }
    tracing::Span::current().record("user_id", tracing::field::display(actor.user_id));
    if let Some(admin) = actor.impersonator {
        // Everything done as someone else is on the record, reads included.
        let client = ClientInfo::from_request_parts(&mut parts.clone(), state).await?;
        let event = audit::Event::new("impersonation.request")
            .on("user", actor.user_id)
            .details(serde_json::json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "admin_id": admin,
            }));
        audit::record(&state.db, &client.audit(Some(&actor)), event)
            .await
            .map_err(Problem::from)?;
    }
    Ok(actor)
}

/// Who `token` (an access token or a personal API token) acts for, as the
/// REST API and the real-time endpoint both accept it.
pub async fn authenticate_token(state: &AppState, token: &str) -> Result<Actor, Error> {
    let unauthorized = |detail: &str| Error::Unauthorized(detail.to_owned());
    if token.starts_with(api_tokens::TOKEN_PREFIX) {
        let invalid = || unauthorized("The API token is invalid, expired or revoked.");
        let found = api_tokens::authenticate(&state.db, token)
            .await?
            .ok_or_else(invalid)?;
        // A suspended or closed account's tokens stop working with it.
        let account = users::find(&state.db, found.user_id)
            .await
            .map_err(|_| invalid())?;
        if account.status != UserStatus::Active {
            return Err(invalid());
        }
        let actor = Actor {
            user_id: found.user_id,
            role: account.role,
            credential: Credential::ApiToken {
                token_id: found.token_id,
                scope: found.scope,
                expires_at: found.expires_at,
            },
            impersonator: None,
            two_factor: account.totp_enabled_at.is_some(),
            staff_held_back: false,
        };
        return hold_back_staff(state, actor).await;
    }
    let claims = access::verify(&state.keys, token)?;
    if revocation::is_revoked(&state.db, &state.cache, &claims).await? {
        return Err(unauthorized("The access token has been revoked."));
    }
    let actor = Actor {
        user_id: claims.sub,
        role: claims.role,
        credential: Credential::Session {
            session_id: claims.sid,
            jti: claims.jti,
            expires_at: claims.expires_at(),
        },
        impersonator: claims.imp,
        two_factor: claims.mfa,
        staff_held_back: false,
    };
    hold_back_staff(state, actor).await
}

/// When admins require it, staff without a second factor are held back from
/// their staff powers wherever they would use them (see
/// [`Actor::is_staff`]); their own account routes stay open so they can
/// enrol. An admin impersonating is not asked for one.
async fn hold_back_staff(state: &AppState, mut actor: Actor) -> Result<Actor, Error> {
    if matches!(actor.role, UserRole::Support | UserRole::Admin)
        && !actor.two_factor
        && actor.impersonator.is_none()
    {
        let policy = settings::load::<SecurityPolicy>(&state.db, &state.cache).await?;
        actor.staff_held_back = policy.require_2fa_for_staff;
    }
    Ok(actor)
}

/// Any signed-in account.
#[derive(Clone, Debug)]
pub struct CurrentUser(pub Actor);

/// The account holder in a signed-in session: not an API token, not an
/// admin impersonating (see [`Actor::require_account_holder`]).
#[derive(Clone, Debug)]
pub struct AccountHolder(pub Actor);

/// Support or Admin.
#[derive(Clone, Debug)]
pub struct Staff(pub Actor);

/// Admin only.
#[derive(Clone, Debug)]
pub struct Admin(pub Actor);

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        authenticate(parts, state).await.map(Self)
    }
}

impl FromRequestParts<AppState> for AccountHolder {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let actor = authenticate(parts, state).await?;
        actor.require_account_holder()?;
        Ok(Self(actor))
    }
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let actor = authenticate(parts, state).await?;
        actor.require_staff()?;
        Ok(Self(actor))
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let actor = authenticate(parts, state).await?;
        actor.require_admin()?;
        Ok(Self(actor))
    }
}
