//! HTTP with lambda_http's types: the one module of `shared` that knows about Lambda. Every
//! HTTP function and the local server answer through these helpers, so every response, errors
//! included, has the same JSON shape.

use lambda_http::http::{HeaderValue, StatusCode, header};
pub use lambda_http::{Body, Request, RequestExt, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;

/// Larger request bodies are refused with 413 before anything parses them.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn json<T: Serialize>(status: u16, body: &T) -> Response<Body> {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(Body::Text(
        serde_json::to_string(body).unwrap_or_else(|_| "{}".to_owned()),
    ));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// `{"error":{"code":…,"message":…}}`. Server errors are logged here with their cause, and
/// the client sees only a generic message; 503 says when to come back.
pub fn error(err: &Error) -> Response<Body> {
    let status = err.status();
    if status >= 500 {
        tracing::error!(status, code = err.code(), error = ?err, "request failed");
    }
    let mut response = json(
        status,
        &serde_json::json!({"error": {"code": err.code(), "message": err.public_message()}}),
    );
    if status == 503 {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if let Error::SaleNotStarted { starts_in_seconds } = err {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*starts_in_seconds));
    }
    if matches!(err, Error::Unauthorized) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

pub use crate::service::REQUEST_DEADLINE;

/// What every HTTP handler returns: the handler's work runs within [`REQUEST_DEADLINE`]; the
/// outcomes a client should see are responses, never `Err`.
pub async fn respond(
    work: impl Future<Output = Result<Response<Body>, Error>>,
) -> Result<Response<Body>, lambda_http::Error> {
    respond_committing(crate::service::within_request_deadline(work)).await
}

/// For a handler whose work commits and then has side effects (create-hold, create-order): the
/// service bounds its transaction by [`REQUEST_DEADLINE`] and its side effects by
/// [`crate::service::SIDE_EFFECTS_BUDGET`], so no deadline here can turn a commit into a 503.
pub async fn respond_committing(
    work: impl Future<Output = Result<Response<Body>, Error>>,
) -> Result<Response<Body>, lambda_http::Error> {
    Ok(work.await.unwrap_or_else(|err| error(&err)))
}

pub fn body_bytes(request: &Request) -> Result<&[u8], Error> {
    let body: &[u8] = request.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(Error::PayloadTooLarge {
            limit: MAX_BODY_BYTES,
        });
    }
    Ok(body)
}

pub fn body_json<T: DeserializeOwned>(request: &Request) -> Result<T, Error> {
    crate::json::parse(body_bytes(request)?)
}

pub fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
}

/// The request's `Idempotency-Key`, `None` when it has none. A key that is there but not one we
/// accept (bytes past ASCII, too long, or the header sent twice) is refused, never taken for no
/// key: a retry would then make a second hold.
pub fn idempotency_key(request: &Request) -> Result<Option<String>, Error> {
    let mut values = request.headers().get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::InvalidRequest(
            "send one Idempotency-Key header, not several".into(),
        ));
    }
    match value.to_str() {
        Ok(key) if crate::domain::ids::is_idempotency_key(key) => Ok(Some(key.to_owned())),
        _ => Err(Error::InvalidRequest(format!(
            "Idempotency-Key must be 1 to {} printable ASCII characters",
            crate::domain::ids::MAX_IDEMPOTENCY_KEY_LEN
        ))),
    }
}

/// The buyer a request comes from. With `jwt`, the `sub` of the token the HTTP API's JWT
/// authorizer verified (on AWS; the local server verifies it itself and puts its claims in the
/// same place), never a header a client could set: no verified `sub` is 401 `unauthorized`.
pub fn buyer(
    request: &Request,
    auth: crate::config::BuyerAuth,
) -> Result<Option<crate::domain::ids::BuyerId>, Error> {
    use lambda_http::request::RequestContext;
    if auth == crate::config::BuyerAuth::None {
        return Ok(None);
    }
    let sub = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(context)) => context
            .authorizer
            .as_ref()
            .and_then(|authorizer| authorizer.jwt.as_ref())
            .and_then(|jwt| jwt.claims.get("sub")),
        _ => None,
    };
    sub.and_then(|sub| crate::domain::ids::BuyerId::parse(sub))
        .map(Some)
        .ok_or(Error::Unauthorized)
}

/// The id at the end of the path. API Gateway names it in the path parameters; a function URL
/// (`cargo lambda watch`) does not route, so there it is the last path segment.
pub fn path_id(request: &Request, name: &str) -> String {
    request
        .path_parameters_ref()
        .and_then(|params| params.first(name))
        .map(str::to_owned)
        .unwrap_or_else(|| {
            request
                .uri()
                .path()
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or("")
                .to_owned()
        })
}

/// Checks `Authorization: Bearer <token>` in constant time (hashing first makes the comparison
/// independent of the tokens' lengths too).
pub fn require_bearer(request: &Request, token: &SecretString) -> Result<(), Error> {
    let presented = header(request, header::AUTHORIZATION.as_str())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(Error::Unauthorized)?;
    let presented = Sha256::digest(presented.trim().as_bytes());
    let expected = Sha256::digest(token.expose_secret().as_bytes());
    if bool::from(presented.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(Error::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn request(uri: &str, body: Body) -> Request {
        let mut request = Request::new(body);
        *request.uri_mut() = uri.parse().expect("a valid uri");
        request
    }

    #[test]
    fn the_id_comes_from_api_gateways_path_parameters() {
        let request = request("/api/products/7", Body::Empty)
            .with_path_parameters(HashMap::from([("id".to_owned(), "9".to_owned())]));
        assert_eq!(path_id(&request, "id"), "9");
    }

    #[test]
    fn without_path_parameters_the_id_is_the_last_segment() {
        // cargo lambda watch: a function URL, no routing.
        assert_eq!(
            path_id(&request("/lambda-url/get-product/42", Body::Empty), "id"),
            "42"
        );
        assert_eq!(
            path_id(&request("/api/holds/abc/", Body::Empty), "hold_id"),
            "abc"
        );
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let token = SecretString::from("s3cret".to_owned());
        let with = |value: &str| {
            let mut request = request("/api/admin/products", Body::Empty);
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, value.parse().expect("header"));
            require_bearer(&request, &token)
        };
        assert!(with("Bearer s3cret").is_ok());
        assert!(with("Bearer s3cret2").is_err());
        assert!(with("Basic s3cret").is_err());
        assert!(with("Bearer ").is_err());
        assert!(require_bearer(&request("/", Body::Empty), &token).is_err());
    }

    #[test]
    fn an_idempotency_key_is_absent_valid_or_refused() {
        let with = |values: &[&[u8]]| {
            let mut request = request("/api/holds", Body::Empty);
            for value in values {
                let value = HeaderValue::from_bytes(value).expect("a header value");
                request.headers_mut().append("idempotency-key", value);
            }
            idempotency_key(&request).map_err(|err| err.code())
        };
        assert_eq!(with(&[]), Ok(None));
        assert_eq!(with(&[b"attempt-1"]), Ok(Some("attempt-1".to_owned())));
        let longest = "k".repeat(255);
        assert_eq!(with(&[longest.as_bytes()]), Ok(Some(longest.clone())));
        let too_long = "k".repeat(256);
        for refused in [
            &[b"attempt-\xff".as_slice()][..],
            &["ключ".as_bytes()],
            &[too_long.as_bytes()],
            &[b""],
            &[b"attempt 1"],
            &[b"attempt-1", b"attempt-2"],
            &[b"attempt-1", b"attempt-1"],
        ] {
            assert_eq!(with(refused), Err("invalid_request"), "{refused:?}");
        }
    }

    #[test]
    fn bodies_over_64_kib_are_refused() {
        let at_limit = request("/", Body::Binary(vec![b' '; MAX_BODY_BYTES]));
        assert!(body_bytes(&at_limit).is_ok());
        let over = request("/", Body::Binary(vec![b' '; MAX_BODY_BYTES + 1]));
        assert_eq!(body_bytes(&over).expect_err("too large").status(), 413);
    }

    #[test]
    fn errors_have_the_one_json_shape_and_503_says_when_to_retry() {
        let response = error(&Error::Database(sqlx::Error::PoolTimedOut));
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let body: serde_json::Value =
            serde_json::from_slice(response.body().as_ref()).expect("json");
        assert_eq!(body["error"]["code"], "service_unavailable");
        assert!(body["error"]["message"].is_string());
    }
}
