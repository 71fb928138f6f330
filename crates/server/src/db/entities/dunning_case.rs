//! An account's dunning: opened when one of its invoices is overdue,
//! resolved when none is. Each step's time is set once, by the billing pass
//! that took the step (a conditional update), so no step — nor its email —
//! is taken twice.

use sea_orm::entity::prelude::*;

use crate::ids::{DunningCaseId, UserId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "dunning_cases")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: DunningCaseId,
    pub user_id: UserId,
    /// The account while the case is open, `None` once resolved: unique, so
    /// an account has one open case at most.
    #[sea_orm(unique)]
    pub open_user_id: Option<UserId>,
    /// The due date of the oldest overdue invoice when the case opened:
    /// the grace period and the termination delay count from here.
    pub overdue_since: DateTimeUtc,
    pub past_due_at: Option<DateTimeUtc>,
    pub suspended_at: Option<DateTimeUtc>,
    pub warned_at: Option<DateTimeUtc>,
    pub terminated_at: Option<DateTimeUtc>,
    pub resolved_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::UserId",
        to = "super::user::Column::Id",
        on_delete = "NoAction"
    )]
    User,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

stamped_behavior!();
