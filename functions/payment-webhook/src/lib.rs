//! `POST /api/payments/webhook`: verifies the provider's signature over the raw body, validates
//! the event and answers 202 only once the event is durably queued.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::adapters::local::{InboxQueue, NoPublisher};
use shared::domain::payment::PaymentEvent;
use shared::http::{self, Body, Request, Response};
use shared::ports::PaymentQueue;

pub struct Deps {
    pub secrets: Vec<SecretString>,
    pub tolerance: Duration,
    pub queue: Arc<dyn PaymentQueue>,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            secrets: lambda.config.require_webhook_secrets()?,
            tolerance: lambda.config.webhook.tolerance,
            queue: match lambda.payment_queue().await? {
                Some(sqs) => sqs,
                // No queue service: queue durably in the database and apply at once; what cannot be
                // applied yet is retried by the sweeper, which also publishes the events.
                None => Arc::new(InboxQueue::draining_on_enqueue(
                    lambda.pool().await?,
                    lambda.config.payment_retry_policy(),
                    Arc::new(NoPublisher),
                )),
            },
        })
    }
}

pub async fn handle(deps: &Deps, request: Request) -> Result<Response<Body>, lambda_http::Error> {
    // The moment of receipt, before anything else: what the payment deadline is judged by.
    let received_at = Utc::now();
    http::respond(async {
        let event = parse(&request, &deps.secrets, deps.tolerance, received_at)?;
        execute(deps, &event).await
    })
    .await
}

/// The provider's event a request carries, received at `received_at`, or the 4xx it is answered
/// with. The signature is verified over the raw body before anything parses it.
pub fn parse(
    request: &Request,
    secrets: &[SecretString],
    tolerance: Duration,
    received_at: DateTime<Utc>,
) -> Result<PaymentEvent, Error> {
    let body = http::body_bytes(request)?;
    shared::domain::webhook::verify_signature(
        http::header(request, "x-signature"),
        body,
        secrets,
        tolerance,
        received_at.timestamp(),
    )?;
    PaymentEvent::from_webhook(body, received_at.naive_utc())
}

async fn execute(deps: &Deps, event: &PaymentEvent) -> Result<Response<Body>, Error> {
    deps.queue.enqueue(event).await?;
    Ok(http::json(
        202,
        &serde_json::json!({"status": "queued", "idempotency_key": event.idempotency_key}),
    ))
}

#[cfg(test)]
mod tests {
    use shared::domain::ids::OrderId;
    use shared::domain::money::Cents;
    use shared::domain::payment::PaymentStatus;
    use shared::domain::webhook::sign;

    use super::*;

    const TOLERANCE: Duration = Duration::from_secs(300);
    /// When the sample event was signed (its `t=`).
    const SIGNED_AT: i64 = 1_790_000_000;
    const ORDER_ID: &str = "9d2f8a61-7c4b-4e1a-8f3d-2b6c5e4a1f70";

    /// The `WEBHOOK_SECRET` of `[workspace.metadata.lambda.env]`, which the samples are signed with.
    fn secret() -> SecretString {
        SecretString::from("dev-webhook-secret".to_owned())
    }

    fn at(unix: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(unix, 0).expect("a time")
    }

    fn sample(json: &str) -> Request {
        lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
    }

    fn paid() -> Request {
        sample(include_str!("../../../events/payment-webhook.paid.json"))
    }

    /// A body as the provider would send it, signed at `SIGNED_AT` with `secret`.
    fn signed(secret: &SecretString, body: &str) -> Request {
        lambda_http::http::Request::builder()
            .method("POST")
            .uri("/api/payments/webhook")
            .header("x-signature", sign(secret, SIGNED_AT, body.as_bytes()))
            .body(Body::from(body))
            .expect("a request")
    }

    /// How the request is answered: (status, code, message).
    fn refused(request: &Request, received_at: DateTime<Utc>) -> (u16, &'static str, String) {
        match parse(request, &[secret()], TOLERANCE, received_at) {
            Ok(event) => panic!("accepted: {}", event.idempotency_key),
            Err(err) => (err.status(), err.code(), err.public_message()),
        }
    }

    fn invalid_signature(why: &str) -> (u16, &'static str, String) {
        (
            401,
            "invalid_signature",
            format!("missing or invalid webhook signature: {why}"),
        )
    }

    #[test]
    fn the_sample_event_received_when_it_was_signed_is_its_payment_at_that_time() {
        let received_at = at(SIGNED_AT + 3);
        let event = parse(&paid(), &[secret()], TOLERANCE, received_at).expect("accepted");
        assert_eq!(
            event,
            PaymentEvent {
                idempotency_key: "evt_1Q2w3E4r5T".to_owned(),
                order_id: OrderId::parse(ORDER_ID).expect("an id"),
                status: PaymentStatus::Paid,
                amount: None,
                received_at: received_at.naive_utc(),
            }
        );
    }

    #[test]
    fn a_signature_outside_the_tolerance_either_way_is_a_replay() {
        for received_at in [SIGNED_AT + 300, SIGNED_AT - 300] {
            assert!(parse(&paid(), &[secret()], TOLERANCE, at(received_at)).is_ok());
        }
        for received_at in [SIGNED_AT + 301, SIGNED_AT - 301] {
            assert_eq!(
                refused(&paid(), at(received_at)),
                invalid_signature("timestamp outside the tolerance")
            );
        }
    }

    #[test]
    fn an_unsigned_or_wrongly_signed_request_is_refused() {
        let unsigned = sample(include_str!(
            "../../../events/payment-webhook.unsigned.json"
        ));
        assert_eq!(
            refused(&unsigned, at(SIGNED_AT)),
            invalid_signature("X-Signature header is missing")
        );
        let body =
            format!(r#"{{"idempotency_key":"evt_1","order_id":"{ORDER_ID}","status":"paid"}}"#);
        let other_secret = SecretString::from("another-secret".to_owned());
        assert_eq!(
            refused(&signed(&other_secret, &body), at(SIGNED_AT)),
            invalid_signature("signature does not match")
        );
        let mut tampered = signed(&secret(), &body);
        *tampered.body_mut() = Body::from(body.replace("paid", "failed"));
        assert_eq!(
            refused(&tampered, at(SIGNED_AT)),
            invalid_signature("signature does not match")
        );
    }

    #[test]
    fn during_a_rotation_either_secret_verifies() {
        let body =
            format!(r#"{{"idempotency_key":"evt_1","order_id":"{ORDER_ID}","status":"paid"}}"#);
        let old = SecretString::from("old-secret".to_owned());
        let secrets = [secret(), old.clone()];
        for signing in [secret(), old] {
            assert!(parse(&signed(&signing, &body), &secrets, TOLERANCE, at(SIGNED_AT)).is_ok());
        }
    }

    #[test]
    fn the_receipt_time_is_ours_not_the_bodys() {
        let body = format!(
            r#"{{"idempotency_key":"evt_1","order_id":"{ORDER_ID}","status":"failed","amount":"50.00","received_at":"2020-01-01T00:00:00Z"}}"#
        );
        let received_at = at(SIGNED_AT);
        let event = parse(
            &signed(&secret(), &body),
            &[secret()],
            TOLERANCE,
            received_at,
        )
        .expect("accepted");
        assert_eq!(
            (event.status, event.amount, event.received_at),
            (
                PaymentStatus::Failed,
                Some(Cents(5000)),
                received_at.naive_utc()
            )
        );
    }

    #[test]
    fn a_signed_body_that_is_not_a_valid_event_is_a_bad_request() {
        for (body, code) in [
            ("{not json".to_owned(), "malformed_json"),
            ("[]".to_owned(), "invalid_request"),
            (
                r#"{"idempotency_key":"evt_1","order_id":"not-an-order","status":"paid"}"#
                    .to_owned(),
                "invalid_request",
            ),
            (
                format!(r#"{{"idempotency_key":"","order_id":"{ORDER_ID}","status":"paid"}}"#),
                "invalid_request",
            ),
            (
                format!(
                    r#"{{"idempotency_key":"evt_1","order_id":"{ORDER_ID}","status":"refunded"}}"#
                ),
                "invalid_request",
            ),
            (
                format!(
                    r#"{{"idempotency_key":"evt_1","order_id":"{ORDER_ID}","status":"paid","amount":"5.001"}}"#
                ),
                "invalid_request",
            ),
        ] {
            assert_eq!(
                refused(&signed(&secret(), &body), at(SIGNED_AT)).1,
                code,
                "{body}"
            );
        }
    }

    #[test]
    fn an_oversized_body_is_refused_before_its_signature_is_checked() {
        let unsigned = lambda_http::http::Request::builder()
            .method("POST")
            .uri("/api/payments/webhook")
            .body(Body::from(vec![b' '; http::MAX_BODY_BYTES + 1]))
            .expect("a request");
        assert_eq!(refused(&unsigned, at(SIGNED_AT)).1, "payload_too_large");
    }
}
