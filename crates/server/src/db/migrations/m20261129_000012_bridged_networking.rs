//! Bridged networking: a node may put its instances on a host bridge, each
//! with an address of its own from the region's pool, which also says which
//! name servers the guest should use.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Bridge,
}

#[derive(DeriveIden)]
enum IpAddresses {
    Table,
    Nameservers,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    // Linux interface names have at most 15 characters.
                    .add_column(ColumnDef::new(Nodes::Bridge).string_len(15).null())
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(IpAddresses::Table)
                    // A JSON array of addresses.
                    .add_column(ColumnDef::new(IpAddresses::Nameservers).text().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(IpAddresses::Table)
                    .drop_column(IpAddresses::Nameservers)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Nodes::Table)
                    .drop_column(Nodes::Bridge)
                    .to_owned(),
            )
            .await
    }
}
