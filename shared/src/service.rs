//! Operations with side effects outside the database: the transaction commits first, then its
//! events are published and its deadlines scheduled, best effort and safe to repeat. A failed
//! side effect never fails the operation the client asked for: it is logged with its ids and
//! counted, and the sweeper (or a reader's own check of the deadline) covers for it.

use std::time::Duration;

use sqlx::MySqlPool;

use crate::error::Error;
use crate::events::{self, Committed};
use crate::ids::{HoldId, OrderId};
use crate::inbox::{self, DrainReport, RetryPolicy};
use crate::metrics;
use crate::payments::{self, PaymentEvent, PaymentOutcome};
use crate::ports::{Deadline, DeadlineScheduler, EventPublisher};
use crate::reconcile;
use crate::stock::{self, ExpiryOutcome, HoldRequest, Redemption, Reservation, Settlement};

/// The side-effect adapters an operation may need.
#[derive(Clone, Copy)]
pub struct Effects<'a> {
    pub scheduler: &'a dyn DeadlineScheduler,
    pub publisher: &'a dyn EventPublisher,
}

pub async fn create_hold(
    pool: &MySqlPool,
    effects: Effects<'_>,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Reservation, Error> {
    let reservation = match stock::reserve(pool, request, ttl).await {
        Ok(committed) => committed.publish(pool, effects.publisher).await,
        Err(
            err @ Error::InsufficientStock {
                requested,
                available,
            },
        ) => {
            metrics::count(metrics::HOLDS_REFUSED, 1);
            tracing::info!(product_id = %request.product_id, requested, available, "hold refused: not enough stock");
            return Err(err);
        }
        Err(err) => return Err(err),
    };
    let hold = &reservation.hold;
    if reservation.replayed {
        tracing::info!(hold_id = %hold.hold_id, "hold replayed for its Idempotency-Key");
    } else {
        metrics::count(metrics::HOLDS_CREATED, 1);
        tracing::info!(hold_id = %hold.hold_id, product_id = %hold.product_id, qty = hold.qty, "hold created");
        schedule(
            effects.scheduler,
            Deadline::HoldExpiry(hold.hold_id.clone()),
            hold.expires_at,
        )
        .await;
    }
    Ok(reservation)
}

pub async fn create_order(
    pool: &MySqlPool,
    effects: Effects<'_>,
    hold_id: &HoldId,
    payment_ttl: Duration,
) -> Result<Redemption, Error> {
    let redemption = stock::redeem(pool, hold_id, payment_ttl)
        .await?
        .publish(pool, effects.publisher)
        .await;
    let order = &redemption.order;
    if !redemption.created {
        tracing::info!(order_id = %order.order_id, %hold_id, "order returned again for its redeemed hold");
    } else {
        metrics::count(metrics::ORDERS_CREATED, 1);
        tracing::info!(order_id = %order.order_id, %hold_id, qty = order.qty, "order created");
        schedule(
            effects.scheduler,
            Deadline::OrderPayment(order.order_id.clone()),
            order.payment_due_at,
        )
        .await;
        let hold_expiry = Deadline::HoldExpiry(hold_id.clone());
        if let Err(err) = effects.scheduler.cancel(&hold_expiry).await {
            tracing::warn!(%hold_id, error = %err, "could not delete the redeemed hold's expiry trigger; it will find nothing to do");
        }
    }
    Ok(redemption)
}

pub async fn expire_hold(
    pool: &MySqlPool,
    publisher: &dyn EventPublisher,
    hold_id: &HoldId,
) -> Result<ExpiryOutcome, Error> {
    Ok(stock::expire_hold(pool, hold_id)
        .await?
        .publish(pool, publisher)
        .await)
}

pub async fn expire_order(
    pool: &MySqlPool,
    publisher: &dyn EventPublisher,
    order_id: &OrderId,
) -> Result<ExpiryOutcome, Error> {
    Ok(stock::expire_order(pool, order_id)
        .await?
        .publish(pool, publisher)
        .await)
}

pub async fn apply_payment(
    pool: &MySqlPool,
    publisher: &dyn EventPublisher,
    event: &PaymentEvent,
) -> Result<PaymentOutcome, Error> {
    let outcome = payments::apply_payment(pool, event)
        .await?
        .publish(pool, publisher)
        .await;
    let metric = match outcome {
        PaymentOutcome::Applied(_) => metrics::PAYMENTS_APPLIED,
        PaymentOutcome::Duplicate | PaymentOutcome::IgnoredTerminal(_) => metrics::PAYMENTS_IGNORED,
        PaymentOutcome::RefundRequired => metrics::REFUNDS_REQUIRED,
    };
    metrics::count(metric, 1);
    tracing::info!(order_id = %event.order_id, idempotency_key = %event.idempotency_key, outcome = outcome.as_str(), "payment event applied");
    Ok(outcome)
}

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
    pool: &MySqlPool,
    publisher: &dyn EventPublisher,
    payment_retry: RetryPolicy,
    republish_grace: Duration,
) -> Result<SweepReport, Error> {
    let Committed {
        value: settled,
        events,
    } = stock::settle_all_lapsed(pool).await?;
    metrics::count(
        metrics::SWEEPER_SETTLED,
        settled.holds_expired + settled.orders_cancelled,
    );
    events::publish(pool, publisher, &events).await;
    let payments = inbox::drain(pool, payment_retry, publisher).await?;
    let events_republished = events::publish_pending(pool, publisher, republish_grace).await?;
    let reconciliation = reconcile::reconcile(pool, None, false).await?;
    Ok(SweepReport {
        settled,
        payments,
        events_republished,
        stock_drift: reconciliation.unresolved(),
    })
}

async fn schedule(
    scheduler: &dyn DeadlineScheduler,
    deadline: Deadline,
    at: chrono::NaiveDateTime,
) {
    if let Err(err) = scheduler.schedule(&deadline, at).await {
        metrics::count(metrics::DEADLINE_SCHEDULE_FAILED, 1);
        tracing::error!(deadline = deadline.name(), error = %err, "could not schedule a deadline trigger; the sweeper will settle it");
    }
}
