//! The periodic catch-all.

use std::time::Duration;

use super::outbox;
use super::payments::{self, DrainReport};
use crate::domain::events::Committed;
use crate::domain::retry::RetryPolicy;
use crate::error::Error;
use crate::metrics;
use crate::ports::EventPublisher;
use crate::store::pool::Pool;
use crate::store::reconcile;
use crate::store::settle::{self, Settlement};

#[derive(Debug, Default, serde::Serialize)]
pub struct SweepReport {
    #[serde(flatten)]
    pub settled: Settlement,
    pub payments: DrainReport,
    pub events_republished: usize,
    /// Stock buckets whose counters disagree with their holds and orders (reported, not repaired).
    pub stock_drift: usize,
}

/// How long after writing an event the sweeper considers it missed by its own operation.
pub const REPUBLISH_GRACE: Duration = Duration::from_secs(5);

/// The periodic catch-all: settles every passed deadline, delivers payment events waiting in
/// the inbox, publishes events their operation failed to publish, and checks the stock counters
/// against their rows.
pub async fn sweep(
    pool: &Pool,
    publisher: &dyn EventPublisher,
    payment_retry: RetryPolicy,
    republish_grace: Duration,
) -> Result<SweepReport, Error> {
    let Committed {
        value: settled,
        events,
    } = settle::settle_all_lapsed(pool).await?;
    metrics::count(
        metrics::SWEEPER_SETTLED,
        settled.holds_expired + settled.orders_cancelled,
    );
    outbox::publish(pool, publisher, &events).await;
    let payments = payments::drain_inbox(pool, payment_retry, publisher).await?;
    let events_republished = outbox::publish_pending(pool, publisher, republish_grace).await?;
    let reconciliation = reconcile::reconcile(pool, None, false).await?;
    Ok(SweepReport {
        settled,
        payments,
        events_republished,
        stock_drift: reconciliation.unresolved(),
    })
}
