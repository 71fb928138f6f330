//! What the instance lifecycle needs beyond the core schema: the actions
//! customers and the platform ask of an instance (its per-VM queue, with
//! progress), the lease that lets one worker at a time run them, the SSH keys
//! an instance was created with, and one SSH port per node.

use sea_orm_migration::prelude::*;

use super::timestamp_columns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum InstanceActions {
    Table,
    Id,
    InstanceId,
    Kind,
    Status,
    Params,
    Step,
    TotalSteps,
    StepLabel,
    Error,
    RequestedBy,
    StartedAt,
    FinishedAt,
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    NodeId,
    SshPort,
    SshAuthorizedKeys,
    QueueHolder,
    QueueLeaseUntil,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(InstanceActions::Table)
            .col(
                ColumnDef::new(InstanceActions::Id)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(InstanceActions::InstanceId)
                    .uuid()
                    .not_null(),
            )
            .col(
                ColumnDef::new(InstanceActions::Kind)
                    .string_len(32)
                    .not_null(),
            )
            .col(
                ColumnDef::new(InstanceActions::Status)
                    .string_len(32)
                    .not_null(),
            )
            .col(
                ColumnDef::new(InstanceActions::Params)
                    .json_binary()
                    .not_null(),
            )
            .col(ColumnDef::new(InstanceActions::Step).integer().not_null())
            .col(
                ColumnDef::new(InstanceActions::TotalSteps)
                    .integer()
                    .not_null(),
            )
            .col(ColumnDef::new(InstanceActions::StepLabel).string_len(200))
            .col(ColumnDef::new(InstanceActions::Error).text())
            .col(ColumnDef::new(InstanceActions::RequestedBy).uuid())
            .col(ColumnDef::new(InstanceActions::StartedAt).timestamp_with_time_zone())
            .col(ColumnDef::new(InstanceActions::FinishedAt).timestamp_with_time_zone())
            .foreign_key(
                ForeignKey::create()
                    .name("fk_instance_actions_instance_id")
                    .from(InstanceActions::Table, InstanceActions::InstanceId)
                    .to(Instances::Table, Instances::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_instance_actions_requested_by")
                    .from(InstanceActions::Table, InstanceActions::RequestedBy)
                    .to(Users::Table, Users::Id)
                    .on_delete(ForeignKeyAction::SetNull),
            );
        for column in timestamp_columns() {
            table.col(column);
        }
        manager.create_table(table).await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_instance_actions_instance_id_status")
                    .table(InstanceActions::Table)
                    .col(InstanceActions::InstanceId)
                    .col(InstanceActions::Status)
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for column in [
            ColumnDef::new(Instances::SshAuthorizedKeys)
                .text()
                .to_owned(),
            ColumnDef::new(Instances::QueueHolder).uuid().to_owned(),
            ColumnDef::new(Instances::QueueLeaseUntil)
                .timestamp_with_time_zone()
                .to_owned(),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Instances::Table)
                        .add_column(column)
                        .to_owned(),
                )
                .await?;
        }
        // Released ports are set to NULL, and NULLs never collide.
        manager
            .create_index(
                Index::create()
                    .name("uq_instances_node_id_ssh_port")
                    .table(Instances::Table)
                    .col(Instances::NodeId)
                    .col(Instances::SshPort)
                    .unique()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("uq_instances_node_id_ssh_port")
                    .table(Instances::Table)
                    .to_owned(),
            )
            .await?;
        for column in [
            Instances::SshAuthorizedKeys,
            Instances::QueueHolder,
            Instances::QueueLeaseUntil,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Instances::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        manager
            .drop_table(Table::drop().table(InstanceActions::Table).to_owned())
            .await
    }
}
