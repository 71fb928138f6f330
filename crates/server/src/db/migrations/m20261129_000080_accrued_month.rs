//! The usage a subscription was charged in the month its cursor is in, kept
//! beside the cursor: the monthly cap needs it every hour, and summing the
//! month's ledger rows for that costs a read of up to 744 rows per
//! instance and pass.

use sea_orm_migration::prelude::*;

use super::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    AccruedMonthMinor,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // NULL (rows charged before this column) means: sum the ledger.
        add_column(
            manager,
            Subscriptions::Table,
            ColumnDef::new(Subscriptions::AccruedMonthMinor)
                .big_integer()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_column(
            manager,
            Subscriptions::Table,
            Subscriptions::AccruedMonthMinor,
        )
        .await
    }
}
