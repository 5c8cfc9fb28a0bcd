//! Request bodies: JSON that is not JSON is `malformed_json`, JSON of the wrong shape is
//! `invalid_request`; both are 400 and name what is wrong.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use serde_json::error::Category;

use crate::error::Error;

pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|err| match err.classify() {
        Category::Data => Error::InvalidRequest(err.to_string()),
        Category::Syntax | Category::Eof | Category::Io => Error::MalformedJson(err.to_string()),
    })
}

/// An integer field that also accepts a number written with a zero fraction (`2.0`): JSON has one
/// number type, and JSON Schema (so openapi.yaml) counts `2.0` as the integer 2. `2.5`, negative
/// numbers and numbers out of the field's range are refused. Use with
/// `#[serde(deserialize_with = "shared::json::whole_number")]`.
pub fn whole_number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = serde_json::Number::deserialize(deserializer)?;
    let whole = number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64)
            .map(|f| f as u64)
    });
    whole
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| D::Error::custom(format!("expected a whole number in range, got {number}")))
}

#[cfg(test)]
mod tests {
    #[derive(Debug, serde::Deserialize)]
    struct Qty {
        #[serde(deserialize_with = "super::whole_number")]
        qty: u16,
    }

    fn qty(json: &str) -> Option<u16> {
        super::parse::<Qty>(json.as_bytes()).ok().map(|q| q.qty)
    }

    #[test]
    fn whole_numbers_are_accepted_however_written() {
        assert_eq!(qty(r#"{"qty": 2}"#), Some(2));
        assert_eq!(qty(r#"{"qty": 2.0}"#), Some(2));
        assert_eq!(qty(r#"{"qty": 2e0}"#), Some(2));
    }

    #[test]
    fn fractions_negatives_strings_and_out_of_range_numbers_are_refused() {
        for json in [
            r#"{"qty": 2.5}"#,
            r#"{"qty": -1}"#,
            r#"{"qty": -0.5}"#,
            r#"{"qty": "2"}"#,
            r#"{"qty": 65536}"#,
            r#"{"qty": 1e300}"#,
        ] {
            assert_eq!(qty(json), None, "{json}");
        }
    }
}
