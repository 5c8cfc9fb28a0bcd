//! Side effects that leave the process, behind traits so each deployment picks its adapter:
//! in-process ones for the local server and functions running without AWS, AWS ones later.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::MySqlPool;
use tokio::sync::Notify;

use crate::error::Error;
use crate::ids::HoldId;
use crate::model::Hold;
use crate::payments::PaymentEvent;
use crate::stock::{self, ExpiryOutcome};

/// Arranges for a hold to be settled when it expires. Best effort by contract: readers already
/// ignore lapsed holds and the sweeper settles whatever a trigger missed.
#[async_trait]
pub trait ExpiryScheduler: Send + Sync {
    async fn schedule_expiry(&self, hold: &Hold) -> Result<(), Error>;
    /// The hold was redeemed: its trigger is no longer needed (it would be a no-op anyway).
    async fn cancel_expiry(&self, hold_id: &HoldId) -> Result<(), Error>;
}

/// Carries a verified payment event to the processor. `enqueue` returning `Ok` means the event
/// is durably stored: the webhook answers 202 only then.
#[async_trait]
pub trait PaymentQueue: Send + Sync {
    async fn enqueue(&self, event: &PaymentEvent) -> Result<(), Error>;
}

/// For a function running without a scheduler: the sweeper settles its holds.
pub struct NoScheduler;

#[async_trait]
impl ExpiryScheduler for NoScheduler {
    async fn schedule_expiry(&self, hold: &Hold) -> Result<(), Error> {
        tracing::debug!(hold_id = %hold.hold_id, "no expiry scheduler configured; the sweeper will settle this hold");
        Ok(())
    }

    async fn cancel_expiry(&self, _hold_id: &HoldId) -> Result<(), Error> {
        Ok(())
    }
}

/// The local server's scheduler: a tokio timer per hold that settles it at its expiry.
/// Timers die with the process; the sweeper settles what they leave behind.
pub struct TimerScheduler {
    pool: MySqlPool,
}

impl TimerScheduler {
    pub fn new(pool: MySqlPool) -> Self {
        Self { pool }
    }
}

/// Expiry is judged by the database clock; a timer that wakes a little before it tries again.
const EARLY_WAKE_RETRY: Duration = Duration::from_millis(50);
const MAX_EARLY_WAKES: u32 = 100;

#[async_trait]
impl ExpiryScheduler for TimerScheduler {
    async fn schedule_expiry(&self, hold: &Hold) -> Result<(), Error> {
        let pool = self.pool.clone();
        let hold_id = hold.hold_id.clone();
        let delay = (hold.expires_at - chrono::Utc::now().naive_utc())
            .to_std()
            .unwrap_or_default();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            for _ in 0..MAX_EARLY_WAKES {
                match stock::expire_hold(&pool, &hold_id).await {
                    Ok(ExpiryOutcome::NotYetDue) => tokio::time::sleep(EARLY_WAKE_RETRY).await,
                    Ok(outcome) => {
                        tracing::debug!(%hold_id, ?outcome, "expiry timer fired");
                        return;
                    }
                    Err(err) => {
                        tracing::warn!(%hold_id, error = %err, "expiry timer failed; the sweeper will settle the hold");
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    async fn cancel_expiry(&self, _hold_id: &HoldId) -> Result<(), Error> {
        // A timer that fires on a redeemed hold finds nothing to do; cancelling buys nothing.
        Ok(())
    }
}

/// The durable in-process payment queue: the `payment_inbox` table, drained by
/// [`crate::inbox::drain`]. Wakes local drainers at once; others poll.
#[derive(Clone)]
pub struct InboxQueue {
    pool: MySqlPool,
    wakeup: Arc<Notify>,
}

impl InboxQueue {
    pub fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            wakeup: Arc::new(Notify::new()),
        }
    }

    /// Resolves when an event was enqueued through this handle (or immediately if one was
    /// enqueued since the last wait).
    pub async fn enqueued(&self) {
        self.wakeup.notified().await;
    }
}

#[async_trait]
impl PaymentQueue for InboxQueue {
    async fn enqueue(&self, event: &PaymentEvent) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO payment_inbox (idempotency_key, order_id, status, visible_at, enqueued_at) \
             VALUES (?, ?, ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
        )
        .bind(&event.idempotency_key)
        .bind(event.order_id.as_str())
        .bind(event.status.as_db())
        .execute(&self.pool)
        .await?;
        self.wakeup.notify_one();
        Ok(())
    }
}
