//! The side effects that leave the process, as traits: each deployment picks an adapter
//! ([`crate::adapters`]: in-process ones, and AWS ones).

use async_trait::async_trait;
use chrono::NaiveDateTime;

use crate::domain::deadline::Deadline;
use crate::domain::events::DomainEvent;
use crate::domain::payment::PaymentEvent;
use crate::error::Error;

/// Arranges for a deadline to be settled when it passes. Best effort by contract: readers
/// already treat a passed deadline as settled and the sweeper settles whatever a trigger missed.
#[async_trait]
pub trait DeadlineScheduler: Send + Sync {
    async fn schedule(&self, deadline: &Deadline, at: NaiveDateTime) -> Result<(), Error>;
    /// The deadline no longer matters (the hold was redeemed, the order paid); a trigger that
    /// fires anyway finds nothing to do.
    async fn cancel(&self, deadline: &Deadline) -> Result<(), Error>;
}

/// Carries a verified payment event to the processor. `Ok` means the event is durably stored:
/// the webhook answers 202 only then.
#[async_trait]
pub trait PaymentQueue: Send + Sync {
    async fn enqueue(&self, event: &PaymentEvent) -> Result<(), Error>;
}

/// Publishes domain events; returns the ids the bus accepted (the rest stay in the outbox).
#[async_trait]
pub trait EventPublisher: Send + Sync {
    async fn publish(&self, events: &[DomainEvent]) -> Result<Vec<String>, Error>;
}
