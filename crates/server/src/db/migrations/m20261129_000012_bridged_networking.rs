//! Bridged networking: a node may put its instances on a host bridge, each
//! with an address of its own from the region's pool, which also says which
//! name servers the guest should use.

use sea_orm_migration::prelude::*;

use super::{add_column, drop_column};

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
        // Linux interface names have at most 15 characters.
        let bridge = ColumnDef::new(Nodes::Bridge)
            .string_len(15)
            .null()
            .to_owned();
        add_column(manager, Nodes::Table, bridge).await?;
        // A JSON array of addresses.
        let nameservers = ColumnDef::new(IpAddresses::Nameservers)
            .text()
            .null()
            .to_owned();
        add_column(manager, IpAddresses::Table, nameservers).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        drop_column(manager, IpAddresses::Table, IpAddresses::Nameservers).await?;
        drop_column(manager, Nodes::Table, Nodes::Bridge).await
    }
}
