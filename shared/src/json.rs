//! Request bodies: JSON that is not JSON is `malformed_json`, JSON of the wrong shape is
//! `invalid_request`; both are 400 and name what is wrong.

use serde::de::DeserializeOwned;
use serde_json::error::Category;

use crate::error::Error;

pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|err| match err.classify() {
        Category::Data => Error::InvalidRequest(err.to_string()),
        Category::Syntax | Category::Eof | Category::Io => Error::MalformedJson(err.to_string()),
    })
}
