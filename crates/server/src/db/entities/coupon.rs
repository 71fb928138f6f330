//! A coupon: a percentage (in basis points) or a fixed amount off an
//! account's next invoices, redeemable until it expires or is used up.

use sea_orm::entity::prelude::*;

use crate::ids::CouponId;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "coupons")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: CouponId,
    /// Upper case: codes are matched whatever their case.
    #[sea_orm(unique)]
    pub code: String,
    /// Hundredths of a percent off (1000 = 10 %); or `amount_off_minor`.
    pub percent_basis_points: Option<i32>,
    /// Minor units of `currency` off each invoice it applies to.
    pub amount_off_minor: Option<i64>,
    pub currency: Option<String>,
    /// The last moment it can be redeemed.
    pub expires_at: Option<DateTimeUtc>,
    pub max_redemptions: Option<i32>,
    /// How many accounts redeemed it.
    pub redemptions: i32,
    /// The plans whose lines it discounts, as a JSON array of ids; empty
    /// for every plan.
    #[sea_orm(column_type = "JsonBinary")]
    pub plan_ids: Json,
    /// How many invoices of an account it applies to; `None` for all.
    pub invoice_limit: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::coupon_redemption::Entity")]
    Redemptions,
}

impl Related<super::coupon_redemption::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Redemptions.def()
    }
}

stamped_behavior!();
