//! What usage billing needs beyond the core schema: the usage segments of a
//! subscription (which plan, at which price, running or stopped, from when to
//! when), how far each subscription has been charged, and the ledger's
//! idempotency key, which makes a retried or concurrent billing run unable to
//! record the same charge twice.

use sea_orm_migration::prelude::*;

use super::timestamp_columns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum UsageSegments {
    Table,
    Id,
    SubscriptionId,
    ProductId,
    Running,
    HourlyMinor,
    MonthlyMinor,
    Currency,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    Id,
    AccruedUntil,
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    IdempotencyKey,
    UsageHour,
}

const SEGMENTS_INDEX: &str = "idx_usage_segments_subscription_id_started_at";
const KEY_INDEX: &str = "uq_transactions_idempotency_key";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(UsageSegments::Table)
            .col(
                ColumnDef::new(UsageSegments::Id)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(UsageSegments::SubscriptionId)
                    .uuid()
                    .not_null(),
            )
            .col(ColumnDef::new(UsageSegments::ProductId).uuid().not_null())
            .col(ColumnDef::new(UsageSegments::Running).boolean().not_null())
            .col(
                ColumnDef::new(UsageSegments::HourlyMinor)
                    .big_integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(UsageSegments::MonthlyMinor)
                    .big_integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(UsageSegments::Currency)
                    .string_len(3)
                    .not_null(),
            )
            .col(
                ColumnDef::new(UsageSegments::StartedAt)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .col(ColumnDef::new(UsageSegments::EndedAt).timestamp_with_time_zone())
            .foreign_key(
                ForeignKey::create()
                    .name("fk_usage_segments_subscription_id")
                    .from(UsageSegments::Table, UsageSegments::SubscriptionId)
                    .to(Subscriptions::Table, Subscriptions::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_usage_segments_product_id")
                    .from(UsageSegments::Table, UsageSegments::ProductId)
                    .to(Products::Table, Products::Id)
                    .on_delete(ForeignKeyAction::NoAction),
            );
        for column in timestamp_columns() {
            table.col(column);
        }
        manager.create_table(table).await?;
        manager
            .create_index(
                Index::create()
                    .name(SEGMENTS_INDEX)
                    .table(UsageSegments::Table)
                    .col(UsageSegments::SubscriptionId)
                    .col(UsageSegments::StartedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Subscriptions::Table)
                    .add_column(
                        ColumnDef::new(Subscriptions::AccruedUntil)
                            .timestamp_with_time_zone()
                            .to_owned(),
                    )
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(Transactions::IdempotencyKey)
                .string_len(160)
                .to_owned(),
            ColumnDef::new(Transactions::UsageHour)
                .timestamp_with_time_zone()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Transactions::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // Rows without a key are NULL, and NULLs never collide.
        manager
            .create_index(
                Index::create()
                    .name(KEY_INDEX)
                    .table(Transactions::Table)
                    .col(Transactions::IdempotencyKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(KEY_INDEX)
                    .table(Transactions::Table)
                    .to_owned(),
            )
            .await?;
        for column in [Transactions::IdempotencyKey, Transactions::UsageHour] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Transactions::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .alter_table(
                Table::alter()
                    .table(Subscriptions::Table)
                    .drop_column(Subscriptions::AccruedUntil)
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(UsageSegments::Table).to_owned())
            .await
    }
}
