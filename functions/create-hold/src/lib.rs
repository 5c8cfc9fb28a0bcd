//! `POST /api/holds`: reserves units of a product for `HOLD_TTL_SECONDS`, never more than are
//! available; an `Idempotency-Key` makes repeats return the first hold. A product with a waiting
//! room needs the buyer's `Admission-Token`, checked before the database is touched.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::adapters::local::NoPublisher;
use shared::config::BuyerAuth;
use shared::domain::admission::AdmissionTokens;
use shared::domain::ids::ProductId;
use shared::http::{self, Body, Request, Response};
use shared::ports::{DeadlineScheduler, EventPublisher};
use shared::service;
use shared::service::Effects;
use shared::store::holds::HoldRequest;
use shared::store::pool::Pool;

pub struct Deps {
    pub pool: Pool,
    pub scheduler: Arc<dyn DeadlineScheduler>,
    /// Events of holds this function settles on its slow path. The Lambda leaves them to the
    /// sweeper rather than link an EventBridge client into the hottest function.
    pub publisher: Arc<dyn EventPublisher>,
    pub hold_ttl: Duration,
    pub max_hold_qty: u32,
    pub buyer_auth: BuyerAuth,
    /// `ADMISSION_TOKEN_SECRET`: checks the admission tokens of products with a waiting room
    /// (without it, a hold of such a product fails as misconfigured).
    pub admission_tokens: Option<AdmissionTokens>,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            scheduler: lambda.scheduler().await?,
            publisher: Arc::new(NoPublisher),
            hold_ttl: lambda.config.holds.ttl,
            max_hold_qty: lambda.config.holds.max_qty,
            buyer_auth: lambda.config.buyers.auth,
            admission_tokens: lambda.config.require_admission_tokens().ok(),
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    http::respond_committing(async {
        let hold = parse(&request, deps.max_hold_qty, deps.buyer_auth)?;
        service::queue::check_admission(
            &deps.pool,
            deps.admission_tokens.as_ref(),
            hold.product_id,
            hold.buyer.as_ref(),
            http::header(&request, ADMISSION_TOKEN),
        )
        .await?;
        execute(deps, &hold).await
    })
    .await
}

/// The header a waiting room's admission token comes in.
pub const ADMISSION_TOKEN: &str = "admission-token";

#[derive(Deserialize)]
struct CreateHold {
    #[serde(deserialize_with = "shared::json::whole_number")]
    product_id: u64,
    #[serde(alias = "quantity", deserialize_with = "shared::json::whole_number")]
    qty: u32,
}

/// The hold a request asks for, or the 4xx it is answered with. The buyer is judged first (no
/// buyer: 401, whatever else), then the `Idempotency-Key` before the body, so a request with
/// both wrong is refused for its key.
pub fn parse(request: &Request, max_qty: u32, buyer_auth: BuyerAuth) -> Result<HoldRequest, Error> {
    let buyer = http::buyer(request, buyer_auth)?;
    let idempotency_key = http::idempotency_key(request)?;
    let body: CreateHold = http::body_json(request)?;
    if body.qty < 1 || body.qty > max_qty {
        return Err(Error::InvalidRequest(format!(
            "qty must be from 1 to {max_qty}"
        )));
    }
    Ok(HoldRequest {
        product_id: ProductId(body.product_id),
        buyer,
        qty: body.qty,
        idempotency_key,
    })
}

async fn execute(deps: &Deps, hold: &HoldRequest) -> Result<Response<Body>, Error> {
    let effects = Effects {
        scheduler: deps.scheduler.as_ref(),
        publisher: deps.publisher.as_ref(),
    };
    let reservation = service::holds::create_hold(&deps.pool, effects, hold, deps.hold_ttl).await?;
    let mut response = http::json(201, &reservation.hold);
    if reservation.replayed {
        response.headers_mut().insert(
            "idempotent-replayed",
            lambda_http::http::HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use lambda_http::http::HeaderValue;

    use super::*;

    const MAX_QTY: u32 = 10;

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    fn post(body: &str) -> Request {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/api/holds")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .expect("a request")
    }

    fn with_key(mut request: Request, key: &[u8]) -> Request {
        let key = HeaderValue::from_bytes(key).expect("a header value");
        request.headers_mut().append("idempotency-key", key);
        request
    }

    /// What the request asks for: (product, qty, key).
    fn accepted(request: &Request) -> (u64, u32, Option<String>) {
        match parse(request, MAX_QTY, BuyerAuth::None) {
            Ok(hold) => (hold.product_id.0, hold.qty, hold.idempotency_key),
            Err(err) => panic!("refused: {err}"),
        }
    }

    /// How the request is answered: (status, code, message).
    fn refused(request: &Request) -> (u16, &'static str, String) {
        match parse(request, MAX_QTY, BuyerAuth::None) {
            Ok(hold) => panic!("accepted: qty {}", hold.qty),
            Err(err) => (err.status(), err.code(), err.public_message()),
        }
    }

    #[test]
    fn the_sample_events_ask_for_what_they_say() {
        let created = sample(include_str!("../../../events/create-hold.created.json"));
        assert_eq!(accepted(&created), (1, 2, None));
        let idempotent = sample(include_str!("../../../events/create-hold.idempotent.json"));
        assert_eq!(
            accepted(&idempotent),
            (1, 1, Some("checkout-7f3a9c".to_owned()))
        );
        let unknown = sample(include_str!(
            "../../../events/create-hold.unknown-product.json"
        ));
        assert_eq!(accepted(&unknown), (999_999, 1, None));
        let too_many = sample(include_str!("../../../events/create-hold.too-many.json"));
        assert_eq!(
            refused(&too_many),
            (
                400,
                "invalid_request",
                "qty must be from 1 to 10".to_owned()
            )
        );
    }

    #[test]
    fn qty_is_from_one_to_the_maximum() {
        assert_eq!(accepted(&post(r#"{"product_id": 7, "qty": 1}"#)).1, 1);
        assert_eq!(accepted(&post(r#"{"product_id": 7, "qty": 10}"#)).1, 10);
        for qty in ["0", "11", "4294967295"] {
            let body = format!(r#"{{"product_id": 7, "qty": {qty}}}"#);
            assert_eq!(
                refused(&post(&body)),
                (
                    400,
                    "invalid_request",
                    "qty must be from 1 to 10".to_owned()
                ),
                "{qty}"
            );
        }
        let refused_by_another_maximum =
            parse(&post(r#"{"product_id": 7, "qty": 3}"#), 2, BuyerAuth::None);
        assert!(
            matches!(refused_by_another_maximum, Err(Error::InvalidRequest(message)) if message == "qty must be from 1 to 2")
        );
    }

    #[test]
    fn quantity_is_another_name_for_qty_and_whole_numbers_may_have_a_zero_fraction() {
        assert_eq!(
            accepted(&post(r#"{"product_id": 7, "quantity": 3}"#)),
            (7, 3, None)
        );
        assert_eq!(
            accepted(&post(r#"{"product_id": 7.0, "qty": 2.0}"#)),
            (7, 2, None)
        );
    }

    #[test]
    fn a_body_of_the_wrong_shape_is_an_invalid_request() {
        for body in [
            r#"{"qty": 1}"#,
            r#"{"product_id": 7}"#,
            r#"{"product_id": "7", "qty": 1}"#,
            r#"{"product_id": 7, "qty": 1.5}"#,
            r#"{"product_id": -7, "qty": 1}"#,
            r#"{"product_id": 7, "qty": -1}"#,
            "[7, 1]",
        ] {
            assert_eq!(refused(&post(body)).1, "invalid_request", "{body}");
        }
    }

    #[test]
    fn a_body_that_is_not_json_is_malformed_and_an_oversized_one_too_large() {
        for body in ["", "{\"product_id\": 7", "product_id=7&qty=1"] {
            assert_eq!(refused(&post(body)).1, "malformed_json", "{body:?}");
        }
        let oversized = format!(
            r#"{{"product_id": 7, "qty": 1, "pad": "{}"}}"#,
            " ".repeat(http::MAX_BODY_BYTES)
        );
        assert_eq!(refused(&post(&oversized)).0, 413);
    }

    #[test]
    fn an_idempotency_key_is_kept_exactly_and_a_bad_one_refused_before_the_body() {
        let body = r#"{"product_id": 7, "qty": 1}"#;
        assert_eq!(
            accepted(&with_key(post(body), b"Attempt-1")).2,
            Some("Attempt-1".to_owned())
        );
        let message = "Idempotency-Key must be 1 to 255 printable ASCII characters".to_owned();
        assert_eq!(
            refused(&with_key(post(body), b"attempt 1")),
            (400, "invalid_request", message.clone())
        );
        assert_eq!(
            refused(&with_key(post("{not json"), b"")),
            (400, "invalid_request", message)
        );
        let twice = with_key(with_key(post(body), b"attempt-1"), b"attempt-1");
        assert_eq!(
            refused(&twice).2,
            "send one Idempotency-Key header, not several"
        );
    }
}
