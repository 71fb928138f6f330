//! Staff-side account management: search, role changes, suspension. The
//! checks that protect the platform from its own admins live here: nobody
//! changes or suspends their own account, and the last admin stays an admin.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::ExprTrait as _;
use sea_orm::{
    ColumnTrait as _, Condition, EntityTrait as _, IntoActiveModel as _, PaginatorTrait as _,
    QueryFilter as _,
};

use crate::db::Database;
use crate::db::entities::user::{self, UserRole, UserStatus};
use crate::error::{Error, Result};
use crate::ids::UserId;
use crate::modules::auth::Actor;
use crate::modules::users::UserViews;
use crate::modules::users::{UserView, find, save};
use crate::pagination::{Page, PageRequest, fetch_page};

#[derive(Clone, Debug, Default)]
pub struct UserFilter {
    /// Part of the email or the name, case-insensitive.
    pub query: Option<String>,
    pub role: Option<UserRole>,
    pub status: Option<UserStatus>,
}

pub async fn list(
    db: &Database,
    actor: &Actor,
    filter: UserFilter,
    page: PageRequest,
) -> Result<Page<UserView>> {
    actor.require_staff()?;
    let mut condition = Condition::all();
    if let Some(query) = filter
        .query
        .map(|q| q.trim().to_lowercase())
        .filter(|q| !q.is_empty())
    {
        condition = condition.add(
            Condition::any()
                .add(user::Column::Email.contains(&query))
                .add(
                    sea_orm::sea_query::Expr::expr(sea_orm::sea_query::Func::lower(
                        sea_orm::sea_query::Expr::col(user::Column::Name),
                    ))
                    .like(format!("%{query}%")),
                ),
        );
    }
    if let Some(role) = filter.role {
        condition = condition.add(user::Column::Role.eq(role));
    }
    match filter.status {
        Some(status) => condition = condition.add(user::Column::Status.eq(status)),
        None => condition = condition.add(user::Column::Status.ne(UserStatus::Deleted)),
    }
    let select = user::Entity::find().filter(condition);
    let page = fetch_page(db.reader(), select, user::Column::Id, page, |u| u.id.0).await?;
    Ok(page.map(UserView::from))
}

fn not_yourself(actor: UserId, target: UserId, what: &str) -> Result<()> {
    if actor == target {
        return Err(Error::Conflict(format!(
            "You cannot {what} your own account."
        )));
    }
    Ok(())
}

async fn other_admins(db: &Database, except: UserId) -> Result<u64> {
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(UserRole::Admin))
        .filter(user::Column::Status.eq(UserStatus::Active))
        .filter(user::Column::Id.ne(except))
        .count(db.writer())
        .await?)
}

pub async fn change_role(
    db: &Database,
    views: &UserViews,
    actor: &Actor,
    target: UserId,
    role: UserRole,
) -> Result<user::Model> {
    actor.require_admin()?;
    not_yourself(actor.user_id, target, "change the role of")?;
    let account = find(db, target).await?;
    if account.role == UserRole::Admin
        && role != UserRole::Admin
        && other_admins(db, target).await? == 0
    {
        return Err(Error::Conflict(
            "The last admin cannot be demoted.".to_owned(),
        ));
    }
    let mut active = account.into_active_model();
    active.role = Set(role);
    save(db, views, active).await
}

pub async fn set_suspended(
    db: &Database,
    views: &UserViews,
    actor: &Actor,
    target: UserId,
    suspended: bool,
) -> Result<user::Model> {
    actor.require_admin()?;
    not_yourself(
        actor.user_id,
        target,
        if suspended { "suspend" } else { "unsuspend" },
    )?;
    let account = find(db, target).await?;
    let mut active = account.into_active_model();
    active.status = Set(if suspended {
        UserStatus::Suspended
    } else {
        UserStatus::Active
    });
    save(db, views, active).await
}

/// Who an admin may act as: never themselves, never another admin.
pub async fn impersonable(db: &Database, actor: &Actor, target: UserId) -> Result<user::Model> {
    actor.require_admin()?;
    not_yourself(actor.user_id, target, "impersonate")?;
    let account = find(db, target).await?;
    if account.role == UserRole::Admin {
        return Err(Error::Forbidden(
            "Admins cannot be impersonated.".to_owned(),
        ));
    }
    if account.status != UserStatus::Active {
        return Err(Error::Conflict(
            "Only active accounts can be impersonated.".to_owned(),
        ));
    }
    Ok(account)
}

/// Turns off someone's two-factor authentication, for a user who lost their
/// device; they can sign in with their password and enrol again.
pub async fn reset_two_factor(
    db: &Database,
    views: &UserViews,
    actor: &Actor,
    target: UserId,
) -> Result<user::Model> {
    actor.require_admin()?;
    not_yourself(
        actor.user_id,
        target,
        "reset the two-factor authentication of",
    )?;
    let account = find(db, target).await?;
    if account.totp_secret.is_none() {
        return Err(Error::Conflict(
            "This account has no two-factor authentication to reset.".to_owned(),
        ));
    }
    crate::modules::auth::two_factor::clear(db, views, account).await
}
