//! Versioned schema migrations. They only ever add: SQLite cannot drop
//! constraints, and a migration that has shipped is never edited.

use sea_orm_migration::prelude::*;

mod m20261125_000001_core_schema;
mod m20261125_000002_job_queue;
mod m20261125_000005_one_time_tokens;
mod m20261125_000006_two_factor;
mod m20261125_000007_email_outbox;
mod m20261125_000008_node_overcommit;
mod m20261125_000009_instance_lifecycle;
mod m20261125_000010_instance_metric_resolution;
mod m20261125_000011_instance_list_index;
mod m20261129_000012_bridged_networking;
mod m20261129_000020_billing_usage;
mod m20261129_000021_invoice_numbering;
mod m20261129_000030_payments;
mod m20261129_000040_dunning;
mod m20261129_000041_coupons;
mod m20261129_000050_ticket_attachments;
mod m20261129_000060_notifications;
mod m20261129_000080_accrued_month;
mod m20261203_000090_salted_recovery_codes;

/// `created_at` and `updated_at`, as every table has them.
fn timestamp_columns() -> [ColumnDef; 2] {
    #[derive(DeriveIden)]
    enum Stamps {
        CreatedAt,
        UpdatedAt,
    }
    [Stamps::CreatedAt, Stamps::UpdatedAt].map(|column| {
        ColumnDef::new(column)
            .timestamp_with_time_zone()
            .not_null()
            .to_owned()
    })
}

/// Adds one column (SQLite alters one column per statement).
async fn add_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: ColumnDef,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).add_column(column).to_owned())
        .await
}

async fn drop_column(
    manager: &SchemaManager<'_>,
    table: impl IntoIden,
    column: impl IntoIden,
) -> Result<(), DbErr> {
    manager
        .alter_table(Table::alter().table(table).drop_column(column).to_owned())
        .await
}

/// A foreign key named `fk_<table>_<column>`, as PostgreSQL wants constraint
/// names unique per table and error messages should say which one fired.
fn fk<F, FC, T>(
    name: &str,
    from: F,
    from_col: FC,
    to: T,
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement
where
    F: IntoIden,
    FC: IntoIden,
    T: IntoIden,
{
    ForeignKey::create()
        .name(name)
        .from(from, from_col)
        .to(to, Alias::new("id"))
        .on_delete(on_delete)
        .take()
}

fn index<T, C, I>(name: &str, table: T, cols: I) -> IndexCreateStatement
where
    T: IntoIden,
    C: IntoIndexColumn,
    I: IntoIterator<Item = C>,
{
    let mut stmt = Index::create().name(name).table(table).take();
    for col in cols {
        stmt.col(col);
    }
    stmt
}

fn unique<T, C, I>(name: &str, table: T, cols: I) -> IndexCreateStatement
where
    T: IntoIden,
    C: IntoIndexColumn,
    I: IntoIterator<Item = C>,
{
    index(name, table, cols).unique().take()
}

#[derive(Debug)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_core_schema::Migration),
            Box::new(m20261125_000002_job_queue::Migration),
            Box::new(m20261125_000005_one_time_tokens::Migration),
            Box::new(m20261125_000006_two_factor::Migration),
            Box::new(m20261125_000007_email_outbox::Migration),
            Box::new(m20261125_000008_node_overcommit::Migration),
            Box::new(m20261125_000009_instance_lifecycle::Migration),
            Box::new(m20261125_000010_instance_metric_resolution::Migration),
            Box::new(m20261125_000011_instance_list_index::Migration),
            Box::new(m20261129_000012_bridged_networking::Migration),
            Box::new(m20261129_000020_billing_usage::Migration),
            Box::new(m20261129_000021_invoice_numbering::Migration),
            Box::new(m20261129_000030_payments::Migration),
            Box::new(m20261129_000040_dunning::Migration),
            Box::new(m20261129_000041_coupons::Migration),
            Box::new(m20261129_000050_ticket_attachments::Migration),
            Box::new(m20261129_000060_notifications::Migration),
            Box::new(m20261129_000080_accrued_month::Migration),
            Box::new(m20261203_000090_salted_recovery_codes::Migration),
        ]
    }
}
