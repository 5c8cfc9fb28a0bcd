//! Payment provider events: verifying the webhook signature and applying an event to its order.

use std::time::Duration;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sqlx::MySqlPool;

use crate::db::retry_conflicts;
use crate::error::{Error, is_duplicate_key};
use crate::events::{self, Committed, EventType};
use crate::ids::{MAX_IDEMPOTENCY_KEY_LEN, OrderId, is_idempotency_key};
use crate::model::OrderStatus;
use crate::stock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Paid,
    Failed,
}

impl PaymentStatus {
    pub(crate) fn as_db(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::Failed => "failed",
        }
    }

    pub(crate) fn from_db(stored: &str) -> Self {
        if stored == "paid" {
            Self::Paid
        } else {
            Self::Failed
        }
    }
}

/// One event from the payment provider, as the webhook receives it and the queue carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub idempotency_key: String,
    pub order_id: OrderId,
    pub status: PaymentStatus,
}

impl PaymentEvent {
    /// Parses and validates a webhook body (already verified as raw bytes).
    pub fn from_json(body: &[u8]) -> Result<Self, Error> {
        #[derive(Deserialize)]
        struct Body {
            idempotency_key: String,
            order_id: String,
            status: PaymentStatus,
        }
        let body: Body = crate::json::parse(body)?;
        if !is_idempotency_key(&body.idempotency_key) {
            return Err(Error::InvalidRequest(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"
            )));
        }
        let order_id = OrderId::parse(&body.order_id)
            .ok_or_else(|| Error::InvalidRequest("order_id is not an order id".into()))?;
        Ok(Self {
            idempotency_key: body.idempotency_key,
            order_id,
            status: body.status,
        })
    }
}

/// Verifies `X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">` against
/// every configured secret (several during a rotation) in constant time, and that `t` is within
/// `tolerance` of `now_unix` so a captured request cannot be replayed later.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secrets: &[SecretString],
    tolerance: Duration,
    now_unix: i64,
) -> Result<(), Error> {
    let header = header.ok_or(Error::InvalidSignature("X-Signature header is missing"))?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<i64>().ok(),
            Some(("v1", value)) => signatures.extend(hex::decode(value).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Error::InvalidSignature("no valid t= in X-Signature"))?;
    if signatures.is_empty() {
        return Err(Error::InvalidSignature("no valid v1= in X-Signature"));
    }
    let tolerance = i64::try_from(tolerance.as_secs()).unwrap_or(i64::MAX);
    if now_unix.abs_diff(timestamp) > tolerance.unsigned_abs() {
        return Err(Error::InvalidSignature("timestamp outside the tolerance"));
    }
    let verified = secrets.iter().any(|secret| {
        signatures.iter().any(|signature| {
            signed_payload_mac(secret, timestamp, body)
                .verify_slice(signature)
                .is_ok()
        })
    });
    if verified {
        Ok(())
    } else {
        Err(Error::InvalidSignature("signature does not match"))
    }
}

/// The header a provider would send: what tests, the bench and the README's example produce.
pub fn sign(secret: &SecretString, timestamp: i64, body: &[u8]) -> String {
    let mac = signed_payload_mac(secret, timestamp, body)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(mac))
}

fn signed_payload_mac(secret: &SecretString, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// What applying an event did, recorded with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The order was pending and now is paid, or cancelled with its units back in stock.
    Applied(OrderStatus),
    /// This idempotency key was applied before: nothing happened.
    Duplicate,
    /// The order had reached a terminal status already and the first one wins; this event is
    /// only recorded.
    IgnoredTerminal(OrderStatus),
    /// `paid` for an order that was cancelled (payment failed, or its deadline passed): the money
    /// must be refunded.
    RefundRequired,
}

impl PaymentOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied(OrderStatus::Paid) => "paid",
            Self::Applied(_) => "cancelled",
            Self::Duplicate => "duplicate",
            Self::IgnoredTerminal(OrderStatus::Paid) => "ignored_order_paid",
            Self::IgnoredTerminal(_) => "ignored_order_cancelled",
            Self::RefundRequired => "refund_required",
        }
    }
}

/// Applies one event, exactly once per idempotency key: the order row lock serialises events of
/// one order, the key's primary key makes a repeat a no-op. An unknown order is an error the
/// caller retries later: its event may have overtaken the order. An order past its payment
/// deadline is cancelled first, so a late `paid` is recorded as needing a refund.
pub async fn apply_payment(
    pool: &MySqlPool,
    event: &PaymentEvent,
) -> Result<Committed<PaymentOutcome>, Error> {
    let applied = retry_conflicts("apply_payment", || try_apply_payment(pool, event)).await?;
    let outcome = applied.value;
    match outcome {
        PaymentOutcome::RefundRequired => tracing::warn!(
            order_id = %event.order_id,
            idempotency_key = %event.idempotency_key,
            "payment succeeded for a cancelled order: refund required"
        ),
        _ => tracing::info!(
            order_id = %event.order_id,
            idempotency_key = %event.idempotency_key,
            outcome = outcome.as_str(),
            "payment event processed"
        ),
    }
    Ok(applied)
}

async fn try_apply_payment(
    pool: &MySqlPool,
    event: &PaymentEvent,
) -> Result<Committed<PaymentOutcome>, Error> {
    let mut tx = pool.begin().await?;
    let (order, stored) = stock::lock_order(&mut tx, &event.order_id)
        .await?
        .ok_or(Error::OrderNotFound)?;
    let mut events = Vec::new();
    // `order.status` is what readers see: a pending order past its deadline is cancelled.
    let lapsed = stored.is("pending_payment") && order.status == OrderStatus::Cancelled;
    let outcome = match (order.status, event.status) {
        (OrderStatus::PendingPayment, PaymentStatus::Paid) => {
            PaymentOutcome::Applied(OrderStatus::Paid)
        }
        (OrderStatus::PendingPayment, PaymentStatus::Failed) => {
            PaymentOutcome::Applied(OrderStatus::Cancelled)
        }
        (OrderStatus::Cancelled, PaymentStatus::Paid) => PaymentOutcome::RefundRequired,
        (terminal, _) => PaymentOutcome::IgnoredTerminal(terminal),
    };
    // Inserted under the order lock, so a concurrent repeat of this key waits for us and then
    // finds it: the duplicate check and the effect are one atomic step.
    let recorded = sqlx::query(
        "INSERT INTO payment_events (idempotency_key, order_id, status, outcome, applied_at) \
         VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3))",
    )
    .bind(&event.idempotency_key)
    .bind(event.order_id.as_str())
    .bind(event.status.as_db())
    .bind(outcome.as_str())
    .execute(&mut *tx)
    .await;
    match recorded {
        Ok(_) => {}
        Err(err) if is_duplicate_key(&err) => {
            tx.rollback().await?;
            return Ok(Committed::quiet(PaymentOutcome::Duplicate));
        }
        Err(err) => return Err(err.into()),
    }
    if lapsed {
        events.push(stock::cancel_order(&mut tx, &order, "payment_timeout").await?);
    }
    let payment_detail = || {
        let mut detail = stock::order_event_detail(&order, event.status.as_db());
        detail["idempotency_key"] = serde_json::Value::String(event.idempotency_key.clone());
        detail
    };
    match outcome {
        PaymentOutcome::Applied(OrderStatus::Paid) => {
            sqlx::query(
                "UPDATE orders SET status = 'paid', updated_at = UTC_TIMESTAMP(3) WHERE id = ?",
            )
            .bind(event.order_id.as_str())
            .execute(&mut *tx)
            .await?;
            events.push(events::record(&mut tx, EventType::OrderPaid, payment_detail()).await?);
        }
        PaymentOutcome::Applied(_) => {
            events.push(stock::cancel_order(&mut tx, &order, "payment_failed").await?);
        }
        PaymentOutcome::RefundRequired => {
            events.push(events::record(&mut tx, EventType::LatePayment, payment_detail()).await?);
        }
        PaymentOutcome::Duplicate | PaymentOutcome::IgnoredTerminal(_) => {}
    }
    tx.commit().await?;
    Ok(Committed::new(outcome, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOLERANCE: Duration = Duration::from_secs(300);
    const NOW: i64 = 1_790_000_000;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_owned())
    }

    #[test]
    fn a_correctly_signed_body_verifies() {
        let body = br#"{"idempotency_key":"evt_1","order_id":"x","status":"paid"}"#;
        let header = sign(&secret("whsec"), NOW, body);
        assert!(verify_signature(Some(&header), body, &[secret("whsec")], TOLERANCE, NOW).is_ok());
    }

    #[test]
    fn any_configured_secret_verifies_during_rotation() {
        let body = b"{}";
        let header = sign(&secret("old"), NOW, body);
        let secrets = [secret("new"), secret("old")];
        assert!(verify_signature(Some(&header), body, &secrets, TOLERANCE, NOW).is_ok());
    }

    #[test]
    fn tampering_wrong_secrets_and_stale_timestamps_are_refused() {
        let body = b"{\"status\":\"paid\"}";
        let secrets = [secret("whsec")];
        let header = sign(&secrets[0], NOW, body);
        let refused = |header: Option<&str>, body: &[u8], now: i64| {
            verify_signature(header, body, &secrets, TOLERANCE, now).is_err()
        };
        assert!(refused(Some(&header), b"{\"status\":\"failed\"}", NOW));
        assert!(refused(Some(&sign(&secret("other"), NOW, body)), body, NOW));
        assert!(refused(Some(&header), body, NOW + 301));
        assert!(refused(Some(&header), body, NOW - 301));
        assert!(!refused(Some(&header), body, NOW + 300));
        assert!(refused(None, body, NOW));
        assert!(refused(Some("t=abc,v1=00"), body, NOW));
        assert!(refused(Some(&format!("t={NOW}")), body, NOW));
        assert!(refused(Some(&format!("t={NOW},v1=zz")), body, NOW));
    }

    #[test]
    fn event_bodies_are_validated() {
        let order_id = OrderId::generate();
        let good =
            format!(r#"{{"idempotency_key":"evt_1","order_id":"{order_id}","status":"failed"}}"#);
        let event = PaymentEvent::from_json(good.as_bytes()).expect("valid");
        assert_eq!(event.status, PaymentStatus::Failed);
        for bad in [
            format!(r#"{{"idempotency_key":"","order_id":"{order_id}","status":"paid"}}"#),
            format!(r#"{{"idempotency_key":"evt 1","order_id":"{order_id}","status":"paid"}}"#),
            format!(r#"{{"idempotency_key":"evt_1","order_id":"{order_id}","status":"refunded"}}"#),
            r#"{"idempotency_key":"evt_1","order_id":"nope","status":"paid"}"#.to_owned(),
            r#"{"idempotency_key":"evt_1","status":"paid"}"#.to_owned(),
            "not json".to_owned(),
        ] {
            let err = PaymentEvent::from_json(bad.as_bytes()).expect_err(&bad);
            assert_eq!(err.status(), 400, "{bad}");
        }
    }
}
