//! Recovery codes are stored as salted argon2id PHC strings (about 100
//! characters) instead of 64 hex digits of SHA-256. SQLite does not enforce
//! a `varchar` length, so only PostgreSQL's column is widened.

use sea_orm::DatabaseBackend;
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum RecoveryCodes {
    Table,
    CodeHash,
}

async fn set_code_hash_length(manager: &SchemaManager<'_>, length: u32) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(());
    }
    manager
        .alter_table(
            Table::alter()
                .table(RecoveryCodes::Table)
                .modify_column(
                    ColumnDef::new(RecoveryCodes::CodeHash)
                        .string_len(length)
                        .not_null(),
                )
                .to_owned(),
        )
        .await
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set_code_hash_length(manager, 255).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Salted hashes do not fit back: they go, and the accounts make new codes.
        if manager.get_database_backend() == DatabaseBackend::Postgres {
            manager
                .get_connection()
                .execute_unprepared("DELETE FROM recovery_codes WHERE length(code_hash) > 64")
                .await?;
        }
        set_code_hash_length(manager, 64).await
    }
}
