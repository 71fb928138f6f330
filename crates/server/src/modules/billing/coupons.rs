//! Coupons: admins make them, customers redeem them, and invoices issued
//! afterwards carry their discount as a negative line, before VAT, with a
//! `coupon` credit in the ledger.
//!
//! Codes are matched whatever their case (stored upper case, unique). A
//! redemption is one row per coupon and account (unique), and the count of
//! redemptions is taken by an update conditional on the maximum, in the
//! redemption's transaction: two customers racing for the last one cannot
//! both get it.

use chrono::{DateTime, Utc};
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait as _};
use sea_orm::{
    ActiveModelTrait as _, ColumnTrait as _, Condition, ConnectionTrait, EntityTrait as _,
    IntoActiveModel as _, PaginatorTrait as _, QueryFilter as _, QueryOrder as _,
};
use serde::{Deserialize, Serialize};

use super::{Services, policy};
use crate::db::entities::{coupon, coupon_redemption, product};
use crate::error::{Error, FieldError, Result};
use crate::ids::{CouponId, CouponRedemptionId, ProductId};
use crate::modules::auth::Actor;
use crate::pagination::{Page, PageRequest, fetch_page};

const MAX_CODE_CHARS: usize = 64;

/// A coupon as admins write it.
#[derive(Clone, Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct CouponInput {
    /// 3-64 letters, digits, `-` or `_`; matched whatever the case.
    pub code: String,
    /// Hundredths of a percent off (1000 = 10 %), 1 to 10000; or
    /// `amount_off_minor` with `currency`.
    pub percent_basis_points: Option<i32>,
    pub amount_off_minor: Option<i64>,
    pub currency: Option<String>,
    /// The last moment it can be redeemed.
    pub expires_at: Option<DateTime<Utc>>,
    pub max_redemptions: Option<i32>,
    /// The plans whose lines it discounts; empty for all.
    #[serde(default)]
    pub plan_ids: Vec<ProductId>,
    /// How many invoices of an account it discounts; none for all.
    pub invoice_limit: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct CouponView {
    pub id: CouponId,
    pub code: String,
    pub percent_basis_points: Option<i32>,
    pub amount_off_minor: Option<i64>,
    pub currency: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub max_redemptions: Option<i32>,
    /// How many accounts redeemed it.
    pub redemptions: i32,
    pub plan_ids: Vec<ProductId>,
    pub invoice_limit: Option<i32>,
    pub created_at: DateTime<Utc>,
}

fn plan_ids(row: &coupon::Model) -> Vec<ProductId> {
    serde_json::from_value(row.plan_ids.clone()).unwrap_or_default()
}

impl From<coupon::Model> for CouponView {
    fn from(row: coupon::Model) -> Self {
        Self {
            plan_ids: plan_ids(&row),
            id: row.id,
            code: row.code,
            percent_basis_points: row.percent_basis_points,
            amount_off_minor: row.amount_off_minor,
            currency: row.currency,
            expires_at: row.expires_at,
            max_redemptions: row.max_redemptions,
            redemptions: row.redemptions,
            invoice_limit: row.invoice_limit,
            created_at: row.created_at,
        }
    }
}

/// The body of `POST /billing/coupons/redeem`.
#[derive(Debug, Deserialize, garde::Validate, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    #[garde(length(min = 1, max = 64))]
    pub code: String,
}

/// A coupon the account redeemed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RedemptionView {
    pub id: CouponRedemptionId,
    pub coupon: CouponView,
    /// Invoices it discounted so far.
    pub invoices_applied: i32,
    pub created_at: DateTime<Utc>,
}

/// Checks an input; returns it normalised (code upper case).
async fn checked(services: &Services, input: CouponInput) -> Result<CouponInput> {
    let policy = policy::get(&services.db, &services.cache).await?;
    let mut fields = Vec::new();
    let code = input.code.trim().to_ascii_uppercase();
    if !(3..=MAX_CODE_CHARS).contains(&code.len())
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        fields.push(FieldError::new(
            "code",
            format!("must be 3-{MAX_CODE_CHARS} letters, digits, '-' or '_'"),
        ));
    }
    match (
        input.percent_basis_points,
        input.amount_off_minor,
        &input.currency,
    ) {
        (Some(percent), None, None) => {
            if !(1..=10_000).contains(&percent) {
                fields.push(FieldError::new(
                    "percent_basis_points",
                    "must be 1 to 10000 (0.01 % to 100 %)",
                ));
            }
        }
        (None, Some(amount), Some(currency)) => {
            if amount <= 0 {
                fields.push(FieldError::new("amount_off_minor", "must be positive"));
            }
            fields.extend(policy.check_currency("currency", currency));
        }
        _ => fields.push(FieldError::new(
            "percent_basis_points",
            "give either percent_basis_points, or amount_off_minor with currency",
        )),
    }
    if input.max_redemptions.is_some_and(|m| m < 1) {
        fields.push(FieldError::new("max_redemptions", "must be at least 1"));
    }
    if input.invoice_limit.is_some_and(|m| m < 1) {
        fields.push(FieldError::new("invoice_limit", "must be at least 1"));
    }
    let known = product::Entity::find()
        .filter(product::Column::Id.is_in(input.plan_ids.iter().copied()))
        .count(services.db.reader())
        .await?;
    let mut unique = input.plan_ids.clone();
    unique.sort_unstable();
    unique.dedup();
    if usize::try_from(known).unwrap_or_default() != unique.len() || unique.len() > 100 {
        fields.push(FieldError::new(
            "plan_ids",
            "must be up to 100 distinct existing plans",
        ));
    }
    Error::check_fields(fields)?;
    Ok(CouponInput {
        code,
        plan_ids: unique,
        ..input
    })
}

fn apply_input(active: &mut coupon::ActiveModel, input: CouponInput) -> Result<()> {
    active.code = Set(input.code);
    active.percent_basis_points = Set(input.percent_basis_points);
    active.amount_off_minor = Set(input.amount_off_minor);
    active.currency = Set(input.currency);
    active.expires_at = Set(input.expires_at);
    active.max_redemptions = Set(input.max_redemptions);
    active.plan_ids = Set(serde_json::to_value(&input.plan_ids).map_err(anyhow::Error::from)?);
    active.invoice_limit = Set(input.invoice_limit);
    Ok(())
}

const TAKEN: &str = "A coupon with this code exists already.";

pub async fn create(services: &Services, actor: &Actor, input: CouponInput) -> Result<CouponView> {
    actor.require_admin()?;
    let input = checked(services, input).await?;
    let mut active = coupon::ActiveModel {
        redemptions: Set(0),
        ..Default::default()
    };
    apply_input(&mut active, input)?;
    let row = active
        .insert(services.db.writer())
        .await
        .map_err(|err| Error::on_duplicate(err, TAKEN))?;
    Ok(row.into())
}

/// Replaces a coupon's terms; redemptions made keep counting.
pub async fn update(
    services: &Services,
    actor: &Actor,
    id: CouponId,
    input: CouponInput,
) -> Result<CouponView> {
    actor.require_admin()?;
    let input = checked(services, input).await?;
    let row = find(services, id).await?;
    if input.max_redemptions.is_some_and(|m| m < row.redemptions) {
        return Err(Error::invalid_field(
            "max_redemptions",
            format!("is below the {} redemptions made", row.redemptions),
        ));
    }
    let mut active = row.into_active_model();
    apply_input(&mut active, input)?;
    let row = active
        .update(services.db.writer())
        .await
        .map_err(|err| Error::on_duplicate(err, TAKEN))?;
    Ok(row.into())
}

/// Deletes a coupon nobody redeemed; one redeemed is a 409 (let it expire).
pub async fn delete(services: &Services, actor: &Actor, id: CouponId) -> Result<()> {
    actor.require_admin()?;
    let row = find(services, id).await?;
    let redeemed = coupon_redemption::Entity::find()
        .filter(coupon_redemption::Column::CouponId.eq(row.id))
        .count(services.db.writer())
        .await?;
    if redeemed > 0 {
        return Err(Error::Conflict(
            "This coupon was redeemed; set its expiry instead of deleting it.".to_owned(),
        ));
    }
    coupon::Entity::delete_by_id(row.id)
        .exec(services.db.writer())
        .await
        .map_err(|err| Error::on_still_referenced(err, "This coupon was redeemed meanwhile."))?;
    Ok(())
}

async fn find(services: &Services, id: CouponId) -> Result<coupon::Model> {
    coupon::Entity::find_by_id(id)
        .one(services.db.writer())
        .await?
        .ok_or_else(|| Error::not_found("Coupon"))
}

pub async fn get(services: &Services, actor: &Actor, id: CouponId) -> Result<CouponView> {
    actor.require_admin()?;
    Ok(find(services, id).await?.into())
}

pub async fn list(
    services: &Services,
    actor: &Actor,
    page: PageRequest,
) -> Result<Page<CouponView>> {
    actor.require_admin()?;
    let page = fetch_page(
        services.db.reader(),
        coupon::Entity::find(),
        coupon::Column::Id,
        page,
        |row| row.id.into(),
    )
    .await?;
    Ok(page.map(CouponView::from))
}

fn refused(message: &str) -> Error {
    Error::invalid_field("code", message)
}

/// Redeems a coupon for the actor's account: 422 when the code is unknown,
/// expired, used up, or redeemed by this account already.
pub async fn redeem(services: &Services, actor: &Actor, code: &str) -> Result<RedemptionView> {
    actor.require_write()?;
    let now = services.clock.now();
    let code = code.trim().to_ascii_uppercase();
    let txn = services.db.begin_write().await?;
    let row = coupon::Entity::find()
        .filter(coupon::Column::Code.eq(code.as_str()))
        .one(&txn)
        .await?
        .ok_or_else(|| refused("is not a coupon code"))?;
    if row.expires_at.is_some_and(|at| at <= now) {
        return Err(refused("has expired"));
    }
    let redeemed = coupon_redemption::Entity::find()
        .filter(coupon_redemption::Column::CouponId.eq(row.id))
        .filter(coupon_redemption::Column::UserId.eq(actor.user_id))
        .one(&txn)
        .await?;
    if redeemed.is_some() {
        return Err(refused("was redeemed by your account already"));
    }
    let counted = coupon::Entity::update_many()
        .col_expr(
            coupon::Column::Redemptions,
            Expr::col(coupon::Column::Redemptions).add(1),
        )
        .col_expr(
            coupon::Column::UpdatedAt,
            Expr::value(crate::db::entities::now()),
        )
        .filter(coupon::Column::Id.eq(row.id))
        .filter(
            Condition::any()
                .add(coupon::Column::MaxRedemptions.is_null())
                .add(
                    Expr::col(coupon::Column::Redemptions)
                        .lt(Expr::col(coupon::Column::MaxRedemptions)),
                ),
        )
        .exec(&txn)
        .await?;
    if counted.rows_affected == 0 {
        return Err(refused("has been used up"));
    }
    let redemption = coupon_redemption::ActiveModel {
        coupon_id: Set(row.id),
        user_id: Set(actor.user_id),
        invoices_applied: Set(0),
        ..Default::default()
    }
    .insert(&txn)
    .await
    // The same account redeeming twice at once: the unique index decides.
    .map_err(|err| match err.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            refused("was redeemed by your account already")
        }
        _ => err.into(),
    })?;
    let row = coupon::Entity::find_by_id(row.id)
        .one(&txn)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the coupon vanished"))?;
    txn.commit().await?;
    Ok(RedemptionView {
        id: redemption.id,
        coupon: row.into(),
        invoices_applied: 0,
        created_at: redemption.created_at,
    })
}

/// A discount on an invoice being issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Discount {
    pub redemption: CouponRedemptionId,
    pub code: String,
    pub amount_minor: i64,
}

/// The discounts of `user`'s redeemed coupons on an invoice in `currency`
/// whose lines are `(plan, amount)`, in redemption order, and counts the
/// invoice against each coupon's limit, in the caller's (issuing)
/// transaction. Each coupon applies to its plans' lines (all when it names
/// none); together they never exceed the invoice.
pub async fn discounts<C: ConnectionTrait>(
    conn: &C,
    user: crate::ids::UserId,
    currency: &str,
    lines: &[(Option<ProductId>, i64)],
) -> Result<Vec<Discount>> {
    let redemptions = coupon_redemption::Entity::find()
        .filter(coupon_redemption::Column::UserId.eq(user))
        .order_by_asc(coupon_redemption::Column::Id)
        .find_also_related(coupon::Entity)
        .all(conn)
        .await?;
    let mut left: i64 = lines.iter().map(|(_, amount)| amount).sum();
    let mut out = Vec::new();
    for (redemption, coupon) in redemptions {
        let Some(coupon) = coupon else { continue };
        if coupon
            .invoice_limit
            .is_some_and(|limit| redemption.invoices_applied >= limit)
        {
            continue;
        }
        let plans = plan_ids(&coupon);
        let eligible: i64 = lines
            .iter()
            .filter(|(plan, _)| plans.is_empty() || plan.is_some_and(|p| plans.contains(&p)))
            .map(|(_, amount)| amount)
            .sum();
        let amount = match (coupon.percent_basis_points, coupon.amount_off_minor) {
            (Some(percent), _) => eligible * i64::from(percent) / 10_000,
            (None, Some(off)) if coupon.currency.as_deref() == Some(currency) => {
                Ord::min(off, eligible)
            }
            _ => 0,
        };
        let amount = Ord::min(amount, left);
        if amount <= 0 {
            continue;
        }
        left -= amount;
        coupon_redemption::Entity::update_many()
            .col_expr(
                coupon_redemption::Column::InvoicesApplied,
                Expr::col(coupon_redemption::Column::InvoicesApplied).add(1),
            )
            .col_expr(
                coupon_redemption::Column::UpdatedAt,
                Expr::value(crate::db::entities::now()),
            )
            .filter(coupon_redemption::Column::Id.eq(redemption.id))
            .exec(conn)
            .await?;
        out.push(Discount {
            redemption: redemption.id,
            code: coupon.code,
            amount_minor: amount,
        });
    }
    Ok(out)
}
