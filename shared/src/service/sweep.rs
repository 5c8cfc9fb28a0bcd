//! The periodic catch-all.

use std::time::Duration;

use super::outbox;
use super::payments::{self, DrainReport};
use crate::domain::ids::ProductId;
use crate::domain::retry::RetryPolicy;
use crate::error::Error;
use crate::metrics;
use crate::ports::EventPublisher;
use crate::store::pool::Pool;
use crate::store::queue;
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
    /// Waiting rooms' pre-queues drawn by this sweep (no request after the start had).
    pub queues_drawn: usize,
}

/// A sweep that ran every step to its end but in which something failed: what it did, and what
/// failed. Each failure was logged with its cause chain when it happened. As the sweeper's
/// error, it fails the invocation (`From<SweepIncomplete> for Error`).
#[derive(Debug, thiserror::Error)]
#[error(
    "sweep incomplete: {products_failed} product(s) not settled, steps failed: {steps_failed:?}; done: {report:?}"
)]
pub struct SweepIncomplete {
    pub report: SweepReport,
    /// Products whose settlement failed (the others were settled).
    pub products_failed: usize,
    /// The steps that failed as a whole ("settle", "drain_inbox", "republish", "draw_queues",
    /// "reconcile").
    pub steps_failed: Vec<&'static str>,
}

impl From<SweepIncomplete> for Error {
    fn from(incomplete: SweepIncomplete) -> Self {
        Error::Internal(incomplete.to_string())
    }
}

/// How long after writing an event the sweeper considers it missed by its own operation.
pub const REPUBLISH_GRACE: Duration = Duration::from_secs(5);

/// The periodic catch-all: settles every passed deadline, delivers payment events waiting in
/// the inbox, publishes events their operation failed to publish, and checks the stock counters
/// against their rows. Each step, and each product's settlement, runs whatever the others did:
/// one product that cannot be settled must not leave every other product's units locked in
/// lapsed holds, nor payments undelivered. Anything that failed makes it [`SweepIncomplete`].
pub async fn sweep(
    pool: &Pool,
    publisher: &dyn EventPublisher,
    payment_retry: RetryPolicy,
    republish_grace: Duration,
) -> Result<SweepReport, SweepIncomplete> {
    let mut report = SweepReport::default();
    let mut steps_failed = Vec::new();
    let mut products_failed = 0;
    match settle::settle_all_lapsed(pool).await {
        Ok(products) => {
            report.settled = products.settled.value;
            metrics::count(
                metrics::SWEEPER_SETTLED,
                report.settled.holds_expired + report.settled.orders_cancelled,
            );
            products_failed = products.failed.len();
            metrics::count(metrics::SWEEP_PRODUCT_FAILURES, products_failed as u64);
            for (product_id, err) in &products.failed {
                product_failed(*product_id, err);
            }
            outbox::publish(pool, publisher, &products.settled.events).await;
        }
        Err(err) => step_failed(&mut steps_failed, "settle", &err),
    }
    match payments::drain_inbox(pool, payment_retry, publisher).await {
        Ok(drained) => report.payments = drained,
        Err(err) => step_failed(&mut steps_failed, "drain_inbox", &err),
    }
    match outbox::publish_pending(pool, publisher, republish_grace).await {
        Ok(republished) => report.events_republished = republished,
        Err(err) => step_failed(&mut steps_failed, "republish", &err),
    }
    match draw_due_queues(pool).await {
        Ok(drawn) => report.queues_drawn = drawn,
        Err(err) => step_failed(&mut steps_failed, "draw_queues", &err),
    }
    match reconcile::reconcile(pool, None, false).await {
        Ok(reconciliation) => report.stock_drift = reconciliation.unresolved(),
        Err(err) => step_failed(&mut steps_failed, "reconcile", &err),
    }
    if products_failed == 0 && steps_failed.is_empty() {
        Ok(report)
    } else {
        Err(SweepIncomplete {
            report,
            products_failed,
            steps_failed,
        })
    }
}

/// Draws the pre-queues that are due and not drawn (or whose drawer died).
async fn draw_due_queues(pool: &Pool) -> Result<usize, Error> {
    let mut drawn = 0;
    for (product_id, starts) in queue::due_draws(pool).await? {
        if queue::draw(pool, product_id, starts).await? {
            drawn += 1;
        }
    }
    Ok(drawn)
}

fn product_failed(product_id: ProductId, err: &Error) {
    tracing::error!(
        %product_id,
        code = err.code(),
        error = %cause_chain(err),
        "sweep could not settle a product; the other products were settled"
    );
}

fn step_failed(steps_failed: &mut Vec<&'static str>, step: &'static str, err: &Error) {
    tracing::error!(
        step,
        code = err.code(),
        error = %cause_chain(err),
        "sweep step failed; the other steps ran"
    );
    steps_failed.push(step);
}

/// `err` and every error under it, outermost first.
fn cause_chain(err: &dyn std::error::Error) -> String {
    let mut chain = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        chain.push_str(": ");
        chain.push_str(&cause.to_string());
        source = cause.source();
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_chain_names_every_error_outermost_first() {
        let inner = std::io::Error::other("socket closed");
        let err = Error::Database(sqlx::Error::Io(inner));
        let chain = cause_chain(&err);
        assert!(chain.starts_with("database error: "), "{chain}");
        assert!(chain.ends_with(": socket closed"), "{chain}");
    }

    #[test]
    fn an_incomplete_sweep_fails_the_invocation_saying_what_failed() {
        let incomplete = SweepIncomplete {
            report: SweepReport::default(),
            products_failed: 2,
            steps_failed: vec!["drain_inbox"],
        };
        let err = Error::from(incomplete);
        assert_eq!(err.status(), 500);
        let message = err.to_string();
        assert!(message.contains("2 product(s) not settled"), "{message}");
        assert!(message.contains("drain_inbox"), "{message}");
    }
}
