//! Amounts travel in minor units of their currency (cents, pence, yen), as an integer, so a
//! handler never parses a provider's decimal string or guesses which unit it got.

/// Digits after the decimal point in ISO 4217. Most currencies have 2; these differ.
/// Source: ISO 4217 list (SIX), the same set Stripe and Adyen document as zero/three-decimal.
fn exponent(currency: &str) -> u32 {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
        "VUV", "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    let upper = currency.to_ascii_uppercase();
    if ZERO.contains(&upper.as_str()) {
        0
    } else if THREE.contains(&upper.as_str()) {
        3
    } else {
        2
    }
}

/// A currency code as the envelope carries it: three ASCII letters, upper case.
pub fn currency(code: &str) -> Option<String> {
    let code = code.trim();
    (code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// A decimal amount in major units (`"10.00"`, `"403.5"`, `"1500"`) → minor units of
/// `currency`. `None` for anything that is not a plain non-negative or negative decimal, has
/// more fraction digits than the currency allows, or overflows.
pub(crate) fn to_minor(decimal: &str, currency: &str) -> Option<i64> {
    let exp = exponent(currency);
    let text = decimal.trim();
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    // Trailing zeros beyond the currency's precision are harmless ("10.000" USD).
    let fraction = fraction.trim_end_matches('0');
    if fraction.len() > exp as usize {
        return None;
    }
    let scale = 10i64.checked_pow(exp)?;
    let mut minor = whole.parse::<i64>().ok()?.checked_mul(scale)?;
    if !fraction.is_empty() {
        let padded = format!("{fraction:0<width$}", width = exp as usize);
        minor = minor.checked_add(padded.parse::<i64>().ok()?)?;
    }
    Some(if negative { -minor } else { minor })
}

/// An amount already in minor units, written as text (Adyen's `amount.value` as signed, Paddle's
/// `"1099"`): an optional `-` and ASCII digits only (no `+`, spaces or fraction); overflow is
/// `None`.
pub(crate) fn minor_from_text(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A JSON amount that is already in minor units (Stripe, Adyen, Checkout.com, Razorpay).
pub(crate) fn minor_from_json(value: &serde_json::Value) -> Option<i64> {
    value.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_amounts_as_text_are_plain_integers() {
        assert_eq!(minor_from_text("1099"), Some(1099));
        assert_eq!(minor_from_text("-5"), Some(-5));
        assert_eq!(minor_from_text("0"), Some(0));
        assert_eq!(minor_from_text("9223372036854775807"), Some(i64::MAX));
        assert_eq!(minor_from_text("-9223372036854775808"), Some(i64::MIN));
        for bad in [
            "",
            "-",
            "+5",
            " 5",
            "5 ",
            "1.0",
            "1e3",
            "--5",
            "١٢",
            "9223372036854775808",
        ] {
            assert_eq!(minor_from_text(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decimal_amounts_become_minor_units_of_their_currency() {
        assert_eq!(to_minor("10.00", "USD"), Some(1000));
        assert_eq!(to_minor("403.5", "usd"), Some(40350));
        assert_eq!(to_minor("1500", "JPY"), Some(1500));
        assert_eq!(to_minor("1.234", "KWD"), Some(1234));
        assert_eq!(to_minor("10.000", "USD"), Some(1000));
        assert_eq!(to_minor("-2.50", "EUR"), Some(-250));
        assert_eq!(to_minor("0.5", "GBP"), Some(50));
    }

    #[test]
    fn malformed_or_overprecise_amounts_are_refused() {
        for bad in [
            "",
            ".5",
            "1.2.3",
            "1,00",
            "abc",
            "1e3",
            "10.001",
            "99999999999999999999",
        ] {
            assert_eq!(to_minor(bad, "USD"), None, "{bad:?}");
        }
        assert_eq!(to_minor("1.5", "JPY"), None);
    }

    #[test]
    fn currency_codes_are_three_letters_upper_cased() {
        assert_eq!(currency("eur").as_deref(), Some("EUR"));
        assert_eq!(currency("EURO"), None);
        assert_eq!(currency("E1R"), None);
    }
}
