//! Amounts for people: minor units written with the currency's decimals.

/// ISO 4217 currencies without minor units (Stripe's list of zero-decimal
/// currencies): their minor unit is the unit.
const ZERO_DECIMAL: [&str; 16] = [
    "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
    "XAF", "XOF", "XPF",
];

/// `1234` EUR is `12.34 EUR`, `-5` EUR `-0.05 EUR`, `1234` JPY `1234 JPY`.
pub fn format(amount_minor: i64, currency: &str) -> String {
    if ZERO_DECIMAL.contains(&currency) {
        return format!("{amount_minor} {currency}");
    }
    let sign = if amount_minor < 0 { "-" } else { "" };
    let abs = amount_minor.unsigned_abs();
    format!("{sign}{}.{:02} {currency}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::format;

    #[test]
    fn amounts_carry_their_currencys_decimals() {
        assert_eq!(format(1234, "EUR"), "12.34 EUR");
        assert_eq!(format(5, "EUR"), "0.05 EUR");
        assert_eq!(format(-5, "USD"), "-0.05 USD");
        assert_eq!(format(0, "EUR"), "0.00 EUR");
        assert_eq!(format(1234, "JPY"), "1234 JPY");
        assert_eq!(format(i64::MIN, "EUR"), "-92233720368547758.08 EUR");
    }
}
