//! An invoice. Amounts are minor units of `currency`; once issued, the
//! seller's and customer's details are frozen in `billing_snapshot` so a
//! later change of address does not rewrite a legal document.

use sea_orm::entity::prelude::*;

use crate::ids::{InvoiceId, UserId};

db_enum! {
    /// Where an invoice is in its life. Only drafts change; an issued invoice is
    /// voided, never edited.
    pub enum InvoiceStatus {
        Draft,
        Open,
        Paid,
        Void,
    }
}

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "invoices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: InvoiceId,
    pub user_id: UserId,
    /// The sequential number, assigned at issue; `None` for drafts.
    #[sea_orm(unique)]
    pub number: Option<String>,
    pub status: InvoiceStatus,
    pub currency: String,
    pub subtotal_minor: i64,
    pub tax_minor: i64,
    pub total_minor: i64,
    /// The VAT rate applied, in hundredths of a percent (2000 = 20 %).
    pub tax_rate_basis_points: i32,
    /// EU B2B: the customer accounts for VAT, so none is charged.
    pub reverse_charge: bool,
    pub period_start: DateTimeUtc,
    pub period_end: DateTimeUtc,
    pub issued_at: Option<DateTimeUtc>,
    pub due_at: Option<DateTimeUtc>,
    pub paid_at: Option<DateTimeUtc>,
    pub voided_at: Option<DateTimeUtc>,
    #[sea_orm(column_type = "JsonBinary")]
    pub billing_snapshot: Json,
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
    #[sea_orm(has_many = "super::invoice_line::Entity")]
    Lines,
    #[sea_orm(has_many = "super::transaction::Entity")]
    Transactions,
}

impl Related<super::user::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl Related<super::invoice_line::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Lines.def()
    }
}

impl Related<super::transaction::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Transactions.def()
    }
}

stamped_behavior!();
