//! VAT on invoices and who the seller is, as one typed setting admins edit,
//! and the rules that pick an invoice's rate: the customer's country's rate
//! from the table; none for an EU business outside the seller's country
//! that gives a valid-looking VAT id (reverse charge, with its legal
//! mention).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::db::Database;
use crate::error::{Error, FieldError, Result};
use crate::modules::settings;

/// Printed on reverse-charge invoices.
pub const REVERSE_CHARGE_MENTION: &str = "Reverse charge: VAT to be accounted for by the \
    recipient (Article 196 of Council Directive 2006/112/EC).";

/// The member states, by ISO 3166 code.
const EU: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT",
    "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// Who issues the invoices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Seller {
    pub name: String,
    /// Postal address, one line per line.
    pub address: String,
    /// ISO 3166 alpha-2.
    pub country: String,
    pub vat_id: Option<String>,
    pub email: Option<String>,
}

#[derive(
    Clone, Debug, PartialEq, Eq, Serialize, Deserialize, garde::Validate, utoipa::ToSchema,
)]
#[serde(deny_unknown_fields)]
#[garde(allow_unvalidated)]
pub struct InvoicingSettings {
    pub seller: Seller,
    /// VAT rate per customer country (ISO 3166 alpha-2), in hundredths of a
    /// percent: 2000 is 20 %. A country missing from the table pays none.
    pub vat_rates: BTreeMap<String, u32>,
    /// Days between an invoice's issue and its due date.
    pub payment_terms_days: u32,
}

impl Default for InvoicingSettings {
    fn default() -> Self {
        let rates = [
            ("AT", 2000),
            ("BE", 2100),
            ("BG", 2000),
            ("CY", 1900),
            ("CZ", 2100),
            ("DE", 1900),
            ("DK", 2500),
            ("EE", 2400),
            ("ES", 2100),
            ("FI", 2550),
            ("FR", 2000),
            ("GR", 2400),
            ("HR", 2500),
            ("HU", 2700),
            ("IE", 2300),
            ("IT", 2200),
            ("LT", 2100),
            ("LU", 1700),
            ("LV", 2100),
            ("MT", 1800),
            ("NL", 2100),
            ("PL", 2300),
            ("PT", 2300),
            ("RO", 2100),
            ("SE", 2500),
            ("SI", 2200),
            ("SK", 2300),
        ];
        Self {
            seller: Seller {
                name: "VMCloud".to_owned(),
                address: String::new(),
                country: "FR".to_owned(),
                vat_id: None,
                email: None,
            },
            vat_rates: rates
                .into_iter()
                .map(|(country, rate)| (country.to_owned(), rate))
                .collect(),
            payment_terms_days: 14,
        }
    }
}

impl settings::Setting for InvoicingSettings {
    const KEY: &'static str = "invoicing";
    const DESCRIPTION: &'static str =
        "The seller printed on invoices, VAT rates per country and payment terms.";

    fn check(&self) -> Result<()> {
        let mut fields = Vec::new();
        if self.seller.name.trim().is_empty() {
            fields.push(FieldError::new("seller/name", "is required"));
        }
        if !is_country(&self.seller.country) {
            fields.push(FieldError::new(
                "seller/country",
                "must be an ISO 3166 alpha-2 code in upper case",
            ));
        }
        for (country, rate) in &self.vat_rates {
            if !is_country(country) || *rate > 10_000 {
                fields.push(FieldError::new(
                    format!("vat_rates/{country}"),
                    "must map an ISO 3166 alpha-2 code to 0-10000 basis points",
                ));
            }
        }
        if self.payment_terms_days > 365 {
            fields.push(FieldError::new("payment_terms_days", "must be at most 365"));
        }
        Error::check_fields(fields)
    }
}

fn is_country(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase())
}

/// The rate of an invoice and whether it is reverse-charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaxDecision {
    pub rate_basis_points: i32,
    pub reverse_charge: bool,
}

/// The VAT rule for a customer in `country` (the seller's when unknown)
/// with an optional VAT id.
pub fn decide(
    settings: &InvoicingSettings,
    country: Option<&str>,
    vat_id: Option<&str>,
) -> TaxDecision {
    let country = country
        .map(|c| c.trim().to_ascii_uppercase())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| settings.seller.country.clone());
    let in_eu = EU.contains(&country.as_str());
    if in_eu
        && country != settings.seller.country
        && vat_id.is_some_and(|id| looks_like_eu_vat_id(id, &country))
    {
        return TaxDecision {
            rate_basis_points: 0,
            reverse_charge: true,
        };
    }
    let rate = settings.vat_rates.get(&country).copied().unwrap_or(0);
    TaxDecision {
        rate_basis_points: i32::try_from(rate).unwrap_or(0),
        reverse_charge: false,
    }
}

/// Whether `id` has the shape of a VAT id of `country`: its prefix (EL for
/// Greece) then 2 to 12 letters and digits, some of them digits. Only its
/// shape: VIES would say whether it exists.
pub fn looks_like_eu_vat_id(id: &str, country: &str) -> bool {
    let id: String = id
        .chars()
        .filter(|c| !matches!(c, ' ' | '.' | '-'))
        .collect::<String>()
        .to_ascii_uppercase();
    let prefix = if country == "GR" { "EL" } else { country };
    let Some(rest) = id.strip_prefix(prefix) else {
        return false;
    };
    (2..=12).contains(&rest.len())
        && rest.chars().all(|c| c.is_ascii_alphanumeric())
        && rest.chars().any(|c| c.is_ascii_digit())
}

/// The VAT on `subtotal` minor units at `rate_basis_points`, rounded half up.
pub fn tax_of(subtotal: i64, rate_basis_points: i32) -> i64 {
    let product = i128::from(subtotal) * i128::from(rate_basis_points);
    let rounded = (product + 5_000).div_euclid(10_000);
    i64::try_from(rounded).unwrap_or(i64::MAX)
}

pub async fn get(db: &Database, cache: &Cache) -> Result<InvoicingSettings> {
    settings::load(db, cache).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::settings::Setting as _;

    #[test]
    fn customers_pay_their_countrys_rate_and_the_sellers_when_unknown() {
        let settings = InvoicingSettings::default();
        assert_eq!(decide(&settings, Some("de"), None).rate_basis_points, 1900);
        assert_eq!(decide(&settings, None, None).rate_basis_points, 2000);
        assert_eq!(decide(&settings, Some("US"), None).rate_basis_points, 0);
    }

    #[test]
    fn eu_businesses_abroad_with_a_vat_id_are_reverse_charged() {
        let settings = InvoicingSettings::default();
        let reverse = decide(&settings, Some("DE"), Some("DE 123 456 789"));
        assert!(reverse.reverse_charge);
        assert_eq!(reverse.rate_basis_points, 0);
        assert!(decide(&settings, Some("GR"), Some("EL123456789")).reverse_charge);
        // Same country as the seller: French VAT applies.
        let domestic = decide(&settings, Some("FR"), Some("FR12345678901"));
        assert!(!domestic.reverse_charge);
        assert_eq!(domestic.rate_basis_points, 2000);
        // An id that does not look like one of the customer's country.
        for bad in ["FR123456789", "DE", "DEABCDEFG", "DE1234567890123"] {
            assert!(
                !decide(&settings, Some("DE"), Some(bad)).reverse_charge,
                "{bad}"
            );
        }
    }

    #[test]
    fn tax_rounds_half_up_in_minor_units() {
        assert_eq!(tax_of(1000, 2000), 200);
        assert_eq!(tax_of(1, 2000), 0);
        assert_eq!(tax_of(3, 1950), 1);
        assert_eq!(tax_of(25, 2000), 5);
        assert_eq!(tax_of(0, 2000), 0);
    }

    #[test]
    fn settings_are_checked() {
        assert!(InvoicingSettings::default().check().is_ok());
        let mut bad = InvoicingSettings::default();
        bad.seller.country = "France".to_owned();
        bad.vat_rates.insert("DE".to_owned(), 20_000);
        assert!(bad.check().is_err());
    }
}
