//! Files attached to support tickets. The bytes live under the data dir; the
//! table holds what a download needs to be authorised and served: the
//! ticket, who uploaded it, its name, its type as its content proved it, and
//! its size.

use sea_orm_migration::prelude::*;

use super::timestamp_columns;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TicketAttachments {
    Table,
    Id,
    TicketId,
    UploadedBy,
    FileName,
    ContentType,
    SizeBytes,
    Sha256,
}

#[derive(DeriveIden)]
enum SupportTickets {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

const TICKET_INDEX: &str = "idx_ticket_attachments_ticket_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut table = Table::create();
        table
            .table(TicketAttachments::Table)
            .col(
                ColumnDef::new(TicketAttachments::Id)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(TicketAttachments::TicketId)
                    .uuid()
                    .not_null(),
            )
            .col(
                ColumnDef::new(TicketAttachments::UploadedBy)
                    .uuid()
                    .not_null(),
            )
            .col(
                ColumnDef::new(TicketAttachments::FileName)
                    .string_len(255)
                    .not_null(),
            )
            .col(
                ColumnDef::new(TicketAttachments::ContentType)
                    .string_len(100)
                    .not_null(),
            )
            .col(
                ColumnDef::new(TicketAttachments::SizeBytes)
                    .big_integer()
                    .not_null(),
            )
            .col(
                ColumnDef::new(TicketAttachments::Sha256)
                    .string_len(64)
                    .not_null(),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_ticket_attachments_ticket_id")
                    .from(TicketAttachments::Table, TicketAttachments::TicketId)
                    .to(SupportTickets::Table, SupportTickets::Id)
                    .on_delete(ForeignKeyAction::Cascade),
            )
            .foreign_key(
                ForeignKey::create()
                    .name("fk_ticket_attachments_uploaded_by")
                    .from(TicketAttachments::Table, TicketAttachments::UploadedBy)
                    .to(Users::Table, Users::Id)
                    .on_delete(ForeignKeyAction::NoAction),
            );
        for column in timestamp_columns() {
            table.col(column);
        }
        manager.create_table(table).await?;
        manager
            .create_index(
                Index::create()
                    .name(TICKET_INDEX)
                    .table(TicketAttachments::Table)
                    .col(TicketAttachments::TicketId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TicketAttachments::Table).to_owned())
            .await
    }
}
