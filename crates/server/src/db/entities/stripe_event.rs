//! A Stripe event acted on without a ledger row of its own (a failed
//! payment): claimed by its id before acting, so a replay does nothing.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "stripe_events")]
pub struct Model {
    /// Stripe's `evt_…` id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The event's `type`.
    pub kind: String,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
