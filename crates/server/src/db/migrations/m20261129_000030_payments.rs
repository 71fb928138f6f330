//! Card payments: each refund of a payment is tied to the payment it
//! returns money from, so a refund can never exceed what is left of it; and
//! the Stripe events acted on without a ledger row (a failed payment), so a
//! replayed delivery does not alert or email twice.

use sea_orm_migration::prelude::*;

use super::timestamp_columns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PaymentRefunds {
    Table,
    TransactionId,
    PaymentId,
    AmountMinor,
}

#[derive(DeriveIden)]
enum StripeEvents {
    Table,
    Id,
    Kind,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    Id,
}

const PAYMENT_INDEX: &str = "idx_payment_refunds_payment_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut refunds = Table::create();
        refunds
            .table(PaymentRefunds::Table)
            .col(
                ColumnDef::new(PaymentRefunds::TransactionId)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new(PaymentRefunds::PaymentId).uuid().not_null())
            .col(
                ColumnDef::new(PaymentRefunds::AmountMinor)
                    .big_integer()
                    .not_null(),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_payment_refunds_transaction_id")
                    .from(PaymentRefunds::Table, PaymentRefunds::TransactionId)
                    .to(Transactions::Table, Transactions::Id)
                    .on_delete(ForeignKeyAction::NoAction),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_payment_refunds_payment_id")
                    .from(PaymentRefunds::Table, PaymentRefunds::PaymentId)
                    .to(Transactions::Table, Transactions::Id)
                    .on_delete(ForeignKeyAction::NoAction),
            );
        for column in timestamp_columns() {
            refunds.col(column);
        }
        manager.create_table(refunds).await?;
        manager
            .create_index(
                Index::create()
                    .name(PAYMENT_INDEX)
                    .table(PaymentRefunds::Table)
                    .col(PaymentRefunds::PaymentId)
                    .to_owned(),
            )
            .await?;
        let mut events = Table::create();
        events
            .table(StripeEvents::Table)
            .col(
                ColumnDef::new(StripeEvents::Id)
                    .string_len(255)
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(StripeEvents::Kind)
                    .string_len(100)
                    .not_null(),
            );
        for column in timestamp_columns() {
            events.col(column);
        }
        manager.create_table(events).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(StripeEvents::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(PaymentRefunds::Table).to_owned())
            .await
    }
}
