//! An in-app notification for one user.

use sea_orm::entity::prelude::*;

use crate::ids::{NotificationId, UserId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "notifications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: NotificationId,
    pub user_id: UserId,
    /// What it is about, e.g. `instance.running`; the console picks an icon
    /// and a translation from it.
    pub kind: String,
    pub title: String,
    #[sea_orm(column_type = "Text")]
    pub body: String,
    /// A console path to open when clicked.
    #[sea_orm(column_type = "Text")]
    pub link: Option<String>,
    pub read_at: Option<DateTimeUtc>,
    /// Makes a notice idempotent: a second one with the same key for the
    /// same user is not written (unique per user).
    pub dedupe_key: Option<String>,
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
