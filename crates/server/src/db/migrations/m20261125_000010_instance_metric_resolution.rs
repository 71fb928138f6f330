//! Metric samples are rolled up as they age (raw, then 5-minute, then
//! 1-hour rows): each row says how many seconds it stands for, so the rollup
//! finds the rows still to roll through an index instead of a table scan.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum InstanceMetrics {
    Table,
    ResolutionSecs,
    SampledAt,
}

const INDEX: &str = "idx_instance_metrics_resolution_secs_sampled_at";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(InstanceMetrics::Table)
                    .add_column(
                        ColumnDef::new(InstanceMetrics::ResolutionSecs)
                            .integer()
                            .not_null()
                            // The default sampling interval, for rows written before.
                            .default(10),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(INDEX)
                    .table(InstanceMetrics::Table)
                    .col(InstanceMetrics::ResolutionSecs)
                    .col(InstanceMetrics::SampledAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name(INDEX)
                    .table(InstanceMetrics::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(InstanceMetrics::Table)
                    .drop_column(InstanceMetrics::ResolutionSecs)
                    .to_owned(),
            )
            .await
    }
}
