//! A customer's instance list reads their newest rows first, a page at a
//! time: with `(user_id, id)` it walks the index backwards and stops after
//! the page, instead of sorting every instance the customer ever had.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Instances {
    Table,
    UserId,
    Id,
}

const NAME: &str = "idx_instances_user_id_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name(NAME)
                    .table(Instances::Table)
                    .col(Instances::UserId)
                    .col(Instances::Id)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(Index::drop().name(NAME).table(Instances::Table).to_owned())
            .await
    }
}
