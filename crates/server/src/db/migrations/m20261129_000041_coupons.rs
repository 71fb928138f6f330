//! Coupons and their redemptions. A code is stored upper case under a
//! unique index, so codes are unique whatever their case; one redemption per
//! coupon and account.

use sea_orm_migration::prelude::*;

use super::{fk, index, timestamp_columns, unique};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Coupons {
    Table,
    Id,
    Code,
    PercentBasisPoints,
    AmountOffMinor,
    Currency,
    ExpiresAt,
    MaxRedemptions,
    Redemptions,
    PlanIds,
    InvoiceLimit,
}

#[derive(DeriveIden)]
enum CouponRedemptions {
    Table,
    Id,
    CouponId,
    UserId,
    InvoicesApplied,
}

#[derive(DeriveIden)]
enum Users {
    Table,
}

const CODE_INDEX: &str = "uq_coupons_code";
const REDEMPTION_INDEX: &str = "uq_coupon_redemptions_coupon_id_user_id";
const REDEMPTION_USER_INDEX: &str = "idx_coupon_redemptions_user_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let mut coupons = Table::create();
        coupons
            .table(Coupons::Table)
            .col(ColumnDef::new(Coupons::Id).uuid().not_null().primary_key())
            .col(ColumnDef::new(Coupons::Code).string_len(64).not_null())
            .col(ColumnDef::new(Coupons::PercentBasisPoints).integer())
            .col(ColumnDef::new(Coupons::AmountOffMinor).big_integer())
            .col(ColumnDef::new(Coupons::Currency).string_len(3))
            .col(ColumnDef::new(Coupons::ExpiresAt).timestamp_with_time_zone())
            .col(ColumnDef::new(Coupons::MaxRedemptions).integer())
            .col(ColumnDef::new(Coupons::Redemptions).integer().not_null())
            .col(ColumnDef::new(Coupons::PlanIds).json_binary().not_null())
            .col(ColumnDef::new(Coupons::InvoiceLimit).integer());
        for column in timestamp_columns() {
            coupons.col(column);
        }
        manager.create_table(coupons).await?;
        manager
            .create_index(unique(CODE_INDEX, Coupons::Table, [Coupons::Code]))
            .await?;
        let mut redemptions = Table::create();
        redemptions
            .table(CouponRedemptions::Table)
            .col(
                ColumnDef::new(CouponRedemptions::Id)
                    .uuid()
                    .not_null()
                    .primary_key(),
            )
            .col(
                ColumnDef::new(CouponRedemptions::CouponId)
                    .uuid()
                    .not_null(),
            )
            .col(ColumnDef::new(CouponRedemptions::UserId).uuid().not_null())
            .col(
                ColumnDef::new(CouponRedemptions::InvoicesApplied)
                    .integer()
                    .not_null(),
            )
            .foreign_key(&mut fk(
                "fk_coupon_redemptions_coupon_id",
                CouponRedemptions::Table,
                CouponRedemptions::CouponId,
                Coupons::Table,
                ForeignKeyAction::NoAction,
            ))
            .foreign_key(&mut fk(
                "fk_coupon_redemptions_user_id",
                CouponRedemptions::Table,
                CouponRedemptions::UserId,
                Users::Table,
                ForeignKeyAction::NoAction,
            ));
        for column in timestamp_columns() {
            redemptions.col(column);
        }
        manager.create_table(redemptions).await?;
        manager
            .create_index(unique(
                REDEMPTION_INDEX,
                CouponRedemptions::Table,
                [CouponRedemptions::CouponId, CouponRedemptions::UserId],
            ))
            .await?;
        manager
            .create_index(index(
                REDEMPTION_USER_INDEX,
                CouponRedemptions::Table,
                [CouponRedemptions::UserId],
            ))
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CouponRedemptions::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(Coupons::Table).to_owned())
            .await
    }
}
