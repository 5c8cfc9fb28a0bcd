//! `POST /api/payments/webhook`: verifies the provider's signature over the raw body, validates
//! the event and answers 202 only once the event is durably queued.

use std::sync::Arc;
use std::time::Duration;

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
    http::respond(receive(deps, &request)).await
}

async fn receive(deps: &Deps, request: &Request) -> Result<Response<Body>, Error> {
    // The moment of receipt, before anything else: what the payment deadline is judged by.
    let received_at = chrono::Utc::now();
    let body = http::body_bytes(request)?;
    shared::domain::webhook::verify_signature(
        http::header(request, "x-signature"),
        body,
        &deps.secrets,
        deps.tolerance,
        received_at.timestamp(),
    )?;
    let event = PaymentEvent::from_webhook(body, received_at.naive_utc())?;
    deps.queue.enqueue(&event).await?;
    Ok(http::json(
        202,
        &serde_json::json!({"status": "queued", "idempotency_key": event.idempotency_key}),
    ))
}
