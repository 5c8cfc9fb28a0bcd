//! Payment events: applying one (the transaction, then its events, one log line and one metric
//! per outcome), and draining the database inbox, SQS's stand-in, with its retries.

use super::outbox::publish_committed;
use crate::domain::payment::{PaymentEvent, PaymentOutcome};
use crate::domain::retry::RetryPolicy;
use crate::error::Error;
use crate::metrics;
use crate::ports::EventPublisher;
use crate::store::inbox::{self, Delivery};
use crate::store::payments;
use crate::store::pool::Pool;

/// Applies one payment event; one log line and one metric per outcome. Money to give back is
/// logged at warn, with what support needs to find it.
pub async fn process_payment(
    pool: &Pool,
    publisher: &dyn EventPublisher,
    event: &PaymentEvent,
) -> Result<PaymentOutcome, Error> {
    let committed = payments::apply_payment(pool, event).await?;
    let outcome = publish_committed(pool, publisher, committed).await;
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
        crate::domain::model::to_rfc3339(&event.received_at),
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

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DrainReport {
    pub processed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
}

/// Processes every event that is due now, batch after batch, until none is left.
pub async fn drain_inbox(
    pool: &Pool,
    policy: RetryPolicy,
    publisher: &dyn EventPublisher,
) -> Result<DrainReport, Error> {
    let mut report = DrainReport::default();
    loop {
        let deliveries = inbox::claim(pool).await?;
        if deliveries.is_empty() {
            return Ok(report);
        }
        for delivery in deliveries {
            process(pool, policy, publisher, delivery, &mut report).await?;
        }
    }
}

async fn process(
    pool: &Pool,
    policy: RetryPolicy,
    publisher: &dyn EventPublisher,
    delivery: Delivery,
    report: &mut DrainReport,
) -> Result<(), Error> {
    let Delivery {
        id,
        event,
        receive_count,
    } = delivery;
    match process_payment(pool, publisher, &event).await {
        Ok(_) => {
            inbox::mark_done(pool, id).await?;
            report.processed += 1;
        }
        Err(err) if receive_count >= policy.max_attempts => {
            tracing::error!(
                inbox_id = id,
                order_id = %event.order_id,
                idempotency_key = %event.idempotency_key,
                receive_count,
                error = %err,
                "payment event dead-lettered after its retry budget"
            );
            inbox::mark_dead(pool, id, &err).await?;
            report.dead_lettered += 1;
            metrics::count(metrics::PAYMENTS_DEAD_LETTERED, 1);
        }
        Err(err) => {
            let delay = policy.delay_after(receive_count);
            tracing::warn!(
                inbox_id = id,
                order_id = %event.order_id,
                receive_count,
                retry_in_ms = delay.as_millis() as u64,
                error = %err,
                "payment event not applied; will retry"
            );
            inbox::retry_later(pool, id, delay, &err).await?;
            report.retried += 1;
        }
    }
    Ok(())
}
