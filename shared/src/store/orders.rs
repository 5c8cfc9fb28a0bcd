//! Orders: redeeming a hold exactly once, reading an order with its payments, and the order row
//! lock and cancellation that payments, expiry and settling share.

use chrono::NaiveDateTime;
use serde_json::json;
use sqlx::{Executor, MySql, Row, Transaction};

use super::buckets::{Counter, move_stock};
use super::chrono_duration;
use super::db::{finish, retry_conflicts};
use super::outbox;
use super::pool::Pool;
use super::rows::{
    HOLD_SELECT, ORDER_SELECT, hold_from_row_at, order_event_detail, order_from_row,
};
use super::sql::Sql;
use crate::domain::events::{Committed, DomainEvent, EventType};
use crate::domain::ids::{BuyerId, HoldId, OrderId};
use crate::domain::model::{
    HoldStatus, Order, OrderDetails, OrderStatus, PaymentRecord, PaymentStatus, PaymentWindow,
    RecordedOutcome,
};
use crate::domain::money::Cents;
use crate::error::Error;

#[derive(Debug)]
pub struct Redemption {
    pub order: OrderDetails,
    /// False when the hold had been redeemed already and this is that order.
    pub created: bool,
}

/// Turns a hold into an order exactly once: the hold row lock serialises concurrent redeems, the
/// unique index on `orders.hold_id` backs it up, and every later redeem returns the same order.
/// A payment for it must be received within `window.ttl`; unpaid, it is cancelled `window.grace`
/// after that.
pub async fn redeem(
    pool: &Pool,
    hold_id: &HoldId,
    buyer: Option<&BuyerId>,
    window: PaymentWindow,
) -> Result<Committed<Redemption>, Error> {
    let (ttl, grace) = (chrono_duration(window.ttl)?, chrono_duration(window.grace)?);
    let redeemed = retry_conflicts("redeem", || async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let redeemed = try_redeem(&mut tx, hold_id, buyer, ttl, grace).await;
        finish(tx, redeemed).await
    })
    .await?;
    pool.product_reads()
        .forget(redeemed.value.order.order.product_id);
    Ok(redeemed)
}

async fn try_redeem(
    tx: &mut Transaction<'_, MySql>,
    hold_id: &HoldId,
    buyer: Option<&BuyerId>,
    payment_ttl: chrono::Duration,
    grace: chrono::Duration,
) -> Result<Committed<Redemption>, Error> {
    // Another buyer's hold is not found, as one that does not exist.
    let row = Sql::new(format!(
        "{HOLD_SELECT} WHERE id = ? AND buyer_id = ? FOR UPDATE"
    ))
    .bind(hold_id.as_str())
    .bind(BuyerId::stored(buyer))
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::HoldNotFound)?;
    // The clock is read after the hold's lock was granted (the locking statement's own clock is
    // when it started waiting): a hold that expired while we waited is expired. The price never
    // changes after creation, so this plain read needs no lock.
    let product = Sql::new("SELECT price_cents, UTC_TIMESTAMP(3) FROM products WHERE id = ?")
        .bind(row.try_get::<u64, _>("product_id")?)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::Internal(format!("hold {hold_id} names no product")))?;
    let (price, now): (i64, NaiveDateTime) = (product.try_get(0)?, product.try_get(1)?);
    let hold = hold_from_row_at(&row, now)?;
    match hold.status {
        HoldStatus::Redeemed => {
            let order = fetch_order(&mut **tx, "hold_id", hold_id.as_str()).await?;
            let payments = fetch_payments(&mut **tx, &order.order_id).await?;
            return Ok(Committed::quiet(Redemption {
                order: OrderDetails { order, payments },
                created: false,
            }));
        }
        HoldStatus::Expired => return Err(Error::HoldExpired),
        HoldStatus::Released => return Err(Error::HoldReleased),
        HoldStatus::Active => {}
    }
    let payment_due_at = now + payment_ttl;
    let order = Order {
        order_id: OrderId::generate(),
        hold_id: hold.hold_id.clone(),
        product_id: hold.product_id,
        buyer_id: hold.buyer_id.clone(),
        bucket: hold.bucket,
        qty: hold.qty,
        amount: Cents(price).times(hold.qty),
        status: OrderStatus::PendingPayment,
        created_at: now,
        payment_due_at,
        cancel_at: payment_due_at + grace,
    };
    Sql::new(
        "INSERT INTO orders (id, hold_id, product_id, buyer_id, bucket, qty, amount_cents, status, \
                             created_at, payment_due_at, cancel_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, 'pending_payment', ?, ?, ?, ?)",
    )
    .bind(order.order_id.as_str())
    .bind(order.hold_id.as_str())
    .bind(order.product_id.0)
    .bind(BuyerId::stored(buyer))
    .bind(order.bucket)
    .bind(order.qty)
    .bind(order.amount.0)
    .bind(now)
    .bind(order.payment_due_at)
    .bind(order.cancel_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Sql::new("UPDATE holds SET status = 'redeemed', settled_at = ? WHERE id = ?")
        .bind(now)
        .bind(hold_id.as_str())
        .execute(&mut **tx)
        .await?;
    let event = outbox::record(
        tx,
        EventType::OrderCreated,
        json!({
            "order_id": order.order_id, "hold_id": order.hold_id, "product_id": order.product_id,
            "qty": order.qty, "amount": order.amount,
            "payment_due_at": crate::domain::model::to_rfc3339(&order.payment_due_at),
        }),
    )
    .await?;
    move_stock(
        tx,
        hold.product_id,
        hold.bucket,
        hold.qty,
        Counter::Reserved,
        Counter::Sold,
    )
    .await?;
    Ok(Committed::new(
        Redemption {
            order: OrderDetails {
                order,
                payments: Vec::new(),
            },
            created: true,
        },
        vec![event],
    ))
}

/// An order with the payment events recorded against it.
/// An order of `buyer`'s: another buyer's is not found, as one that does not exist.
pub async fn get_order(
    pool: &Pool,
    id: &OrderId,
    buyer: Option<&BuyerId>,
) -> Result<OrderDetails, Error> {
    let order = fetch_order(pool, "id", id.as_str()).await?;
    if order.buyer_id.as_ref() != buyer {
        return Err(Error::OrderNotFound);
    }
    let payments = fetch_payments(pool, id).await?;
    Ok(OrderDetails { order, payments })
}

async fn fetch_order<'c>(
    conn: impl Executor<'c, Database = MySql>,
    column: &'static str,
    value: &str,
) -> Result<Order, Error> {
    let row = Sql::new(format!("{ORDER_SELECT} WHERE {column} = ?"))
        .bind(value)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::OrderNotFound)?;
    order_from_row(&row).map(|(order, _)| order)
}

/// Oldest first by receipt; a key is recorded once, so a repeated event appears once.
async fn fetch_payments<'c>(
    conn: impl Executor<'c, Database = MySql>,
    order_id: &OrderId,
) -> Result<Vec<PaymentRecord>, Error> {
    let rows = Sql::new(
        "SELECT idempotency_key, status, outcome, received_at FROM payment_events \
         WHERE order_id = ? ORDER BY received_at, applied_at, idempotency_key",
    )
    .bind(order_id.as_str())
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(PaymentRecord {
                // A binary-collated column: sqlx reads it as bytes; the webhook stored ASCII.
                idempotency_key: String::from_utf8_lossy(
                    row.try_get::<&[u8], _>("idempotency_key")?,
                )
                .into_owned(),
                status: PaymentStatus::from_db(row.try_get("status")?),
                outcome: RecordedOutcome::from_stored(row.try_get("outcome")?),
                received_at: row.try_get("received_at")?,
            })
        })
        .collect()
}

/// Locks an order row for a change of its status (orders come before stock buckets in the lock
/// order); with the status its row stores.
pub(crate) async fn lock_order(
    tx: &mut Transaction<'_, MySql>,
    id: &OrderId,
) -> Result<Option<(Order, OrderStatus)>, Error> {
    let Some(row) = Sql::new(format!("{ORDER_SELECT} WHERE id = ? FOR UPDATE"))
        .bind(id.as_str())
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(None);
    };
    order_from_row(&row).map(Some)
}

/// Cancels a locked pending order and returns its units to available.
pub(crate) async fn cancel_order(
    tx: &mut Transaction<'_, MySql>,
    order: &Order,
    reason: &'static str,
) -> Result<DomainEvent, Error> {
    Sql::new("UPDATE orders SET status = 'cancelled', updated_at = UTC_TIMESTAMP(3) WHERE id = ?")
        .bind(order.order_id.as_str())
        .execute(&mut **tx)
        .await?;
    let event = outbox::record(
        tx,
        EventType::OrderCancelled,
        order_event_detail(order, reason),
    )
    .await?;
    move_stock(
        tx,
        order.product_id,
        order.bucket,
        order.qty,
        Counter::Sold,
        Counter::Available,
    )
    .await?;
    Ok(event)
}
