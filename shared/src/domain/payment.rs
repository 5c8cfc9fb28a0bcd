//! Payment provider events: verifying the webhook signature, deciding what an event does to its
//! order, and applying it.
//!
//! The rule: a `paid` event *received* (by our webhook) before the order's `payment_due_at` pays
//! the order, however late it is applied: retries, lock waits, a backlog and short outages are
//! ours, not the customer's. An unpaid order is cancelled only at its `cancel_at`
//! (`payment_due_at` + `PAYMENT_GRACE_SECONDS`), so until then such an event still finds it
//! pending. A `paid` received at or after `payment_due_at` is late: the order is cancelled if it is
//! still pending, and the event needs a refund. So does a second `paid` for a paid order (a double
//! charge). An event whose `amount` is not the order's changes nothing and is flagged for a person.

use chrono::NaiveDateTime;
use serde::Deserialize;

use crate::domain::ids::{MAX_IDEMPOTENCY_KEY_LEN, OrderId, is_idempotency_key};
use crate::domain::model::{Order, OrderStatus, to_rfc3339};
use crate::domain::money::Cents;
use crate::error::Error;

pub use crate::domain::model::PaymentStatus;

/// One event from the payment provider, as the webhook received it and the queue carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    pub idempotency_key: String,
    pub order_id: OrderId,
    pub status: PaymentStatus,
    /// The amount the provider says it took, when it says.
    pub amount: Option<Cents>,
    /// When our webhook received it, by its clock (UTC): what the payment deadline is judged by.
    pub received_at: NaiveDateTime,
}

/// The event's JSON: the webhook's body (whose `received_at`, if any, is ignored: the time is
/// ours to take) and the queue's message (which carries ours).
#[derive(Deserialize)]
struct WireEvent {
    idempotency_key: String,
    order_id: String,
    status: PaymentStatus,
    #[serde(default)]
    amount: Option<String>,
    #[serde(default)]
    received_at: Option<String>,
}

impl PaymentEvent {
    /// Parses and validates a webhook body (already verified as raw bytes) received at
    /// `received_at`.
    pub fn from_webhook(body: &[u8], received_at: NaiveDateTime) -> Result<Self, Error> {
        let wire: WireEvent = crate::json::parse(body)?;
        Self::validated(wire, received_at)
    }

    /// Parses a queued message. One queued before receipt times were carried has none; then
    /// `queued_at` (SQS's SentTimestamp, which is no earlier) stands in for it.
    pub fn from_queue_message(
        body: &[u8],
        queued_at: Option<NaiveDateTime>,
    ) -> Result<Self, Error> {
        let wire: WireEvent = crate::json::parse(body)?;
        let received_at = match &wire.received_at {
            Some(raw) => chrono::DateTime::parse_from_rfc3339(raw)
                .map(|at| at.naive_utc())
                .map_err(|_| {
                    Error::InvalidRequest(format!("received_at {raw:?} is not RFC 3339"))
                })?,
            None => queued_at.ok_or_else(|| {
                Error::InvalidRequest("the message says nothing of when it was received".into())
            })?,
        };
        Self::validated(wire, received_at)
    }

    fn validated(wire: WireEvent, received_at: NaiveDateTime) -> Result<Self, Error> {
        if !is_idempotency_key(&wire.idempotency_key) {
            return Err(Error::InvalidRequest(format!(
                "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters"
            )));
        }
        let order_id = OrderId::parse(&wire.order_id)
            .ok_or_else(|| Error::InvalidRequest("order_id is not an order id".into()))?;
        let amount = wire
            .amount
            .map(|raw| {
                Cents::parse(&raw).ok_or_else(|| {
                    Error::InvalidRequest(
                        "amount must be a decimal string with at most two decimals, like \"50.00\""
                            .into(),
                    )
                })
            })
            .transpose()?;
        Ok(Self {
            idempotency_key: wire.idempotency_key,
            order_id,
            status: wire.status,
            amount,
            received_at,
        })
    }

    /// The queue's message: the event with its receipt time.
    pub fn to_queue_message(&self) -> String {
        let mut message = serde_json::json!({
            "idempotency_key": self.idempotency_key,
            "order_id": self.order_id,
            "status": self.status,
            "received_at": to_rfc3339(&self.received_at),
        });
        if let Some(amount) = self.amount {
            message["amount"] = serde_json::Value::String(amount.to_string());
        }
        message.to_string()
    }
}

/// What applying an event did, recorded with the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// The order was pending: now it is paid (a `paid` received in time), or cancelled with its
    /// units back in stock (a `failed`).
    Applied(OrderStatus),
    /// This idempotency key was applied before: nothing happened, nothing recorded.
    Duplicate,
    /// The order had settled already and the first terminal outcome wins; only recorded.
    IgnoredTerminal(OrderStatus),
    /// `paid` for an order that is cancelled (payment failed, or the event came after the
    /// deadline): the money must be refunded.
    RefundRequired,
    /// A second `paid` (another idempotency key) for an order paid already: refund it.
    DoubleCharge,
    /// The event's amount is not the order's: not a payment of this order; the order is left
    /// as it is and a person decides.
    AmountMismatch,
}

impl PaymentOutcome {
    /// As stored in `payment_events.outcome` and logged.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Applied(OrderStatus::Paid) => "paid",
            Self::Applied(_) => "cancelled",
            Self::Duplicate => "duplicate",
            Self::IgnoredTerminal(OrderStatus::Paid) => "ignored_order_paid",
            Self::IgnoredTerminal(_) => "ignored_order_cancelled",
            Self::RefundRequired => "refund_required",
            Self::DoubleCharge => "double_charge",
            Self::AmountMismatch => "amount_mismatch",
        }
    }

    /// Money the provider took that must go back.
    pub fn needs_refund(self) -> bool {
        matches!(self, Self::RefundRequired | Self::DoubleCharge)
    }
}

/// What an event does to its order, decided from the order as its row lock shows it: the pure
/// rule of the module doc. `stored` is the row's status, `lapsed` whether its `cancel_at` has
/// passed. Returns the outcome and, when the order must be cancelled, why.
pub fn decide(
    order: &Order,
    stored: OrderStatus,
    lapsed: bool,
    event: &PaymentEvent,
) -> (PaymentOutcome, Option<&'static str>) {
    use OrderStatus::{Cancelled, Paid, PendingPayment};
    if event.amount.is_some_and(|amount| amount != order.amount) {
        return (PaymentOutcome::AmountMismatch, None);
    }
    let on_time = event.received_at < order.payment_due_at;
    match (stored, event.status) {
        (PendingPayment, PaymentStatus::Paid) if on_time && !lapsed => {
            (PaymentOutcome::Applied(Paid), None)
        }
        (PendingPayment, PaymentStatus::Paid) => {
            (PaymentOutcome::RefundRequired, Some("payment_timeout"))
        }
        (PendingPayment, PaymentStatus::Failed) if lapsed => (
            PaymentOutcome::IgnoredTerminal(Cancelled),
            Some("payment_timeout"),
        ),
        (PendingPayment, PaymentStatus::Failed) => {
            (PaymentOutcome::Applied(Cancelled), Some("payment_failed"))
        }
        (Paid, PaymentStatus::Paid) => (PaymentOutcome::DoubleCharge, None),
        (Cancelled, PaymentStatus::Paid) => (PaymentOutcome::RefundRequired, None),
        (terminal, PaymentStatus::Failed) => (PaymentOutcome::IgnoredTerminal(terminal), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::RecordedOutcome;

    const NOW: i64 = 1_790_000_000;

    #[test]
    fn event_bodies_are_validated() {
        let order_id = OrderId::generate();
        let good =
            format!(r#"{{"idempotency_key":"evt_1","order_id":"{order_id}","status":"failed"}}"#);
        let event = PaymentEvent::from_webhook(good.as_bytes(), at(0)).expect("valid");
        assert_eq!(event.status, PaymentStatus::Failed);
        assert_eq!((event.amount, event.received_at), (None, at(0)));
        for bad in [
            format!(r#"{{"idempotency_key":"","order_id":"{order_id}","status":"paid"}}"#),
            format!(r#"{{"idempotency_key":"evt 1","order_id":"{order_id}","status":"paid"}}"#),
            format!(r#"{{"idempotency_key":"evt_1","order_id":"{order_id}","status":"refunded"}}"#),
            r#"{"idempotency_key":"evt_1","order_id":"nope","status":"paid"}"#.to_owned(),
            r#"{"idempotency_key":"evt_1","status":"paid"}"#.to_owned(),
            format!(
                r#"{{"idempotency_key":"k","order_id":"{order_id}","status":"paid","amount":"1.234"}}"#
            ),
            format!(
                r#"{{"idempotency_key":"k","order_id":"{order_id}","status":"paid","amount":20}}"#
            ),
            format!(
                r#"{{"idempotency_key":"k","order_id":"{order_id}","status":"paid","amount":"-1"}}"#
            ),
            "not json".to_owned(),
        ] {
            let err = PaymentEvent::from_webhook(bad.as_bytes(), at(0)).expect_err(&bad);
            assert_eq!(err.status(), 400, "{bad}");
        }
    }

    fn at(seconds: i64) -> NaiveDateTime {
        chrono::DateTime::from_timestamp(NOW + seconds, 0)
            .expect("in range")
            .naive_utc()
    }

    #[test]
    fn the_webhook_takes_the_receipt_time_itself_and_the_queue_carries_it() {
        let order_id = OrderId::generate();
        let body = format!(
            r#"{{"idempotency_key":"evt_1","order_id":"{order_id}","status":"paid","amount":"20.00","received_at":"2000-01-01T00:00:00Z"}}"#
        );
        let event = PaymentEvent::from_webhook(body.as_bytes(), at(5)).expect("valid");
        assert_eq!(event.received_at, at(5), "the provider's claim is ignored");
        assert_eq!(event.amount, Some(Cents(2000)));
        let queued = event.to_queue_message();
        assert_eq!(
            PaymentEvent::from_queue_message(queued.as_bytes(), Some(at(60))).expect("valid"),
            event,
            "the message's own receipt time wins over the queue's"
        );
        let older =
            format!(r#"{{"idempotency_key":"evt_1","order_id":"{order_id}","status":"paid"}}"#);
        let event =
            PaymentEvent::from_queue_message(older.as_bytes(), Some(at(60))).expect("valid");
        assert_eq!(event.received_at, at(60));
        assert!(PaymentEvent::from_queue_message(older.as_bytes(), None).is_err());
    }

    fn order(status: OrderStatus) -> Order {
        Order {
            order_id: OrderId::generate(),
            hold_id: crate::domain::ids::HoldId::generate(),
            product_id: crate::domain::ids::ProductId(1),
            buyer_id: None,
            bucket: 0,
            qty: 2,
            amount: Cents(4000),
            status,
            created_at: at(-60),
            payment_due_at: at(0),
            cancel_at: at(300),
        }
    }

    fn event(status: PaymentStatus, received: i64, amount: Option<i64>) -> PaymentEvent {
        PaymentEvent {
            idempotency_key: "evt".into(),
            order_id: OrderId::generate(),
            status,
            amount: amount.map(Cents),
            received_at: at(received),
        }
    }

    #[test]
    fn a_payment_is_judged_by_when_it_was_received() {
        use OrderStatus::*;
        use PaymentStatus::{Failed, Paid as PaidEvent};
        let pending = order(PendingPayment);
        let decided =
            |stored, lapsed, event: PaymentEvent| decide(&pending, stored, lapsed, &event);
        // Received a second before the deadline, applied whenever before cancel_at: paid.
        assert_eq!(
            decided(PendingPayment, false, event(PaidEvent, -1, None)),
            (PaymentOutcome::Applied(Paid), None)
        );
        // Received at or after the deadline: late, the order is cancelled, refund.
        for received in [0, 1] {
            assert_eq!(
                decided(PendingPayment, false, event(PaidEvent, received, None)),
                (PaymentOutcome::RefundRequired, Some("payment_timeout"))
            );
        }
        // In time, but applied after cancel_at: readers saw it cancelled, and that stands.
        assert_eq!(
            decided(PendingPayment, true, event(PaidEvent, -1, None)),
            (PaymentOutcome::RefundRequired, Some("payment_timeout"))
        );
        assert_eq!(
            decided(PendingPayment, false, event(Failed, 10, None)),
            (PaymentOutcome::Applied(Cancelled), Some("payment_failed"))
        );
        assert_eq!(
            decided(PendingPayment, true, event(Failed, 10, None)),
            (
                PaymentOutcome::IgnoredTerminal(Cancelled),
                Some("payment_timeout")
            )
        );
    }

    #[test]
    fn after_a_terminal_outcome_only_money_taken_is_news() {
        use OrderStatus::*;
        use PaymentStatus::{Failed, Paid as PaidEvent};
        let decided = |stored, event: PaymentEvent| decide(&order(stored), stored, false, &event);
        assert_eq!(
            decided(Paid, event(PaidEvent, -1, None)).0,
            PaymentOutcome::DoubleCharge
        );
        assert_eq!(
            decided(Paid, event(Failed, -1, None)).0,
            PaymentOutcome::IgnoredTerminal(Paid)
        );
        assert_eq!(
            decided(Cancelled, event(PaidEvent, -1, None)).0,
            PaymentOutcome::RefundRequired
        );
        assert_eq!(
            decided(Cancelled, event(Failed, -1, None)).0,
            PaymentOutcome::IgnoredTerminal(Cancelled)
        );
    }

    #[test]
    fn an_amount_that_is_not_the_orders_is_not_a_payment_of_it() {
        use OrderStatus::*;
        for stored in [PendingPayment, Paid, Cancelled] {
            for status in [PaymentStatus::Paid, PaymentStatus::Failed] {
                assert_eq!(
                    decide(
                        &order(stored),
                        stored,
                        false,
                        &event(status, -1, Some(3999))
                    ),
                    (PaymentOutcome::AmountMismatch, None)
                );
            }
        }
        assert_eq!(
            decide(
                &order(PendingPayment),
                PendingPayment,
                false,
                &event(PaymentStatus::Paid, -1, Some(4000))
            )
            .0,
            PaymentOutcome::Applied(Paid),
            "the right amount pays"
        );
    }

    #[test]
    fn every_stored_outcome_reads_as_one_of_the_four_support_words() {
        use OrderStatus::*;
        let cases = [
            (PaymentOutcome::Applied(Paid), RecordedOutcome::Applied),
            (PaymentOutcome::Applied(Cancelled), RecordedOutcome::Applied),
            (
                PaymentOutcome::IgnoredTerminal(Paid),
                RecordedOutcome::Ignored,
            ),
            (
                PaymentOutcome::IgnoredTerminal(Cancelled),
                RecordedOutcome::Ignored,
            ),
            (
                PaymentOutcome::RefundRequired,
                RecordedOutcome::RefundRequired,
            ),
            (
                PaymentOutcome::DoubleCharge,
                RecordedOutcome::RefundRequired,
            ),
            (
                PaymentOutcome::AmountMismatch,
                RecordedOutcome::AmountMismatch,
            ),
        ];
        for (outcome, recorded) in cases {
            assert_eq!(
                RecordedOutcome::from_stored(outcome.as_str()),
                recorded,
                "{outcome:?}"
            );
        }
    }
}
