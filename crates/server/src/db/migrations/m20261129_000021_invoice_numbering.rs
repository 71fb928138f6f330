//! Gapless invoice numbers: one counter row per year, incremented in the
//! write transaction that issues the invoice, so a number is taken exactly
//! when an invoice commits. One invoice per account, currency and period,
//! so two billing runs cannot both invoice the same month.

use sea_orm_migration::prelude::*;

use super::timestamp_columns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum InvoiceCounters {
    Table,
    Year,
    LastNumber,
}

#[derive(DeriveIden)]
enum Invoices {
    Table,
    UserId,
    Currency,
    PeriodStart,
    PeriodEnd,
}

const PERIOD_INDEX: &str = "uq_invoices_user_id_currency_period";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(InvoiceCounters::Table)
            .col(
                ColumnDef::new(InvoiceCounters::Year)
                    .integer()
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(InvoiceCounters::LastNumber)
                    .big_integer()
                    .not_null(),
            );
        for column in timestamp_columns() {
            table.col(column);
        }
        manager.create_table(table).await?;
        manager
            .create_index(
                Index::create()
                    .name(PERIOD_INDEX)
                    .table(Invoices::Table)
                    .col(Invoices::UserId)
                    .col(Invoices::Currency)
                    .col(Invoices::PeriodStart)
                    .col(Invoices::PeriodEnd)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(PERIOD_INDEX)
                    .table(Invoices::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(InvoiceCounters::Table).to_owned())
            .await
    }
}
