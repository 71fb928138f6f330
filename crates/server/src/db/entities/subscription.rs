//! The billing side of an instance: which plan is charged, for which period.
//! It outlives its instance (`instance_id` becomes `None`) so the history
//! stays.

use sea_orm::entity::prelude::*;

use crate::ids::{InstanceId, ProductId, SubscriptionId, UserId};

db_enum! {
    /// Where a subscription is in its billing life.
    pub enum SubscriptionStatus {
        Active,
        PastDue,
        Suspended,
        Cancelled,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "subscriptions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: SubscriptionId,
    pub user_id: UserId,
    #[sea_orm(unique)]
    pub instance_id: Option<InstanceId>,
    pub product_id: ProductId,
    pub status: SubscriptionStatus,
    pub current_period_start: DateTimeUtc,
    pub current_period_end: DateTimeUtc,
    pub cancelled_at: Option<DateTimeUtc>,
    /// Usage is charged up to here (an hour boundary); `None` before the
    /// first charge.
    pub accrued_until: Option<DateTimeUtc>,
    /// What was charged in `accrued_until`'s month before it, for the
    /// monthly cap; `None` when unknown (then the ledger is summed).
    pub accrued_month_minor: Option<i64>,
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
    #[sea_orm(
        belongs_to = "super::instance::Entity",
        from = "Column::InstanceId",
        to = "super::instance::Column::Id",
        on_delete = "SetNull"
    )]
    Instance,
    #[sea_orm(
        belongs_to = "super::product::Entity",
        from = "Column::ProductId",
        to = "super::product::Column::Id",
        on_delete = "NoAction"
    )]
    Product,
    #[sea_orm(has_many = "super::usage_segment::Entity")]
    Segments,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instance.def()
    }
}

impl Related<super::product::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Product.def()
    }
}

impl Related<super::usage_segment::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Segments.def()
    }
}

stamped_behavior!();
