//! Domain events: what other systems are told. Each is written to the outbox in the transaction
//! of the change it describes ([`crate::store::outbox`]) and published after commit
//! ([`crate::service::outbox`]): at least once, never lost, always under the same id.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    HoldExpired,
    /// A buyer gave a hold back before it expired.
    HoldReleased,
    OrderCreated,
    OrderPaid,
    OrderCancelled,
    /// A `paid` event for an order that is cancelled (its payment failed, or the event was
    /// received after the deadline): the money must be refunded.
    LatePayment,
    /// A second `paid` event for an order paid already: the customer was charged twice.
    DoublePayment,
    /// An event whose amount is not its order's: the order is unchanged; a person decides.
    PaymentAmountMismatch,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HoldExpired => "HoldExpired",
            Self::HoldReleased => "HoldReleased",
            Self::OrderCreated => "OrderCreated",
            Self::OrderPaid => "OrderPaid",
            Self::OrderCancelled => "OrderCancelled",
            Self::LatePayment => "LatePayment",
            Self::DoublePayment => "DoublePayment",
            Self::PaymentAmountMismatch => "PaymentAmountMismatch",
        }
    }
}

/// One event as published: `detail` carries `event_id` too, so consumers can deduplicate.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainEvent {
    pub id: String,
    pub event_type: String,
    pub detail: Value,
}

/// The result of a transaction together with the events it wrote to the outbox.
#[derive(Debug)]
pub struct Committed<T> {
    pub value: T,
    pub events: Vec<DomainEvent>,
}

impl<T> Committed<T> {
    pub(crate) fn new(value: T, events: Vec<DomainEvent>) -> Self {
        Self { value, events }
    }

    pub(crate) fn quiet(value: T) -> Self {
        Self {
            value,
            events: Vec::new(),
        }
    }
}
