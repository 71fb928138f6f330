//! A refund's tie to the payment (or top-up) it returns money from. The
//! refund itself is its ledger row, `transaction_id`.

use sea_orm::entity::prelude::*;

use crate::ids::TransactionId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "payment_refunds")]
pub struct Model {
    /// The refund's ledger row.
    #[sea_orm(primary_key, auto_increment = false)]
    pub transaction_id: TransactionId,
    /// The payment or top-up refunded.
    pub payment_id: TransactionId,
    /// Positive minor units returned.
    pub amount_minor: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
