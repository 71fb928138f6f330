//! The account ledger: append-only, one signed amount per movement. A user's
//! balance is the sum of their rows; corrections are new rows, never edits.

use sea_orm::entity::prelude::*;

use crate::ids::{InstanceId, InvoiceId, TransactionId, UserId};

db_enum! {
    /// What moved the balance.
    pub enum TransactionKind {
        Usage,
        Invoice,
        Payment,
        Refund,
        CreditAdjustment,
        Coupon,
        TopUp,
        /// A plan's one-off fee, when the instance is ordered.
        SetupFee,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "transactions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: TransactionId,
    pub user_id: UserId,
    pub kind: TransactionKind,
    /// Minor units; positive credits the account, negative debits it.
    pub amount_minor: i64,
    pub currency: String,
    pub invoice_id: Option<InvoiceId>,
    pub instance_id: Option<InstanceId>,
    /// The payment provider (`stripe`, …) for money that came from outside.
    pub provider: Option<String>,
    /// The provider's id for the payment; unique per provider, so a replayed
    /// webhook cannot credit twice.
    pub provider_ref: Option<String>,
    /// What makes the movement unique, so recording it again is a no-op:
    /// `usage:{subscription}:{hour}` for a usage charge.
    #[sea_orm(unique)]
    pub idempotency_key: Option<String>,
    /// The hour a usage charge is for.
    pub usage_hour: Option<DateTimeUtc>,
    #[sea_orm(column_type = "Text")]
    pub description: String,
    /// The staff member who made a manual entry.
    pub created_by: Option<UserId>,
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
        belongs_to = "super::invoice::Entity",
        from = "Column::InvoiceId",
        to = "super::invoice::Column::Id",
        on_delete = "NoAction"
    )]
    Invoice,
    #[sea_orm(
        belongs_to = "super::instance::Entity",
        from = "Column::InstanceId",
        to = "super::instance::Column::Id",
        on_delete = "SetNull"
    )]
    Instance,
    #[sea_orm(
        belongs_to = "super::user::Entity",
        from = "Column::CreatedBy",
        to = "super::user::Column::Id",
        on_delete = "SetNull"
    )]
    Creator,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl Related<super::invoice::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Invoice.def()
    }
}

impl Related<super::instance::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Instance.def()
    }
}

stamped_behavior!();
