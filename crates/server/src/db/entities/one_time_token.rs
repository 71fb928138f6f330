//! A single-use token sent by email or printed in the log: email
//! verification, password reset, first-admin setup. Only its hash is stored.

use sea_orm::entity::prelude::*;

use crate::ids::{OneTimeTokenId, UserId};

db_enum! {
    pub enum TokenPurpose {
        VerifyEmail,
        ResetPassword,
        AdminSetup,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "one_time_tokens")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: OneTimeTokenId,
    /// None for first-admin setup, which has no account yet.
    pub user_id: Option<UserId>,
    pub purpose: TokenPurpose,
    #[sea_orm(unique)]
    pub token_hash: String,
    pub expires_at: DateTimeUtc,
    pub used_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

stamped_behavior!();
