//! Overcommit ratios per node, as percentages: 400 lets a node sell four
//! vCPUs per physical thread.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    CpuOvercommitPct,
    MemoryOvercommitPct,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [Nodes::CpuOvercommitPct, Nodes::MemoryOvercommitPct] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Nodes::Table)
                        .add_column(ColumnDef::new(column).integer().not_null().default(100))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [Nodes::CpuOvercommitPct, Nodes::MemoryOvercommitPct] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Nodes::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
