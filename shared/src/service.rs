//! Operations with side effects outside the database: the transaction commits first, then its
//! events are published and its deadlines scheduled, best effort and safe to repeat. A failed
//! side effect never fails the operation the client asked for: it is logged with its ids and
//! counted, and the sweeper (or a reader's own check of the deadline) covers for it.
//!
//! Time: the transaction must end within [`REQUEST_DEADLINE`] (or the client hears 503), and the
//! side effects after it get [`SIDE_EFFECTS_BUDGET`] of their own. So a slow AWS call can never
//! turn a committed hold or order into a 503, which a client retrying without an Idempotency-Key
//! would answer by reserving twice.

use std::future::Future;
use std::time::Duration;

use sqlx::MySqlPool;

use crate::error::Error;
use crate::events::{self, Committed};
use crate::ids::{HoldId, OrderId};
use crate::inbox::{self, DrainReport, RetryPolicy};
use crate::metrics;
use crate::model::PaymentWindow;
use crate::payments::{self, PaymentEvent, PaymentOutcome};
use crate::ports::{Deadline, DeadlineScheduler, EventPublisher};
use crate::reconcile;
use crate::stock::{self, ExpiryOutcome, HoldRequest, Redemption, Reservation, Settlement};

/// The longest a request's database work runs before it is answered 503: the bound on what the
/// database's own timeouts cannot stop, a server that stops answering on an open connection
/// (frozen, a network black hole, a failover caught mid-statement). Above the 3 s wait for a
/// connection plus the 5 s lock wait, so those end by their own errors first; below API Gateway's
/// 29 s together with [`SIDE_EFFECTS_BUDGET`]. Work cut off may still have committed: a client
/// repeating it with its Idempotency-Key gets that result.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(9);

/// How long the side effects after a commit (publish, schedule, unschedule) may take together
/// before the answer goes out without them; each AWS call is bounded on its own as well.
pub const SIDE_EFFECTS_BUDGET: Duration = Duration::from_secs(3);

/// Runs `work` within [`REQUEST_DEADLINE`], or fails it as `DeadlineExceeded` (a 503).
pub async fn within_request_deadline<T>(
    work: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::time::timeout(REQUEST_DEADLINE, work)
        .await
        .unwrap_or(Err(Error::DeadlineExceeded(REQUEST_DEADLINE)))
}

/// Runs the side effects of a committed `operation` within [`SIDE_EFFECTS_BUDGET`]; past it,
/// they are dropped, logged and counted (what they did not do, the sweeper does).
async fn after_commit(operation: &'static str, effects: impl Future<Output = ()>) {
    if tokio::time::timeout(SIDE_EFFECTS_BUDGET, effects)
        .await
        .is_err()
    {
        metrics::count(metrics::SIDE_EFFECTS_TIMED_OUT, 1);
        tracing::error!(
            operation,
            budget_ms = SIDE_EFFECTS_BUDGET.as_millis() as u64,
            "side effects after commit ran out of time; answered without them, the sweeper covers"
        );
    }
}

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
    let committed = match within_request_deadline(stock::reserve(pool, request, ttl)).await {
        Ok(committed) => committed,
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
    let hold = &committed.value.hold;
    if committed.value.replayed {
        tracing::info!(hold_id = %hold.hold_id, "hold replayed for its Idempotency-Key");
    } else {
        metrics::count(metrics::HOLDS_CREATED, 1);
        tracing::info!(hold_id = %hold.hold_id, product_id = %hold.product_id, qty = hold.qty, "hold created");
    }
    after_commit("create_hold", async {
        events::publish(pool, effects.publisher, &committed.events).await;
        if !committed.value.replayed {
            schedule(
                effects.scheduler,
                Deadline::HoldExpiry(hold.hold_id.clone()),
                hold.expires_at,
            )
            .await;
        }
    })
    .await;
    Ok(committed.value)
}

pub async fn create_order(
    pool: &MySqlPool,
    effects: Effects<'_>,
    hold_id: &HoldId,
    window: PaymentWindow,
) -> Result<Redemption, Error> {
    let committed = within_request_deadline(stock::redeem(pool, hold_id, window)).await?;
    let order = &committed.value.order.order;
    if !committed.value.created {
        tracing::info!(order_id = %order.order_id, %hold_id, "order returned again for its redeemed hold");
    } else {
        metrics::count(metrics::ORDERS_CREATED, 1);
        tracing::info!(order_id = %order.order_id, %hold_id, qty = order.qty, "order created");
    }
    after_commit("create_order", async {
        events::publish(pool, effects.publisher, &committed.events).await;
        if !committed.value.created {
            return;
        }
        schedule(
            effects.scheduler,
            Deadline::OrderPayment(order.order_id.clone()),
            order.cancel_at,
        )
        .await;
        let hold_expiry = Deadline::HoldExpiry(hold_id.clone());
        if let Err(err) = effects.scheduler.cancel(&hold_expiry).await {
            tracing::warn!(%hold_id, error = %err, "could not delete the redeemed hold's expiry trigger; it will find nothing to do");
        }
    })
    .await;
    Ok(committed.value)
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

/// Applies one payment event; one log line and one metric per outcome. Money to give back is
/// logged at warn, with what support needs to find it.
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
        PaymentOutcome::RefundRequired | PaymentOutcome::DoubleCharge => metrics::REFUNDS_REQUIRED,
        PaymentOutcome::AmountMismatch => metrics::PAYMENT_AMOUNT_MISMATCHES,
    };
    metrics::count(metric, 1);
    let (order_id, key, received_at) = (
        &event.order_id,
        &event.idempotency_key,
        crate::model::to_rfc3339(&event.received_at),
    );
    match outcome {
        PaymentOutcome::RefundRequired | PaymentOutcome::DoubleCharge => tracing::warn!(
            %order_id, idempotency_key = %key, received_at, outcome = outcome.as_str(),
            "payment taken that must be refunded"
        ),
        PaymentOutcome::AmountMismatch => tracing::warn!(
            %order_id, idempotency_key = %key, received_at,
            reported_amount = event.amount.map(|amount| amount.to_string()),
            "payment event's amount is not its order's; order unchanged"
        ),
        _ => tracing::info!(
            %order_id, idempotency_key = %key, received_at, outcome = outcome.as_str(),
            "payment event applied"
        ),
    }
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
