//! The `payment_inbox` table: the local server's (and an SQS-less deployment's) payment queue,
//! with SQS's semantics: a lease (visibility timeout) per delivery, FIFO per order, a delay before
//! a retry, and a dead-letter state. What is done with a delivery is
//! [`crate::service::payments::drain_inbox`]'s.

use std::time::Duration;

use sqlx::{MySql, Row, Transaction};

use super::pool::Pool;
use super::sql::{Interval, Sql, list};
use crate::domain::ids::OrderId;
use crate::domain::money::Cents;
use crate::domain::payment::{PaymentEvent, PaymentStatus};
use crate::error::Error;

/// A delivery not finished within this time (the worker crashed) is delivered again.
const LEASE: Duration = Duration::from_secs(30);
const BATCH: u32 = 10;

/// One leased event, and how many times it has been delivered, this time included.
pub struct Delivery {
    pub id: u64,
    pub event: PaymentEvent,
    pub receive_count: u32,
}

/// Leases up to a batch of due events, at most one per order, and only an order's oldest
/// pending event: a later event of the same order waits until the earlier one is done or dead.
/// SKIP LOCKED lets several drainers claim disjoint batches without waiting on each other.
pub async fn claim(pool: &Pool) -> Result<Vec<Delivery>, Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let claimed = lease_due(&mut tx).await;
    crate::store::db::finish(tx, claimed).await
}

async fn lease_due(tx: &mut Transaction<'_, MySql>) -> Result<Vec<Delivery>, Error> {
    let rows = Sql::new(
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
    Sql::new(format!(
        "UPDATE payment_inbox SET receive_count = receive_count + 1, \
         visible_at = UTC_TIMESTAMP(3) + INTERVAL ? SECOND WHERE id IN ({})",
        list(deliveries.iter().map(|delivery| delivery.id))
    ))
    .bind(LEASE.as_secs())
    .execute(&mut **tx)
    .await?;
    Ok(deliveries)
}

/// Durably queues an event: the webhook answers 202 only once this committed.
pub async fn enqueue(pool: &Pool, event: &PaymentEvent) -> Result<(), Error> {
    Sql::new(
        "INSERT INTO payment_inbox (idempotency_key, order_id, status, amount_cents, received_at, \
                                    visible_at, enqueued_at) \
         VALUES (?, ?, ?, ?, ?, UTC_TIMESTAMP(3), UTC_TIMESTAMP(3))",
    )
    .bind(&event.idempotency_key)
    .bind(event.order_id.as_str())
    .bind(event.status.as_db())
    .bind(event.amount.map(|amount| amount.0))
    .bind(event.received_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub async fn mark_done(pool: &Pool, id: u64) -> Result<(), Error> {
    Sql::new("UPDATE payment_inbox SET state = 'done', last_error = NULL WHERE id = ?")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Out of retries: kept, with why, for a person.
pub async fn mark_dead(pool: &Pool, id: u64, error: &Error) -> Result<(), Error> {
    Sql::new("UPDATE payment_inbox SET state = 'dead', last_error = ? WHERE id = ?")
        .bind(truncate(&error.to_string()))
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Delivered again `delay` from now.
pub async fn retry_later(
    pool: &Pool,
    id: u64,
    delay: Duration,
    error: &Error,
) -> Result<(), Error> {
    Sql::new(
        "UPDATE payment_inbox SET visible_at = UTC_TIMESTAMP(3) + ?, \
         last_error = ? WHERE id = ?",
    )
    .bind(Interval(delay))
    .bind(truncate(&error.to_string()))
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

fn truncate(message: &str) -> String {
    message.chars().take(500).collect()
}
