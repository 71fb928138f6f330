//! A stretch of a subscription's life with one plan, one price and one power
//! state. Usage is charged from these: a resize, a stop or a start closes the
//! open segment and opens the next; the end of the subscription closes the
//! last. The prices are those of the plan when the segment opened, so a
//! price change applies from the instance's next change.

use sea_orm::entity::prelude::*;

use crate::ids::{ProductId, SubscriptionId, UsageSegmentId};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_segments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: UsageSegmentId,
    pub subscription_id: SubscriptionId,
    pub product_id: ProductId,
    /// `false` while the instance is stopped.
    pub running: bool,
    pub hourly_minor: i64,
    pub monthly_minor: i64,
    pub currency: String,
    pub started_at: DateTimeUtc,
    /// `None` while it lasts.
    pub ended_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::subscription::Entity",
        from = "Column::SubscriptionId",
        to = "super::subscription::Column::Id",
        on_delete = "Cascade"
    )]
    Subscription,
    #[sea_orm(
        belongs_to = "super::product::Entity",
        from = "Column::ProductId",
        to = "super::product::Column::Id",
        on_delete = "NoAction"
    )]
    Product,
}

impl Related<super::subscription::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Subscription.def()
    }
}

impl Related<super::product::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Product.def()
    }
}

stamped_behavior!();
