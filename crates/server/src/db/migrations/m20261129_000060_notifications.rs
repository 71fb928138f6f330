//! What notifications need beyond the core table: a key that makes a
//! notice idempotent (provisioning retried after it reported success must not
//! notify twice), and the per-user opt-outs of optional emails.

use sea_orm_migration::prelude::*;

use super::{add_column, drop_column};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Notifications {
    Table,
    UserId,
    DedupeKey,
}

#[derive(DeriveIden)]
enum NotificationOptOuts {
    Table,
    UserId,
    Kind,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

const DEDUPE_INDEX: &str = "uq_notifications_user_id_dedupe_key";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        add_column(
            manager,
            Notifications::Table,
            ColumnDef::new(Notifications::DedupeKey)
                .string_len(160)
                .to_owned(),
        )
        .await?;
        // NULL keys never collide, on SQLite as on PostgreSQL.
        manager
            .create_index(
                Index::create()
                    .name(DEDUPE_INDEX)
                    .table(Notifications::Table)
                    .col(Notifications::UserId)
                    .col(Notifications::DedupeKey)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(NotificationOptOuts::Table)
                    .col(
                        ColumnDef::new(NotificationOptOuts::UserId)
                            .uuid()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationOptOuts::Kind)
                            .string_len(32)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(NotificationOptOuts::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .primary_key(
                        Index::create()
                            .col(NotificationOptOuts::UserId)
                            .col(NotificationOptOuts::Kind),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_notification_opt_outs_user_id")
                            .from(NotificationOptOuts::Table, NotificationOptOuts::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NotificationOptOuts::Table).to_owned())
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name(DEDUPE_INDEX)
                    .table(Notifications::Table)
                    .to_owned(),
            )
            .await?;
        drop_column(manager, Notifications::Table, Notifications::DedupeKey).await
    }
}
