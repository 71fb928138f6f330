//! Single-use tokens for links sent by email (or printed in the log): 256
//! random bits, stored hashed, consumed with a conditional update so a link
//! works exactly once even when clicked twice at the same moment.

use chrono::Duration;
use sea_orm::ActiveValue::Set;
use sea_orm::{ActiveModelTrait as _, ColumnTrait as _, EntityTrait as _, QueryFilter as _};

use crate::db::Database;
use crate::db::entities::now;
use crate::db::entities::one_time_token::{self, TokenPurpose};
use crate::error::Result;
use crate::ids::UserId;
use crate::modules::auth::sessions::{hash_token, new_token};

/// How long each kind of link stays valid.
pub fn lifetime(purpose: TokenPurpose) -> Duration {
    match purpose {
        TokenPurpose::VerifyEmail => Duration::days(2),
        TokenPurpose::ResetPassword | TokenPurpose::AdminSetup => Duration::hours(1),
    }
}

/// Issues a token; earlier unused ones of the same purpose and user stop
/// working, so only the newest link does.
pub async fn issue(
    db: &Database,
    purpose: TokenPurpose,
    user_id: Option<UserId>,
) -> Result<String> {
    let at = now();
    let mut retire = one_time_token::Entity::update_many()
        .col_expr(one_time_token::Column::UsedAt, at.into())
        .col_expr(one_time_token::Column::UpdatedAt, at.into())
        .filter(one_time_token::Column::Purpose.eq(purpose))
        .filter(one_time_token::Column::UsedAt.is_null());
    retire = match user_id {
        Some(id) => retire.filter(one_time_token::Column::UserId.eq(id)),
        None => retire.filter(one_time_token::Column::UserId.is_null()),
    };
    retire.exec(db.writer()).await?;
    let token = new_token();
    one_time_token::ActiveModel {
        user_id: Set(user_id),
        purpose: Set(purpose),
        token_hash: Set(hash_token(&token)),
        expires_at: Set(at + lifetime(purpose)),
        ..Default::default()
    }
    .insert(db.writer())
    .await?;
    Ok(token)
}

/// Uses a token up. `None` when it is unknown, of another purpose, expired or
/// already used; otherwise the account it was issued for (if any).
pub async fn consume(
    db: &Database,
    purpose: TokenPurpose,
    token: &str,
) -> Result<Option<Option<UserId>>> {
    let Some(row) = one_time_token::Entity::find()
        .filter(one_time_token::Column::TokenHash.eq(hash_token(token)))
        .filter(one_time_token::Column::Purpose.eq(purpose))
        .one(db.writer())
        .await?
    else {
        return Ok(None);
    };
    let at = now();
    let used = one_time_token::Entity::update_many()
        .col_expr(one_time_token::Column::UsedAt, at.into())
        .col_expr(one_time_token::Column::UpdatedAt, at.into())
        .filter(one_time_token::Column::Id.eq(row.id))
        .filter(one_time_token::Column::UsedAt.is_null())
        .filter(one_time_token::Column::ExpiresAt.gt(at))
        .exec(db.writer())
        .await?;
    Ok((used.rows_affected == 1).then_some(row.user_id))
}
