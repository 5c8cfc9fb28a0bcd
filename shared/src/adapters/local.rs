//! The in-process adapters: for the local server, and for functions running without AWS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::NaiveDateTime;
use tokio::sync::Notify;

use crate::domain::deadline::Deadline;
use crate::domain::events::DomainEvent;
use crate::domain::payment::PaymentEvent;
use crate::domain::retry::RetryPolicy;
use crate::error::Error;
use crate::ports::{DeadlineScheduler, EventPublisher, PaymentQueue};
use crate::service::{holds, orders, payments};
use crate::store::expiry::ExpiryOutcome;
use crate::store::inbox;
use crate::store::pool::Pool;

/// For a function running without a scheduler: the sweeper settles its deadlines.
pub struct NoScheduler;

#[async_trait]
impl DeadlineScheduler for NoScheduler {
    async fn schedule(&self, deadline: &Deadline, _at: NaiveDateTime) -> Result<(), Error> {
        tracing::info!(
            deadline = deadline.name(),
            "no scheduler configured; the sweeper will settle this deadline"
        );
        Ok(())
    }

    async fn cancel(&self, _deadline: &Deadline) -> Result<(), Error> {
        Ok(())
    }
}

/// For a function running without an event bus: events stay in the outbox.
pub struct NoPublisher;

#[async_trait]
impl EventPublisher for NoPublisher {
    async fn publish(&self, _events: &[DomainEvent]) -> Result<Vec<String>, Error> {
        Ok(Vec::new())
    }
}

/// The local server's bus: each event becomes a log line, which is where a developer looks.
pub struct LogPublisher;

#[async_trait]
impl EventPublisher for LogPublisher {
    async fn publish(&self, events: &[DomainEvent]) -> Result<Vec<String>, Error> {
        for event in events {
            tracing::info!(event_type = %event.event_type, detail = %event.detail, "domain event");
        }
        Ok(events.iter().map(|event| event.id.clone()).collect())
    }
}

/// The local server's scheduler: a tokio timer per deadline that settles it when it passes.
/// Timers end with the scheduler (each holds a connection pool, which must not outlive the
/// server) and with the process; the sweeper settles what they leave behind.
pub struct TimerScheduler {
    pool: Pool,
    publisher: Arc<dyn EventPublisher>,
    /// Dropped with the scheduler, which every timer notices at once.
    alive: tokio::sync::watch::Sender<()>,
}

impl TimerScheduler {
    pub fn new(pool: Pool, publisher: Arc<dyn EventPublisher>) -> Self {
        Self {
            pool,
            publisher,
            alive: tokio::sync::watch::channel(()).0,
        }
    }
}

/// Deadlines are judged by the database clock; a timer that wakes a little early tries again.
const EARLY_WAKE_RETRY: Duration = Duration::from_millis(50);
const MAX_EARLY_WAKES: u32 = 100;

#[async_trait]
impl DeadlineScheduler for TimerScheduler {
    async fn schedule(&self, deadline: &Deadline, at: NaiveDateTime) -> Result<(), Error> {
        let (pool, publisher, deadline) =
            (self.pool.clone(), self.publisher.clone(), deadline.clone());
        let delay = (at - chrono::Utc::now().naive_utc())
            .to_std()
            .unwrap_or_default();
        let mut alive = self.alive.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = alive.changed() => return,
            }
            for _ in 0..MAX_EARLY_WAKES {
                let settled = match &deadline {
                    Deadline::HoldExpiry(id) => {
                        holds::settle_hold_deadline(&pool, publisher.as_ref(), id).await
                    }
                    Deadline::OrderPayment(id) => {
                        orders::settle_order_deadline(&pool, publisher.as_ref(), id).await
                    }
                };
                match settled {
                    Ok(ExpiryOutcome::NotYetDue) => tokio::time::sleep(EARLY_WAKE_RETRY).await,
                    Ok(outcome) => {
                        tracing::debug!(
                            deadline = deadline.name(),
                            ?outcome,
                            "deadline timer fired"
                        );
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(deadline = deadline.name(), error = %err, "deadline timer failed; the sweeper will settle it");
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    async fn cancel(&self, _deadline: &Deadline) -> Result<(), Error> {
        // A timer that fires on a settled deadline finds nothing to do; cancelling buys nothing.
        Ok(())
    }
}

/// The durable in-process payment queue: the `payment_inbox` table, drained by
/// [`crate::service::payments::drain_inbox`]. Wakes local drainers at once; others poll.
#[derive(Clone)]
pub struct InboxQueue {
    pool: Pool,
    wakeup: Arc<Notify>,
    drain_on_enqueue: Option<(RetryPolicy, Arc<dyn EventPublisher>)>,
}

impl InboxQueue {
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            wakeup: Arc::new(Notify::new()),
            drain_on_enqueue: None,
        }
    }

    /// For a webhook function with no queue service and no worker: it applies what it just
    /// queued before answering, and whatever cannot be applied yet waits in the inbox for the
    /// sweeper's retries.
    pub fn draining_on_enqueue(
        pool: Pool,
        policy: RetryPolicy,
        publisher: Arc<dyn EventPublisher>,
    ) -> Self {
        Self {
            drain_on_enqueue: Some((policy, publisher)),
            ..Self::new(pool)
        }
    }

    /// Resolves when an event was enqueued through this handle (or at once if one was since
    /// the last wait).
    pub async fn enqueued(&self) {
        self.wakeup.notified().await;
    }
}

#[async_trait]
impl PaymentQueue for InboxQueue {
    async fn enqueue(&self, event: &PaymentEvent) -> Result<(), Error> {
        inbox::enqueue(&self.pool, event).await?;
        self.wakeup.notify_one();
        if let Some((policy, publisher)) = &self.drain_on_enqueue
            && let Err(err) = payments::drain_inbox(&self.pool, *policy, publisher.as_ref()).await
        {
            // Queued durably already: the sweeper delivers it.
            tracing::warn!(error = %err, "could not apply the queued payment event now; the sweeper will");
        }
        Ok(())
    }
}
