//! Draining the `payment_inbox` table: the local server's (and an SQS-less deployment's)
//! payment queue, with SQS's semantics: a lease (visibility timeout) per delivery, FIFO per
//! order, retries with exponential backoff, and a dead-letter state after the retry budget.

use std::time::Duration;

use sqlx::{MySql, MySqlPool, QueryBuilder, Row, Transaction};

use crate::error::Error;
use crate::ids::OrderId;
use crate::metrics;
use crate::money::Cents;
use crate::payments::{PaymentEvent, PaymentStatus};
use crate::ports::EventPublisher;

/// A delivery not finished within this time (the worker crashed) is delivered again.
const LEASE: Duration = Duration::from_secs(30);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
const BATCH: u32 = 10;

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Deliveries before an event is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second delivery; doubles each time, up to a minute.
    pub base_delay: Duration,
}

impl RetryPolicy {
    fn delay_after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(MAX_RETRY_DELAY)
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct DrainReport {
    pub processed: u64,
    pub retried: u64,
    pub dead_lettered: u64,
}

struct Delivery {
    id: u64,
    event: PaymentEvent,
    receive_count: u32,
}

/// Processes every event that is due now, batch after batch, until none is left.
pub async fn drain(
    pool: &MySqlPool,
    policy: RetryPolicy,
    publisher: &dyn EventPublisher,
) -> Result<DrainReport, Error> {
    let mut report = DrainReport::default();
    loop {
        let deliveries = claim(pool).await?;
        if deliveries.is_empty() {
            return Ok(report);
        }
        for delivery in deliveries {
            process(pool, policy, publisher, delivery, &mut report).await?;
        }
    }
}

/// Leases up to a batch of due events, at most one per order, and only an order's oldest
/// pending event: a later event of the same order waits until the earlier one is done or dead.
/// SKIP LOCKED lets several drainers claim disjoint batches without waiting on each other.
async fn claim(pool: &MySqlPool) -> Result<Vec<Delivery>, Error> {
    let mut tx = pool.begin().await?;
    let claimed = lease_due(&mut tx).await;
    crate::db::finish(tx, claimed).await
}

async fn lease_due(tx: &mut Transaction<'static, MySql>) -> Result<Vec<Delivery>, Error> {
    let rows = sqlx::query(
        "SELECT i.id, i.idempotency_key, i.order_id, i.status, i.amount_cents, i.received_at, i.receive_count \
         FROM payment_inbox i \
         WHERE i.state = 'pending' AND i.visible_at <= UTC_TIMESTAMP(3) \
           AND NOT EXISTS (SELECT 1 FROM payment_inbox e \
                           WHERE e.order_id = i.order_id AND e.state = 'pending' AND e.id < i.id) \
         ORDER BY i.id LIMIT ? FOR UPDATE SKIP LOCKED",
    )
    .bind(BATCH)
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        let order_id: String = row.try_get("order_id")?;
        // The webhook enqueues only valid order ids; anything else is a corrupt row, said loudly.
        let order_id = OrderId::parse(&order_id).ok_or_else(|| {
            Error::Database(sqlx::Error::Decode(
                format!("payment_inbox.order_id {order_id:?}").into(),
            ))
        })?;
        deliveries.push(Delivery {
            id: row.try_get("id")?,
            event: PaymentEvent {
                // A binary-collated column: sqlx reads it as bytes.
                idempotency_key: String::from_utf8_lossy(
                    row.try_get::<&[u8], _>("idempotency_key")?,
                )
                .into_owned(),
                order_id,
                status: PaymentStatus::from_db(&row.try_get::<String, _>("status")?),
                amount: row.try_get::<Option<i64>, _>("amount_cents")?.map(Cents),
                received_at: row.try_get("received_at")?,
            },
            receive_count: row.try_get::<u32, _>("receive_count")? + 1,
        });
    }
    let mut lease = QueryBuilder::<MySql>::new(
        "UPDATE payment_inbox SET receive_count = receive_count + 1, \
         visible_at = UTC_TIMESTAMP(3) + INTERVAL ",
    );
    lease
        .push_bind(LEASE.as_secs())
        .push(" SECOND WHERE id IN (");
    let mut ids = lease.separated(", ");
    for delivery in &deliveries {
        ids.push_bind(delivery.id);
    }
    lease.push(")");
    lease.build().execute(&mut **tx).await?;
    Ok(deliveries)
}

async fn process(
    pool: &MySqlPool,
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
    match crate::service::apply_payment(pool, publisher, &event).await {
        Ok(_) => {
            sqlx::query("UPDATE payment_inbox SET state = 'done', last_error = NULL WHERE id = ?")
                .bind(id)
                .execute(pool)
                .await?;
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
            sqlx::query("UPDATE payment_inbox SET state = 'dead', last_error = ? WHERE id = ?")
                .bind(truncate(&err.to_string()))
                .bind(id)
                .execute(pool)
                .await?;
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
            sqlx::query(
                "UPDATE payment_inbox SET visible_at = UTC_TIMESTAMP(3) + INTERVAL ? MICROSECOND, \
                 last_error = ? WHERE id = ?",
            )
            .bind(delay.as_micros() as u64)
            .bind(truncate(&err.to_string()))
            .bind(id)
            .execute(pool)
            .await?;
            report.retried += 1;
        }
    }
    Ok(())
}

fn truncate(message: &str) -> String {
    message.chars().take(500).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_a_minute() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(500),
        };
        assert_eq!(policy.delay_after(1), Duration::from_millis(500));
        assert_eq!(policy.delay_after(2), Duration::from_secs(1));
        assert_eq!(policy.delay_after(4), Duration::from_secs(4));
        assert_eq!(policy.delay_after(30), Duration::from_secs(60));
    }
}
