//! The email outbox: every message the platform sends is written here first
//! and delivered by a job, so a crash never loses one, and with no SMTP
//! server configured it is where admins read them.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Emails {
    Table,
    Id,
    UserId,
    ToAddress,
    Subject,
    BodyText,
    Kind,
    Status,
    Attempts,
    LastError,
    SentAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Emails::Table)
                    .col(ColumnDef::new(Emails::Id).uuid().not_null().primary_key())
                    .col(ColumnDef::new(Emails::UserId).uuid())
                    .col(ColumnDef::new(Emails::ToAddress).string_len(320).not_null())
                    .col(ColumnDef::new(Emails::Subject).string_len(200).not_null())
                    .col(ColumnDef::new(Emails::BodyText).text())
                    .col(ColumnDef::new(Emails::Kind).string_len(32).not_null())
                    .col(ColumnDef::new(Emails::Status).string_len(32).not_null())
                    .col(ColumnDef::new(Emails::Attempts).integer().not_null())
                    .col(ColumnDef::new(Emails::LastError).text())
                    .col(ColumnDef::new(Emails::SentAt).timestamp_with_time_zone())
                    .col(
                        ColumnDef::new(Emails::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(Emails::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_emails_user_id")
                            .from(Emails::Table, Emails::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::SetNull),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_emails_to_address")
                    .table(Emails::Table)
                    .col(Emails::ToAddress)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_emails_status")
                    .table(Emails::Table)
                    .col(Emails::Status)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(Emails::Table).to_owned())
            .await
    }
}
