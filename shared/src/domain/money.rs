//! Money as integer cents, written as a decimal string with two places ("50.00").

use std::fmt;

use serde::{Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cents(pub i64);

/// Ten billion units of currency: far above any real price, far below overflow of `price * qty`.
const MAX_CENTS: i64 = 1_000_000_000_000;

impl Cents {
    /// Parses "50", "50.5" or "50.00": digits, optionally a point and one or two decimals.
    pub fn parse(raw: &str) -> Option<Self> {
        let (units, fraction) = raw.split_once('.').unwrap_or((raw, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if units.is_empty() || units.len() > 13 || !all_digits(units) {
            return None;
        }
        if raw.contains('.') && (fraction.is_empty() || fraction.len() > 2 || !all_digits(fraction))
        {
            return None;
        }
        let units: i64 = units.parse().ok()?;
        let fraction: i64 = format!("{fraction:0<2}").parse().ok()?;
        let cents = units.checked_mul(100)?.checked_add(fraction)?;
        (cents <= MAX_CENTS).then_some(Self(cents))
    }

    pub fn times(self, qty: u32) -> Self {
        Self(self.0 * i64::from(qty))
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

impl Serialize for Cents {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_two_decimal_places() {
        for (raw, cents, shown) in [
            ("50.00", 5000, "50.00"),
            ("50", 5000, "50.00"),
            ("0.5", 50, "0.50"),
            ("19.99", 1999, "19.99"),
        ] {
            let parsed = Cents::parse(raw).expect(raw);
            assert_eq!(parsed, Cents(cents));
            assert_eq!(parsed.to_string(), shown);
        }
    }

    #[test]
    fn rejects_anything_but_a_plain_decimal() {
        for raw in [
            "",
            ".5",
            "5.",
            "5.001",
            "-1",
            "+1",
            "1e3",
            "1,00",
            " 1",
            "NaN",
            "99999999999999",
        ] {
            assert_eq!(Cents::parse(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn amount_is_price_times_quantity() {
        assert_eq!(Cents(5000).times(2).to_string(), "100.00");
    }
}
