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

/// A JSON answer that no cache may keep: every answer but a product read's
/// ([`cacheable_json`]) is a buyer's, an admin's or an error, and must not be served to anyone
/// else or later.
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
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// How long a shared cache (CloudFront) may serve a stale answer while it asks again.
pub const STALE_WHILE_REVALIDATE_SECONDS: u64 = 2;

/// A 200 any cache may keep for `max_age` (in whole seconds, at most one; `no-store` when
/// zero), validated by `etag`: `304 Not Modified`, with no body, when the request's
/// `If-None-Match` names it. `etag` is a weak validator (`W/"…"`): it names the figures, not the
/// bytes (the body's `as_of` changes with every read).
pub fn cacheable_json<T: Serialize>(
    request: &Request,
    body: &T,
    etag: &str,
    max_age: std::time::Duration,
) -> Response<Body> {
    let cache_control = if max_age.is_zero() {
        HeaderValue::from_static("no-store")
    } else {
        HeaderValue::from_str(&format!(
            "public, max-age={}, stale-while-revalidate={STALE_WHILE_REVALIDATE_SECONDS}",
            max_age.as_secs().min(1)
        ))
        .expect("digits and ASCII")
    };
    let mut response = if if_none_match(request, etag) {
        let mut response = Response::new(Body::Empty);
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        json(200, body)
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, cache_control);
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    response
}

/// True when an `If-None-Match` of the request names `etag`, or is `*`, by the weak comparison
/// RFC 9110 (13.1.2) prescribes for it: `W/` prefixes aside, the same opaque tag.
fn if_none_match(request: &Request, etag: &str) -> bool {
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    let wanted = opaque(etag);
    request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == "*" || opaque(tag) == wanted)
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

/// The product a request's path names (`…/products/{id}`), or the 400 it is answered with.
pub fn path_product_id(request: &Request) -> Result<crate::domain::ids::ProductId, Error> {
    // Under a function URL, the segment after `products` (`…/products/{id}/queue` too).
    let after_products = || {
        let mut segments = request.uri().path().split('/');
        segments.find(|segment| *segment == "products")?;
        segments
            .next()
            .filter(|segment| !segment.is_empty())
            .map(str::to_owned)
    };
    let raw = request
        .path_parameters_ref()
        .and_then(|params| params.first("id"))
        .map(str::to_owned)
        .or_else(after_products)
        .unwrap_or_else(|| path_id(request, "id"));
    crate::json::whole_number_text(&raw)
        .map(crate::domain::ids::ProductId)
        .ok_or_else(|| {
            Error::InvalidRequest(format!(
                "product id must be a positive integer, got {raw:?}"
            ))
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

    fn conditional(if_none_match: &[&str]) -> Request {
        let mut builder = lambda_http::http::Request::builder().uri("/api/products/1");
        for value in if_none_match {
            builder = builder.header(header::IF_NONE_MATCH, *value);
        }
        builder.body(Body::Empty).expect("a request")
    }

    #[test]
    fn a_cacheable_answer_is_304_with_no_body_when_the_request_names_its_tag() {
        let etag = r#"W/"abc""#;
        let second = std::time::Duration::from_secs(1);
        for names_it in [
            &[r#"W/"abc""#][..],
            &[r#""abc""#],
            &[r#""x", W/"abc""#],
            &[r#""x""#, r#"W/"abc""#],
            &["*"],
        ] {
            let response = cacheable_json(&conditional(names_it), &1, etag, second);
            assert_eq!(response.status(), 304, "{names_it:?}");
            assert!(response.body().is_empty(), "{names_it:?}");
            assert_eq!(response.headers()[header::ETAG], etag);
            assert_eq!(
                response.headers()[header::CACHE_CONTROL],
                "public, max-age=1, stale-while-revalidate=2"
            );
        }
        for misses in [&[][..], &[r#"W/"abd""#], &[r#""ab""#], &["abc"]] {
            let response = cacheable_json(&conditional(misses), &1, etag, second);
            assert_eq!(response.status(), 200, "{misses:?}");
            assert_eq!(response.body().as_ref(), b"1");
            assert_eq!(response.headers()[header::ETAG], etag);
        }
    }

    #[test]
    fn the_max_age_is_whole_seconds_at_most_one_and_zero_stores_nothing() {
        let cache_control = |ms| {
            let response = cacheable_json(
                &conditional(&[]),
                &1,
                r#"W/"t""#,
                std::time::Duration::from_millis(ms),
            );
            response.headers()[header::CACHE_CONTROL]
                .to_str()
                .expect("ASCII")
                .to_owned()
        };
        assert_eq!(cache_control(0), "no-store");
        assert_eq!(
            cache_control(500),
            "public, max-age=0, stale-while-revalidate=2"
        );
        assert_eq!(
            cache_control(1_000),
            "public, max-age=1, stale-while-revalidate=2"
        );
        assert_eq!(
            cache_control(5_000),
            "public, max-age=1, stale-while-revalidate=2"
        );
        assert_eq!(json(201, &1).headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(
            error(&Error::HoldNotFound).headers()[header::CACHE_CONTROL],
            "no-store"
        );
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
