//! The core schema: accounts, catalogue, infrastructure, instances, billing,
//! support, audit and settings.
//!
//! Built with the schema builder only, so the same statements run on SQLite
//! and PostgreSQL. Foreign keys are declared inside `CREATE TABLE` because
//! SQLite cannot add them later; tables are therefore created parents first.
//! Enum-like columns are short strings rather than native PostgreSQL enums:
//! one code path, and a new variant never needs an `ALTER TYPE`.
//!
//! Parents that must outlive their children (a user with invoices, a region
//! with nodes) use `NO ACTION` rather than `RESTRICT`: with immediate
//! constraints both refuse the delete, but SQLite reports a `RESTRICT`
//! violation as a trigger error that `DbErr::sql_err()` does not recognise,
//! while `NO ACTION` yields `SqlErr::ForeignKeyConstraintViolation` on both
//! backends.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    boolean, double, integer, json_binary, small_integer, string_len, string_len_null,
    string_len_uniq, text, text_null, timestamp_with_time_zone, timestamp_with_time_zone_null,
    uuid, uuid_null,
};

use super::{fk, index, unique};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Width of every enum-like column (`status`, `role`, `kind`, …).
const ENUM_LEN: u32 = 32;
/// Longest textual IPv6 address, including an embedded IPv4 tail.
const IP_LEN: u32 = 45;
const NAME_LEN: u32 = 200;
const SLUG_LEN: u32 = 64;
const CURRENCY_LEN: u32 = 3;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    Name,
    PasswordHash,
    Role,
    Status,
    EmailVerifiedAt,
    TotpSecret,
    TotpEnabledAt,
    FailedLoginCount,
    LockedUntil,
    LastLoginAt,
    Locale,
    Country,
    Company,
    VatId,
    DeletedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    Id,
    UserId,
    FamilyId,
    TokenHash,
    UserAgent,
    Ip,
    ExpiresAt,
    UsedAt,
    RevokedAt,
    ImpersonatorId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    UserId,
    Name,
    TokenHash,
    TokenPrefix,
    Scope,
    ExpiresAt,
    LastUsedAt,
    RevokedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SshKeys {
    Table,
    Id,
    UserId,
    Name,
    PublicKey,
    KeyType,
    Fingerprint,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Regions {
    Table,
    Id,
    Slug,
    Name,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Products {
    Table,
    Id,
    Slug,
    Name,
    Description,
    Vcpus,
    MemoryMib,
    DiskGib,
    TransferGib,
    PriceMonthlyMinor,
    PriceHourlyMinor,
    SetupFeeMinor,
    Currency,
    Active,
    Hidden,
    SortOrder,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ProductRegions {
    Table,
    ProductId,
    RegionId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Images {
    Table,
    Id,
    Slug,
    Name,
    OsFamily,
    OsVersion,
    DefaultUser,
    MinDiskGib,
    SourceUrl,
    FilePath,
    Checksum,
    SizeBytes,
    Status,
    StatusReason,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Nodes {
    Table,
    Id,
    Name,
    RegionId,
    Driver,
    Uri,
    Status,
    Accelerator,
    VcpusTotal,
    MemoryMibTotal,
    DiskGibTotal,
    LastSeenAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Instances {
    Table,
    Id,
    UserId,
    ProductId,
    RegionId,
    ImageId,
    NodeId,
    Name,
    Hostname,
    Status,
    StatusReason,
    Vcpus,
    MemoryMib,
    DiskGib,
    SshPort,
    Ipv4,
    UserData,
    IdempotencyKey,
    DeletedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum IpAddresses {
    Table,
    Id,
    RegionId,
    NodeId,
    Address,
    Version,
    PrefixLen,
    Gateway,
    InstanceId,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Subscriptions {
    Table,
    Id,
    UserId,
    InstanceId,
    ProductId,
    Status,
    CurrentPeriodStart,
    CurrentPeriodEnd,
    CancelledAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Invoices {
    Table,
    Id,
    UserId,
    Number,
    Status,
    Currency,
    SubtotalMinor,
    TaxMinor,
    TotalMinor,
    TaxRateBasisPoints,
    ReverseCharge,
    PeriodStart,
    PeriodEnd,
    IssuedAt,
    DueAt,
    PaidAt,
    VoidedAt,
    BillingSnapshot,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum InvoiceLines {
    Table,
    Id,
    InvoiceId,
    InstanceId,
    Description,
    Quantity,
    UnitAmountMinor,
    AmountMinor,
    PeriodStart,
    PeriodEnd,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Transactions {
    Table,
    Id,
    UserId,
    Kind,
    AmountMinor,
    Currency,
    InvoiceId,
    InstanceId,
    Provider,
    ProviderRef,
    Description,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SupportTickets {
    Table,
    Id,
    UserId,
    InstanceId,
    AssigneeId,
    Subject,
    Category,
    Priority,
    Status,
    FirstResponseAt,
    ResolvedAt,
    ClosedAt,
    LastMessageAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum TicketMessages {
    Table,
    Id,
    TicketId,
    AuthorId,
    Body,
    Internal,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AuditLogs {
    Table,
    Id,
    ActorId,
    ImpersonatorId,
    Action,
    ObjectType,
    ObjectId,
    Ip,
    UserAgent,
    RequestId,
    Details,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Settings {
    Table,
    Key,
    Value,
    UpdatedBy,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Notifications {
    Table,
    Id,
    UserId,
    Kind,
    Title,
    Body,
    Link,
    ReadAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum InstanceMetrics {
    Table,
    Id,
    InstanceId,
    SampledAt,
    CpuPercent,
    MemoryUsedMib,
    DiskReadBytes,
    DiskWriteBytes,
    NetRxBytes,
    NetTxBytes,
    CreatedAt,
    UpdatedAt,
}

/// A `bigint` column (SeaORM's `big_integer`), not null.
fn bigint<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().not_null().take()
}

fn bigint_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).big_integer().null().take()
}

fn integer_null<T: IntoIden>(col: T) -> ColumnDef {
    ColumnDef::new(col).integer().null().take()
}

fn users() -> TableCreateStatement {
    Table::create()
        .table(Users::Table)
        .col(uuid(Users::Id).primary_key())
        // Unique on the normalised (lowercase) form the entity stores.
        .col(string_len_uniq(Users::Email, 320))
        .col(string_len(Users::Name, NAME_LEN))
        .col(string_len(Users::PasswordHash, 255))
        .col(string_len(Users::Role, ENUM_LEN))
        .col(string_len(Users::Status, ENUM_LEN))
        .col(timestamp_with_time_zone_null(Users::EmailVerifiedAt))
        .col(string_len_null(Users::TotpSecret, 255))
        .col(timestamp_with_time_zone_null(Users::TotpEnabledAt))
        .col(integer(Users::FailedLoginCount).default(0))
        .col(timestamp_with_time_zone_null(Users::LockedUntil))
        .col(timestamp_with_time_zone_null(Users::LastLoginAt))
        .col(string_len(Users::Locale, 16).default("en"))
        .col(string_len_null(Users::Country, 2))
        .col(string_len_null(Users::Company, NAME_LEN))
        .col(string_len_null(Users::VatId, 32))
        .col(timestamp_with_time_zone_null(Users::DeletedAt))
        .col(timestamp_with_time_zone(Users::CreatedAt))
        .col(timestamp_with_time_zone(Users::UpdatedAt))
        .take()
}

fn refresh_tokens() -> TableCreateStatement {
    Table::create()
        .table(RefreshTokens::Table)
        .col(uuid(RefreshTokens::Id).primary_key())
        .col(uuid(RefreshTokens::UserId))
        .col(uuid(RefreshTokens::FamilyId))
        .col(string_len_uniq(RefreshTokens::TokenHash, 128))
        .col(text_null(RefreshTokens::UserAgent))
        .col(string_len_null(RefreshTokens::Ip, IP_LEN))
        .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
        .col(timestamp_with_time_zone_null(RefreshTokens::UsedAt))
        .col(timestamp_with_time_zone_null(RefreshTokens::RevokedAt))
        .col(uuid_null(RefreshTokens::ImpersonatorId))
        .col(timestamp_with_time_zone(RefreshTokens::CreatedAt))
        .col(timestamp_with_time_zone(RefreshTokens::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_refresh_tokens_user_id",
            RefreshTokens::Table,
            RefreshTokens::UserId,
            Users::Table,
            ForeignKeyAction::Cascade,
        ))
        .foreign_key(&mut fk(
            "fk_refresh_tokens_impersonator_id",
            RefreshTokens::Table,
            RefreshTokens::ImpersonatorId,
            Users::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn api_tokens() -> TableCreateStatement {
    Table::create()
        .table(ApiTokens::Table)
        .col(uuid(ApiTokens::Id).primary_key())
        .col(uuid(ApiTokens::UserId))
        .col(string_len(ApiTokens::Name, NAME_LEN))
        .col(string_len_uniq(ApiTokens::TokenHash, 128))
        .col(string_len(ApiTokens::TokenPrefix, 16))
        .col(string_len(ApiTokens::Scope, ENUM_LEN))
        .col(timestamp_with_time_zone_null(ApiTokens::ExpiresAt))
        .col(timestamp_with_time_zone_null(ApiTokens::LastUsedAt))
        .col(timestamp_with_time_zone_null(ApiTokens::RevokedAt))
        .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
        .col(timestamp_with_time_zone(ApiTokens::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_api_tokens_user_id",
            ApiTokens::Table,
            ApiTokens::UserId,
            Users::Table,
            ForeignKeyAction::Cascade,
        ))
        .take()
}

fn ssh_keys() -> TableCreateStatement {
    Table::create()
        .table(SshKeys::Table)
        .col(uuid(SshKeys::Id).primary_key())
        .col(uuid(SshKeys::UserId))
        .col(string_len(SshKeys::Name, NAME_LEN))
        .col(text(SshKeys::PublicKey))
        .col(string_len(SshKeys::KeyType, 64))
        .col(string_len(SshKeys::Fingerprint, 128))
        .col(timestamp_with_time_zone(SshKeys::CreatedAt))
        .col(timestamp_with_time_zone(SshKeys::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_ssh_keys_user_id",
            SshKeys::Table,
            SshKeys::UserId,
            Users::Table,
            ForeignKeyAction::Cascade,
        ))
        .take()
}

fn regions() -> TableCreateStatement {
    Table::create()
        .table(Regions::Table)
        .col(uuid(Regions::Id).primary_key())
        .col(string_len_uniq(Regions::Slug, SLUG_LEN))
        .col(string_len(Regions::Name, NAME_LEN))
        .col(boolean(Regions::Active).default(true))
        .col(timestamp_with_time_zone(Regions::CreatedAt))
        .col(timestamp_with_time_zone(Regions::UpdatedAt))
        .take()
}

fn products() -> TableCreateStatement {
    Table::create()
        .table(Products::Table)
        .col(uuid(Products::Id).primary_key())
        .col(string_len_uniq(Products::Slug, SLUG_LEN))
        .col(string_len(Products::Name, NAME_LEN))
        .col(text_null(Products::Description))
        .col(integer(Products::Vcpus))
        .col(integer(Products::MemoryMib))
        .col(integer(Products::DiskGib))
        .col(integer(Products::TransferGib))
        .col(bigint(Products::PriceMonthlyMinor))
        .col(bigint(Products::PriceHourlyMinor))
        .col(bigint(Products::SetupFeeMinor).default(0))
        .col(string_len(Products::Currency, CURRENCY_LEN))
        .col(boolean(Products::Active))
        .col(boolean(Products::Hidden))
        .col(integer(Products::SortOrder))
        .col(timestamp_with_time_zone(Products::CreatedAt))
        .col(timestamp_with_time_zone(Products::UpdatedAt))
        .take()
}

fn product_regions() -> TableCreateStatement {
    Table::create()
        .table(ProductRegions::Table)
        .col(uuid(ProductRegions::ProductId))
        .col(uuid(ProductRegions::RegionId))
        .col(timestamp_with_time_zone(ProductRegions::CreatedAt))
        .primary_key(
            Index::create()
                .name("pk_product_regions")
                .col(ProductRegions::ProductId)
                .col(ProductRegions::RegionId),
        )
        .foreign_key(&mut fk(
            "fk_product_regions_product_id",
            ProductRegions::Table,
            ProductRegions::ProductId,
            Products::Table,
            ForeignKeyAction::Cascade,
        ))
        .foreign_key(&mut fk(
            "fk_product_regions_region_id",
            ProductRegions::Table,
            ProductRegions::RegionId,
            Regions::Table,
            ForeignKeyAction::Cascade,
        ))
        .take()
}

fn images() -> TableCreateStatement {
    Table::create()
        .table(Images::Table)
        .col(uuid(Images::Id).primary_key())
        .col(string_len_uniq(Images::Slug, SLUG_LEN))
        .col(string_len(Images::Name, NAME_LEN))
        .col(string_len(Images::OsFamily, 32))
        .col(string_len(Images::OsVersion, 32))
        .col(string_len(Images::DefaultUser, 32))
        .col(integer(Images::MinDiskGib))
        .col(text_null(Images::SourceUrl))
        .col(text_null(Images::FilePath))
        .col(string_len_null(Images::Checksum, 160))
        .col(bigint_null(Images::SizeBytes))
        .col(string_len(Images::Status, ENUM_LEN))
        .col(text_null(Images::StatusReason))
        .col(boolean(Images::Active))
        .col(timestamp_with_time_zone(Images::CreatedAt))
        .col(timestamp_with_time_zone(Images::UpdatedAt))
        .take()
}

fn nodes() -> TableCreateStatement {
    Table::create()
        .table(Nodes::Table)
        .col(uuid(Nodes::Id).primary_key())
        .col(string_len_uniq(Nodes::Name, NAME_LEN))
        .col(uuid(Nodes::RegionId))
        .col(string_len(Nodes::Driver, ENUM_LEN))
        .col(text(Nodes::Uri))
        .col(string_len(Nodes::Status, ENUM_LEN))
        .col(string_len_null(Nodes::Accelerator, ENUM_LEN))
        .col(integer(Nodes::VcpusTotal))
        .col(bigint(Nodes::MemoryMibTotal))
        .col(bigint(Nodes::DiskGibTotal))
        .col(timestamp_with_time_zone_null(Nodes::LastSeenAt))
        .col(timestamp_with_time_zone(Nodes::CreatedAt))
        .col(timestamp_with_time_zone(Nodes::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_nodes_region_id",
            Nodes::Table,
            Nodes::RegionId,
            Regions::Table,
            ForeignKeyAction::NoAction,
        ))
        .take()
}

fn instances() -> TableCreateStatement {
    Table::create()
        .table(Instances::Table)
        .col(uuid(Instances::Id).primary_key())
        .col(uuid(Instances::UserId))
        .col(uuid(Instances::ProductId))
        .col(uuid(Instances::RegionId))
        .col(uuid(Instances::ImageId))
        .col(uuid_null(Instances::NodeId))
        .col(string_len(Instances::Name, NAME_LEN))
        .col(string_len(Instances::Hostname, 253))
        .col(string_len(Instances::Status, ENUM_LEN))
        .col(text_null(Instances::StatusReason))
        .col(integer(Instances::Vcpus))
        .col(integer(Instances::MemoryMib))
        .col(integer(Instances::DiskGib))
        .col(integer_null(Instances::SshPort))
        .col(string_len_null(Instances::Ipv4, IP_LEN))
        .col(text_null(Instances::UserData))
        .col(string_len_null(Instances::IdempotencyKey, 255))
        .col(timestamp_with_time_zone_null(Instances::DeletedAt))
        .col(timestamp_with_time_zone(Instances::CreatedAt))
        .col(timestamp_with_time_zone(Instances::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_instances_user_id",
            Instances::Table,
            Instances::UserId,
            Users::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_instances_product_id",
            Instances::Table,
            Instances::ProductId,
            Products::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_instances_region_id",
            Instances::Table,
            Instances::RegionId,
            Regions::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_instances_image_id",
            Instances::Table,
            Instances::ImageId,
            Images::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_instances_node_id",
            Instances::Table,
            Instances::NodeId,
            Nodes::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn ip_addresses() -> TableCreateStatement {
    Table::create()
        .table(IpAddresses::Table)
        .col(uuid(IpAddresses::Id).primary_key())
        .col(uuid(IpAddresses::RegionId))
        .col(uuid_null(IpAddresses::NodeId))
        .col(string_len_uniq(IpAddresses::Address, IP_LEN))
        .col(small_integer(IpAddresses::Version))
        .col(integer(IpAddresses::PrefixLen))
        .col(string_len_null(IpAddresses::Gateway, IP_LEN))
        // One address per instance, and an address serves one instance.
        .col(uuid_null(IpAddresses::InstanceId).unique_key())
        .col(timestamp_with_time_zone(IpAddresses::CreatedAt))
        .col(timestamp_with_time_zone(IpAddresses::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_ip_addresses_region_id",
            IpAddresses::Table,
            IpAddresses::RegionId,
            Regions::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_ip_addresses_node_id",
            IpAddresses::Table,
            IpAddresses::NodeId,
            Nodes::Table,
            ForeignKeyAction::SetNull,
        ))
        .foreign_key(&mut fk(
            "fk_ip_addresses_instance_id",
            IpAddresses::Table,
            IpAddresses::InstanceId,
            Instances::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn subscriptions() -> TableCreateStatement {
    Table::create()
        .table(Subscriptions::Table)
        .col(uuid(Subscriptions::Id).primary_key())
        .col(uuid(Subscriptions::UserId))
        .col(uuid_null(Subscriptions::InstanceId).unique_key())
        .col(uuid(Subscriptions::ProductId))
        .col(string_len(Subscriptions::Status, ENUM_LEN))
        .col(timestamp_with_time_zone(Subscriptions::CurrentPeriodStart))
        .col(timestamp_with_time_zone(Subscriptions::CurrentPeriodEnd))
        .col(timestamp_with_time_zone_null(Subscriptions::CancelledAt))
        .col(timestamp_with_time_zone(Subscriptions::CreatedAt))
        .col(timestamp_with_time_zone(Subscriptions::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_subscriptions_user_id",
            Subscriptions::Table,
            Subscriptions::UserId,
            Users::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_subscriptions_instance_id",
            Subscriptions::Table,
            Subscriptions::InstanceId,
            Instances::Table,
            ForeignKeyAction::SetNull,
        ))
        .foreign_key(&mut fk(
            "fk_subscriptions_product_id",
            Subscriptions::Table,
            Subscriptions::ProductId,
            Products::Table,
            ForeignKeyAction::NoAction,
        ))
        .take()
}

fn invoices() -> TableCreateStatement {
    Table::create()
        .table(Invoices::Table)
        .col(uuid(Invoices::Id).primary_key())
        .col(uuid(Invoices::UserId))
        // Null while a draft: numbers are gapless, so one is taken only at issue.
        .col(string_len_null(Invoices::Number, 32).unique_key())
        .col(string_len(Invoices::Status, ENUM_LEN))
        .col(string_len(Invoices::Currency, CURRENCY_LEN))
        .col(bigint(Invoices::SubtotalMinor))
        .col(bigint(Invoices::TaxMinor))
        .col(bigint(Invoices::TotalMinor))
        .col(integer(Invoices::TaxRateBasisPoints))
        .col(boolean(Invoices::ReverseCharge))
        .col(timestamp_with_time_zone(Invoices::PeriodStart))
        .col(timestamp_with_time_zone(Invoices::PeriodEnd))
        .col(timestamp_with_time_zone_null(Invoices::IssuedAt))
        .col(timestamp_with_time_zone_null(Invoices::DueAt))
        .col(timestamp_with_time_zone_null(Invoices::PaidAt))
        .col(timestamp_with_time_zone_null(Invoices::VoidedAt))
        .col(json_binary(Invoices::BillingSnapshot))
        .col(timestamp_with_time_zone(Invoices::CreatedAt))
        .col(timestamp_with_time_zone(Invoices::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_invoices_user_id",
            Invoices::Table,
            Invoices::UserId,
            Users::Table,
            ForeignKeyAction::NoAction,
        ))
        .take()
}

fn invoice_lines() -> TableCreateStatement {
    Table::create()
        .table(InvoiceLines::Table)
        .col(uuid(InvoiceLines::Id).primary_key())
        .col(uuid(InvoiceLines::InvoiceId))
        .col(uuid_null(InvoiceLines::InstanceId))
        .col(text(InvoiceLines::Description))
        .col(bigint(InvoiceLines::Quantity))
        .col(bigint(InvoiceLines::UnitAmountMinor))
        .col(bigint(InvoiceLines::AmountMinor))
        .col(timestamp_with_time_zone_null(InvoiceLines::PeriodStart))
        .col(timestamp_with_time_zone_null(InvoiceLines::PeriodEnd))
        .col(timestamp_with_time_zone(InvoiceLines::CreatedAt))
        .col(timestamp_with_time_zone(InvoiceLines::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_invoice_lines_invoice_id",
            InvoiceLines::Table,
            InvoiceLines::InvoiceId,
            Invoices::Table,
            ForeignKeyAction::Cascade,
        ))
        .foreign_key(&mut fk(
            "fk_invoice_lines_instance_id",
            InvoiceLines::Table,
            InvoiceLines::InstanceId,
            Instances::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn transactions() -> TableCreateStatement {
    Table::create()
        .table(Transactions::Table)
        .col(uuid(Transactions::Id).primary_key())
        .col(uuid(Transactions::UserId))
        .col(string_len(Transactions::Kind, ENUM_LEN))
        .col(bigint(Transactions::AmountMinor))
        .col(string_len(Transactions::Currency, CURRENCY_LEN))
        .col(uuid_null(Transactions::InvoiceId))
        .col(uuid_null(Transactions::InstanceId))
        .col(string_len_null(Transactions::Provider, 32))
        .col(string_len_null(Transactions::ProviderRef, 255))
        .col(text(Transactions::Description))
        .col(uuid_null(Transactions::CreatedBy))
        .col(timestamp_with_time_zone(Transactions::CreatedAt))
        .col(timestamp_with_time_zone(Transactions::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_transactions_user_id",
            Transactions::Table,
            Transactions::UserId,
            Users::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_transactions_invoice_id",
            Transactions::Table,
            Transactions::InvoiceId,
            Invoices::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_transactions_instance_id",
            Transactions::Table,
            Transactions::InstanceId,
            Instances::Table,
            ForeignKeyAction::SetNull,
        ))
        .foreign_key(&mut fk(
            "fk_transactions_created_by",
            Transactions::Table,
            Transactions::CreatedBy,
            Users::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn support_tickets() -> TableCreateStatement {
    Table::create()
        .table(SupportTickets::Table)
        .col(uuid(SupportTickets::Id).primary_key())
        .col(uuid(SupportTickets::UserId))
        .col(uuid_null(SupportTickets::InstanceId))
        .col(uuid_null(SupportTickets::AssigneeId))
        .col(string_len(SupportTickets::Subject, 255))
        .col(string_len(SupportTickets::Category, ENUM_LEN))
        .col(string_len(SupportTickets::Priority, ENUM_LEN))
        .col(string_len(SupportTickets::Status, ENUM_LEN))
        .col(timestamp_with_time_zone_null(
            SupportTickets::FirstResponseAt,
        ))
        .col(timestamp_with_time_zone_null(SupportTickets::ResolvedAt))
        .col(timestamp_with_time_zone_null(SupportTickets::ClosedAt))
        .col(timestamp_with_time_zone(SupportTickets::LastMessageAt))
        .col(timestamp_with_time_zone(SupportTickets::CreatedAt))
        .col(timestamp_with_time_zone(SupportTickets::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_support_tickets_user_id",
            SupportTickets::Table,
            SupportTickets::UserId,
            Users::Table,
            ForeignKeyAction::NoAction,
        ))
        .foreign_key(&mut fk(
            "fk_support_tickets_instance_id",
            SupportTickets::Table,
            SupportTickets::InstanceId,
            Instances::Table,
            ForeignKeyAction::SetNull,
        ))
        .foreign_key(&mut fk(
            "fk_support_tickets_assignee_id",
            SupportTickets::Table,
            SupportTickets::AssigneeId,
            Users::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn ticket_messages() -> TableCreateStatement {
    Table::create()
        .table(TicketMessages::Table)
        .col(uuid(TicketMessages::Id).primary_key())
        .col(uuid(TicketMessages::TicketId))
        .col(uuid(TicketMessages::AuthorId))
        .col(text(TicketMessages::Body))
        .col(boolean(TicketMessages::Internal).default(false))
        .col(timestamp_with_time_zone(TicketMessages::CreatedAt))
        .col(timestamp_with_time_zone(TicketMessages::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_ticket_messages_ticket_id",
            TicketMessages::Table,
            TicketMessages::TicketId,
            SupportTickets::Table,
            ForeignKeyAction::Cascade,
        ))
        .foreign_key(&mut fk(
            "fk_ticket_messages_author_id",
            TicketMessages::Table,
            TicketMessages::AuthorId,
            Users::Table,
            ForeignKeyAction::NoAction,
        ))
        .take()
}

fn audit_logs() -> TableCreateStatement {
    Table::create()
        .table(AuditLogs::Table)
        .col(uuid(AuditLogs::Id).primary_key())
        .col(uuid_null(AuditLogs::ActorId))
        .col(uuid_null(AuditLogs::ImpersonatorId))
        .col(string_len(AuditLogs::Action, 100))
        .col(string_len_null(AuditLogs::ObjectType, 64))
        .col(string_len_null(AuditLogs::ObjectId, 64))
        .col(string_len_null(AuditLogs::Ip, IP_LEN))
        .col(text_null(AuditLogs::UserAgent))
        .col(string_len_null(AuditLogs::RequestId, 64))
        .col(json_binary(AuditLogs::Details))
        .col(timestamp_with_time_zone(AuditLogs::CreatedAt))
        .col(timestamp_with_time_zone(AuditLogs::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_audit_logs_actor_id",
            AuditLogs::Table,
            AuditLogs::ActorId,
            Users::Table,
            ForeignKeyAction::SetNull,
        ))
        .foreign_key(&mut fk(
            "fk_audit_logs_impersonator_id",
            AuditLogs::Table,
            AuditLogs::ImpersonatorId,
            Users::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn settings() -> TableCreateStatement {
    Table::create()
        .table(Settings::Table)
        .col(string_len(Settings::Key, 128).primary_key())
        .col(json_binary(Settings::Value))
        .col(uuid_null(Settings::UpdatedBy))
        .col(timestamp_with_time_zone(Settings::CreatedAt))
        .col(timestamp_with_time_zone(Settings::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_settings_updated_by",
            Settings::Table,
            Settings::UpdatedBy,
            Users::Table,
            ForeignKeyAction::SetNull,
        ))
        .take()
}

fn notifications() -> TableCreateStatement {
    Table::create()
        .table(Notifications::Table)
        .col(uuid(Notifications::Id).primary_key())
        .col(uuid(Notifications::UserId))
        .col(string_len(Notifications::Kind, 64))
        .col(string_len(Notifications::Title, 255))
        .col(text(Notifications::Body))
        .col(text_null(Notifications::Link))
        .col(timestamp_with_time_zone_null(Notifications::ReadAt))
        .col(timestamp_with_time_zone(Notifications::CreatedAt))
        .col(timestamp_with_time_zone(Notifications::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_notifications_user_id",
            Notifications::Table,
            Notifications::UserId,
            Users::Table,
            ForeignKeyAction::Cascade,
        ))
        .take()
}

fn instance_metrics() -> TableCreateStatement {
    Table::create()
        .table(InstanceMetrics::Table)
        .col(uuid(InstanceMetrics::Id).primary_key())
        .col(uuid(InstanceMetrics::InstanceId))
        .col(timestamp_with_time_zone(InstanceMetrics::SampledAt))
        .col(double(InstanceMetrics::CpuPercent))
        .col(bigint(InstanceMetrics::MemoryUsedMib))
        .col(bigint(InstanceMetrics::DiskReadBytes))
        .col(bigint(InstanceMetrics::DiskWriteBytes))
        .col(bigint(InstanceMetrics::NetRxBytes))
        .col(bigint(InstanceMetrics::NetTxBytes))
        .col(timestamp_with_time_zone(InstanceMetrics::CreatedAt))
        .col(timestamp_with_time_zone(InstanceMetrics::UpdatedAt))
        .foreign_key(&mut fk(
            "fk_instance_metrics_instance_id",
            InstanceMetrics::Table,
            InstanceMetrics::InstanceId,
            Instances::Table,
            ForeignKeyAction::Cascade,
        ))
        .take()
}

/// Secondary indexes for the lookups the services make. Composite unique
/// constraints are unique indexes, which both backends create the same way.
fn indexes() -> Vec<IndexCreateStatement> {
    vec![
        index("idx_users_role", Users::Table, [Users::Role]),
        index("idx_users_status", Users::Table, [Users::Status]),
        index(
            "idx_refresh_tokens_user_id",
            RefreshTokens::Table,
            [RefreshTokens::UserId],
        ),
        index(
            "idx_refresh_tokens_family_id",
            RefreshTokens::Table,
            [RefreshTokens::FamilyId],
        ),
        index(
            "idx_api_tokens_user_id",
            ApiTokens::Table,
            [ApiTokens::UserId],
        ),
        unique(
            "uq_ssh_keys_user_id_fingerprint",
            SshKeys::Table,
            [SshKeys::UserId, SshKeys::Fingerprint],
        ),
        index(
            "idx_product_regions_region_id",
            ProductRegions::Table,
            [ProductRegions::RegionId],
        ),
        index("idx_nodes_region_id", Nodes::Table, [Nodes::RegionId]),
        unique(
            "uq_instances_user_id_idempotency_key",
            Instances::Table,
            [Instances::UserId, Instances::IdempotencyKey],
        ),
        index(
            "idx_instances_user_id",
            Instances::Table,
            [Instances::UserId],
        ),
        index(
            "idx_instances_node_id",
            Instances::Table,
            [Instances::NodeId],
        ),
        index(
            "idx_instances_status",
            Instances::Table,
            [Instances::Status],
        ),
        index(
            "idx_ip_addresses_region_id_instance_id",
            IpAddresses::Table,
            [IpAddresses::RegionId, IpAddresses::InstanceId],
        ),
        index(
            "idx_subscriptions_user_id",
            Subscriptions::Table,
            [Subscriptions::UserId],
        ),
        index(
            "idx_subscriptions_status",
            Subscriptions::Table,
            [Subscriptions::Status],
        ),
        index(
            "idx_invoices_user_id_status",
            Invoices::Table,
            [Invoices::UserId, Invoices::Status],
        ),
        index(
            "idx_invoice_lines_invoice_id",
            InvoiceLines::Table,
            [InvoiceLines::InvoiceId],
        ),
        // Also spares PostgreSQL a full scan when an instance is purged and
        // these references are set to null.
        index(
            "idx_invoice_lines_instance_id",
            InvoiceLines::Table,
            [InvoiceLines::InstanceId],
        ),
        index(
            "idx_transactions_instance_id",
            Transactions::Table,
            [Transactions::InstanceId],
        ),
        index(
            "idx_transactions_invoice_id",
            Transactions::Table,
            [Transactions::InvoiceId],
        ),
        index(
            "idx_support_tickets_instance_id",
            SupportTickets::Table,
            [SupportTickets::InstanceId],
        ),
        unique(
            "uq_transactions_provider_provider_ref",
            Transactions::Table,
            [Transactions::Provider, Transactions::ProviderRef],
        ),
        index(
            "idx_transactions_user_id_created_at",
            Transactions::Table,
            [Transactions::UserId, Transactions::CreatedAt],
        ),
        index(
            "idx_support_tickets_user_id_status",
            SupportTickets::Table,
            [SupportTickets::UserId, SupportTickets::Status],
        ),
        index(
            "idx_support_tickets_status",
            SupportTickets::Table,
            [SupportTickets::Status],
        ),
        index(
            "idx_support_tickets_assignee_id",
            SupportTickets::Table,
            [SupportTickets::AssigneeId],
        ),
        index(
            "idx_ticket_messages_ticket_id_created_at",
            TicketMessages::Table,
            [TicketMessages::TicketId, TicketMessages::CreatedAt],
        ),
        index(
            "idx_audit_logs_actor_id_created_at",
            AuditLogs::Table,
            [AuditLogs::ActorId, AuditLogs::CreatedAt],
        ),
        index(
            "idx_audit_logs_object_type_object_id",
            AuditLogs::Table,
            [AuditLogs::ObjectType, AuditLogs::ObjectId],
        ),
        index(
            "idx_audit_logs_action",
            AuditLogs::Table,
            [AuditLogs::Action],
        ),
        index(
            "idx_audit_logs_created_at",
            AuditLogs::Table,
            [AuditLogs::CreatedAt],
        ),
        index(
            "idx_notifications_user_id_read_at",
            Notifications::Table,
            [Notifications::UserId, Notifications::ReadAt],
        ),
        index(
            "idx_instance_metrics_instance_id_sampled_at",
            InstanceMetrics::Table,
            [InstanceMetrics::InstanceId, InstanceMetrics::SampledAt],
        ),
    ]
}

/// Every table, parents before children.
fn tables() -> Vec<TableCreateStatement> {
    vec![
        users(),
        refresh_tokens(),
        api_tokens(),
        ssh_keys(),
        regions(),
        products(),
        product_regions(),
        images(),
        nodes(),
        instances(),
        ip_addresses(),
        subscriptions(),
        invoices(),
        invoice_lines(),
        transactions(),
        support_tickets(),
        ticket_messages(),
        audit_logs(),
        settings(),
        notifications(),
        instance_metrics(),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in tables() {
            manager.create_table(table).await?;
        }
        for index in indexes() {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Children before parents; dropping a table drops its indexes.
        for table in tables().into_iter().rev() {
            let name = table
                .get_table_name()
                .cloned()
                .ok_or_else(|| DbErr::Migration("table statement without a name".into()))?;
            manager
                .drop_table(Table::drop().table(name).to_owned())
                .await?;
        }
        Ok(())
    }
}
