//! Applying a payment event to its order: one transaction under the order's row lock, recording
//! the event with the outcome [`crate::domain::payment::decide`] gives it.

use sqlx::{MySql, Transaction};

use super::db::{finish, retry_conflicts};
use super::orders::{cancel_order, lock_order};
use super::outbox;
use super::pool::Pool;
use super::rows::order_event_detail;
use super::sql::Sql;
use crate::domain::events::{Committed, DomainEvent, EventType};
use crate::domain::ids::ProductId;
use crate::domain::model::{Order, OrderStatus, to_rfc3339};
use crate::domain::payment::{PaymentEvent, PaymentOutcome, decide};
use crate::error::{Error, is_duplicate_key};

/// Applies one event, exactly once per idempotency key: the order row lock serialises events of
/// one order, the key's primary key makes a repeat a no-op. An unknown order is an error the
/// caller retries later: its event may have overtaken the order.
pub async fn apply_payment(
    pool: &Pool,
    event: &PaymentEvent,
) -> Result<Committed<PaymentOutcome>, Error> {
    let (applied, returned_units_of) = retry_conflicts("apply_payment", || async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let applied = try_apply_payment(&mut tx, event).await;
        if matches!(&applied, Ok((committed, _)) if committed.value == PaymentOutcome::Duplicate) {
            // The failed INSERT changed nothing; end the transaction without a commit to write.
            tx.rollback().await?;
            return applied;
        }
        finish(tx, applied).await
    })
    .await?;
    if let Some(product_id) = returned_units_of {
        pool.product_reads().forget(product_id);
    }
    Ok(applied)
}

/// The outcome, and the product whose units a cancellation returned.
async fn try_apply_payment(
    tx: &mut Transaction<'_, MySql>,
    event: &PaymentEvent,
) -> Result<(Committed<PaymentOutcome>, Option<ProductId>), Error> {
    let (order, stored) = lock_order(tx, &event.order_id)
        .await?
        .ok_or(Error::OrderNotFound)?;
    // `order.status` is what readers see: a pending order past its cancel_at is cancelled.
    let lapsed = stored == OrderStatus::PendingPayment && order.status == OrderStatus::Cancelled;
    let (outcome, cancel) = decide(&order, stored, lapsed, event);
    // Inserted under the order lock, so a concurrent repeat of this key waits for us and then
    // finds it: the duplicate check and the effect are one atomic step.
    let recorded = Sql::new(
        "INSERT INTO payment_events (idempotency_key, order_id, status, received_at, amount_cents, \
                                     outcome, applied_at) \
         VALUES (?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3))",
    )
    .bind(&event.idempotency_key)
    .bind(event.order_id.as_str())
    .bind(event.status.as_db())
    .bind(event.received_at)
    .bind(event.amount.map(|amount| amount.0))
    .bind(outcome.as_str())
    .execute(&mut **tx)
    .await;
    match recorded {
        Ok(_) => {}
        Err(err) if is_duplicate_key(&err) => {
            return Ok((Committed::quiet(PaymentOutcome::Duplicate), None));
        }
        Err(err) => return Err(err.into()),
    }
    let mut events = Vec::new();
    let mut returned_units_of = None;
    if let Some(reason) = cancel {
        events.push(cancel_order(tx, &order, reason).await?);
        returned_units_of = Some(order.product_id);
    }
    let event_type = match outcome {
        PaymentOutcome::Applied(OrderStatus::Paid) => {
            Sql::new(
                "UPDATE orders SET status = 'paid', updated_at = UTC_TIMESTAMP(3) WHERE id = ?",
            )
            .bind(event.order_id.as_str())
            .execute(&mut **tx)
            .await?;
            Some(EventType::OrderPaid)
        }
        PaymentOutcome::RefundRequired => Some(EventType::LatePayment),
        PaymentOutcome::DoubleCharge => Some(EventType::DoublePayment),
        PaymentOutcome::AmountMismatch => Some(EventType::PaymentAmountMismatch),
        PaymentOutcome::Applied(_)
        | PaymentOutcome::Duplicate
        | PaymentOutcome::IgnoredTerminal(_) => None,
    };
    if let Some(event_type) = event_type {
        events.push(record_payment_event(tx, event_type, &order, event).await?);
    }
    Ok((Committed::new(outcome, events), returned_units_of))
}

async fn record_payment_event(
    tx: &mut Transaction<'_, MySql>,
    event_type: EventType,
    order: &Order,
    event: &PaymentEvent,
) -> Result<DomainEvent, Error> {
    let mut detail = order_event_detail(order, event.status.as_db());
    detail["idempotency_key"] = serde_json::Value::String(event.idempotency_key.clone());
    detail["received_at"] = serde_json::Value::String(to_rfc3339(&event.received_at));
    if let Some(amount) = event.amount {
        detail["reported_amount"] = serde_json::Value::String(amount.to_string());
    }
    outbox::record(tx, event_type, detail).await
}
