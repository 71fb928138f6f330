//! The billing policy, set by admins: the currencies the platform bills in
//! and whether a stopped instance is charged.

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::{Error, FieldError, Result};
use crate::ids::UserId;
use crate::modules::settings;

#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct BillingPolicy {
    /// ISO 4217 codes, upper case, that plans are priced and accounts are
    /// credited in. The first is the default.
    pub currencies: Vec<String>,
    /// Whether a stopped instance keeps being charged (its resources stay
    /// reserved). When `false`, an hour is charged only if the instance ran
    /// during some of it.
    pub charge_stopped_instances: bool,
    /// Whether ordering an instance needs a positive balance in the plan's
    /// currency (prepaid credit), so an unpaid account cannot run up a bill.
    #[serde(default)]
    pub require_positive_balance_to_order: bool,
}

impl Default for BillingPolicy {
    fn default() -> Self {
        Self {
            currencies: vec!["EUR".to_owned()],
            charge_stopped_instances: true,
            require_positive_balance_to_order: false,
        }
    }
}

impl BillingPolicy {
    /// A field error unless `currency` is one the platform bills in.
    pub fn check_currency(&self, field: &str, currency: &str) -> Option<FieldError> {
        (!self.currencies.iter().any(|c| c == currency)).then(|| {
            FieldError::new(
                field,
                format!("must be one of {}", self.currencies.join(", ")),
            )
        })
    }
}

impl settings::Setting for BillingPolicy {
    const KEY: &'static str = "billing";
    const DESCRIPTION: &'static str = "The currencies plans are priced in (the first is the default) and whether stopped instances are charged.";

    fn check(&self) -> Result<()> {
        let mut fields = Vec::new();
        if self.currencies.is_empty() || self.currencies.len() > 20 {
            fields.push(FieldError::new(
                "currencies",
                "must list 1 to 20 currencies",
            ));
        }
        for (index, code) in self.currencies.iter().enumerate() {
            if !is_currency_code(code) {
                fields.push(FieldError::new(
                    format!("currencies/{index}"),
                    "must be an ISO 4217 code in upper case (EUR, USD, …)",
                ));
            }
        }
        Error::check_fields(fields)
    }
}

/// Three upper-case ASCII letters, the shape of an ISO 4217 code.
pub fn is_currency_code(code: &str) -> bool {
    code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase())
}

pub async fn get(db: &Database, cache: &Cache) -> Result<BillingPolicy> {
    settings::load(db, cache).await
}

/// Refuses an order with a 402 when the policy asks for credit and the
/// account's balance in `currency` is not positive.
pub async fn check_order<C: sea_orm::ConnectionTrait>(
    policy: &BillingPolicy,
    conn: &C,
    user: UserId,
    currency: &str,
) -> Result<()> {
    if !policy.require_positive_balance_to_order {
        return Ok(());
    }
    let balance = super::ledger::balances(conn, user)
        .await?
        .into_iter()
        .find(|b| b.currency == currency)
        .map_or(0, |b| b.amount_minor);
    if balance > 0 {
        return Ok(());
    }
    Err(Error::PaymentRequired(format!(
        "Ordering needs credit on your account: your balance is {}. Top up your account, \
         then order again.",
        super::money::format(balance, currency)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::settings::Setting as _;

    #[test]
    fn currencies_are_iso_codes_the_policy_lists() {
        let policy = BillingPolicy::default();
        assert!(policy.check_currency("currency", "EUR").is_none());
        assert!(policy.check_currency("currency", "USD").is_some());
        assert!(policy.check().is_ok());
        for bad in [vec![], vec!["eur".to_owned()], vec!["EURO".to_owned()]] {
            let policy = BillingPolicy {
                currencies: bad,
                ..BillingPolicy::default()
            };
            assert!(policy.check().is_err(), "{:?}", policy.currencies);
        }
    }
}
