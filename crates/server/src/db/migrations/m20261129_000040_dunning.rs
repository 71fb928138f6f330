//! Dunning: one case per account while it has overdue invoices, recording
//! which steps were taken (past due, suspended, warned, terminated) so a
//! step is taken once whatever the number of billing passes. `open_user_id`
//! is the account while the case is open and NULL once resolved: its unique
//! index allows one open case per account on both backends.

use sea_orm_migration::prelude::*;

use super::{fk, index, timestamp_columns, unique};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DunningCases {
    Table,
    Id,
    UserId,
    OpenUserId,
    OverdueSince,
    PastDueAt,
    SuspendedAt,
    WarnedAt,
    TerminatedAt,
    ResolvedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
}

const OPEN_INDEX: &str = "uq_dunning_cases_open_user_id";
const USER_INDEX: &str = "idx_dunning_cases_user_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(DunningCases::Table)
            .col(
                ColumnDef::new(DunningCases::Id)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(ColumnDef::new(DunningCases::UserId).uuid().not_null())
            .col(ColumnDef::new(DunningCases::OpenUserId).uuid())
            .col(
                ColumnDef::new(DunningCases::OverdueSince)
                    .timestamp_with_time_zone()
                    .not_null(),
            )
            .col(ColumnDef::new(DunningCases::PastDueAt).timestamp_with_time_zone())
            .col(ColumnDef::new(DunningCases::SuspendedAt).timestamp_with_time_zone())
            .col(ColumnDef::new(DunningCases::WarnedAt).timestamp_with_time_zone())
            .col(ColumnDef::new(DunningCases::TerminatedAt).timestamp_with_time_zone())
            .col(ColumnDef::new(DunningCases::ResolvedAt).timestamp_with_time_zone())
            .foreign_key(&mut fk(
                "fk_dunning_cases_user_id",
                DunningCases::Table,
                DunningCases::UserId,
                Users::Table,
                ForeignKeyAction::NoAction,
            ));
        for column in timestamp_columns() {
            table.col(column);
        }
        manager.create_table(table).await?;
        manager
            .create_index(unique(
                OPEN_INDEX,
                DunningCases::Table,
                [DunningCases::OpenUserId],
            ))
            .await?;
        manager
            .create_index(index(
                USER_INDEX,
                DunningCases::Table,
                [DunningCases::UserId],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DunningCases::Table).to_owned())
            .await
    }
}
