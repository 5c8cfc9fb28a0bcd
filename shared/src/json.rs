//! Request bodies: JSON that is not JSON is `malformed_json`, JSON of the wrong shape is
//! `invalid_request`; both are 400 and name what is wrong.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _, IgnoredAny};
use serde_json::error::Category;

use crate::error::Error;

/// Parses a body, which must be a JSON object. serde reads a JSON array into a struct field by
/// field (`[1, 2]` would be a hold of product 1, qty 2), so anything else is refused first. The
/// check is one look at the first byte; only a body that fails it is parsed a second time, to
/// tell JSON that is not an object from text that is not JSON.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let first = body
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(match serde_json::from_slice::<IgnoredAny>(body) {
            Ok(_) => Error::InvalidRequest("the body must be a JSON object".into()),
            Err(err) => classify(err),
        });
    }
    serde_json::from_slice(body).map_err(classify)
}

fn classify(err: serde_json::Error) -> Error {
    match err.classify() {
        Category::Data => Error::InvalidRequest(err.to_string()),
        Category::Syntax | Category::Eof | Category::Io => Error::MalformedJson(err.to_string()),
    }
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
    as_whole(&number)
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| D::Error::custom(format!("expected a whole number in range, got {number}")))
}

fn as_whole(number: &serde_json::Number) -> Option<u64> {
    // 2^64: `u64::MAX as f64` rounds up to it, and it is out of range.
    const PAST_U64: f64 = 18_446_744_073_709_551_616.0;
    number.as_u64().or_else(|| {
        number
            .as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < PAST_U64)
            .map(|f| f as u64)
    })
}

/// A whole number written in a path segment: decimal digits (a leading `+` and leading zeros
/// tolerated), or a number as JSON writes it with a zero fraction (`5.0`, `5e0`), which JSON
/// Schema (so openapi.yaml's `integer` path parameters) counts as an integer too.
pub fn whole_number_text(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.contains(|c: char| c.is_whitespace()) {
        return None;
    }
    raw.parse::<u64>().ok().or_else(|| {
        serde_json::from_str::<serde_json::Number>(raw)
            .ok()
            .and_then(|number| as_whole(&number))
    })
}

/// An optional integer field, `null` or absent for none, else as [`whole_number`]: use with
/// `#[serde(default, deserialize_with = "shared::json::optional_whole_number")]`.
pub fn optional_whole_number<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let number = Option::<serde_json::Number>::deserialize(deserializer)?;
    number
        .map(|number| whole_number(serde_json::Value::Number(number)).map_err(D::Error::custom))
        .transpose()
}

/// A field that may be absent (`None`: leave it as it is) or `null` (`Some(None)`: clear it):
/// `#[serde(default, deserialize_with = "shared::json::nullable")]` on an `Option<Option<T>>`.
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An RFC 3339 instant, as UTC: what every time in the API is written as.
pub fn instant(raw: &str) -> Result<chrono::NaiveDateTime, Error> {
    chrono::DateTime::parse_from_rfc3339(raw)
        .map(|at| at.naive_utc())
        .map_err(|_| Error::InvalidRequest(format!("{raw:?} is not an RFC 3339 time")))
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

    fn code(json: &str) -> Result<u16, &'static str> {
        super::parse::<Qty>(json.as_bytes())
            .map(|q| q.qty)
            .map_err(|err| err.code())
    }

    #[test]
    fn json_that_is_not_an_object_is_an_invalid_request() {
        // `[2]` is what serde would otherwise read as `{"qty": 2}`.
        for json in [
            "[2]", " \n\t[2]", "[]", "\"x\"", "3", "null", "true", " false ",
        ] {
            assert_eq!(code(json), Err("invalid_request"), "{json:?}");
        }
        assert_eq!(code(" \r\n{\"qty\": 2} "), Ok(2));
    }

    #[test]
    fn text_that_is_not_json_is_malformed_whatever_it_starts_with() {
        for json in [
            "",
            "   ",
            "[2",
            "nul",
            "\"x",
            "{",
            "{\"qty\": 2",
            "{\"qty\": 2}}",
            "\u{feff}{}",
        ] {
            assert_eq!(code(json), Err("malformed_json"), "{json:?}");
        }
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

    #[test]
    fn a_path_segment_is_a_whole_number_as_written_in_digits_or_as_json_writes_it() {
        use super::whole_number_text;
        assert_eq!(whole_number_text("18446744073709551615"), Some(u64::MAX));
        assert_eq!(whole_number_text("1.8446744073709552e19"), None, "2^64");
        assert_eq!(whole_number_text("18446744073709551616"), None);
        for refused in ["", " 5", "5 ", "5.5", "-5", "0x5", "five"] {
            assert_eq!(whole_number_text(refused), None, "{refused:?}");
        }
    }
}
