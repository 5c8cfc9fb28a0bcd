//! Rows read back into the models: the SELECT lists and their decoding, shared by every job
//! that reads holds or orders, and the details their domain events carry.

use chrono::NaiveDateTime;
use serde_json::json;
use sqlx::Row;
use sqlx::mysql::MySqlRow;

use super::corrupt;
use crate::domain::ids::{BuyerId, HoldId, OrderId, ProductId};
use crate::domain::model::{Hold, HoldStatus, Order, OrderStatus};
use crate::domain::money::Cents;
use crate::error::Error;

pub(super) const HOLD_SELECT: &str = "SELECT id, product_id, buyer_id, bucket, qty, status, expires_at, UTC_TIMESTAMP(3) AS db_now FROM holds";

pub(super) fn hold_from_row(row: &MySqlRow) -> Result<Hold, Error> {
    hold_from_row_at(row, row.try_get("db_now")?)
}

/// The hold a row says, as of `now` by the database clock.
pub(super) fn hold_from_row_at(row: &MySqlRow, now: NaiveDateTime) -> Result<Hold, Error> {
    let id: String = row.try_get("id")?;
    let expires_at: NaiveDateTime = row.try_get("expires_at")?;
    let status: String = row.try_get("status")?;
    Ok(Hold {
        hold_id: HoldId::parse(&id).ok_or_else(|| corrupt("holds.id", &id))?,
        product_id: ProductId(row.try_get("product_id")?),
        buyer_id: buyer_from_row(row)?,
        bucket: row.try_get("bucket")?,
        qty: row.try_get("qty")?,
        status: HoldStatus::from_db(&status, expires_at <= now),
        expires_at,
    })
}

pub(super) fn hold_event_detail(hold: &Hold) -> serde_json::Value {
    json!({
        "hold_id": hold.hold_id, "product_id": hold.product_id, "qty": hold.qty,
        "expires_at": crate::domain::model::to_rfc3339(&hold.expires_at),
    })
}

pub(super) const ORDER_SELECT: &str = "SELECT id, hold_id, product_id, buyer_id, bucket, qty, amount_cents, status, created_at, \
                            payment_due_at, cancel_at, UTC_TIMESTAMP(3) AS db_now FROM orders";

/// The order a row says as readers see it, and the status the row stores (a lapsed unpaid
/// order reads as cancelled but is stored pending until something settles it).
pub(super) fn order_from_row(row: &MySqlRow) -> Result<(Order, OrderStatus), Error> {
    let id: String = row.try_get("id")?;
    let hold_id: String = row.try_get("hold_id")?;
    let status: String = row.try_get("status")?;
    let cancel_at: NaiveDateTime = row.try_get("cancel_at")?;
    let db_now: NaiveDateTime = row.try_get("db_now")?;
    let order = Order {
        order_id: OrderId::parse(&id).ok_or_else(|| corrupt("orders.id", &id))?,
        hold_id: HoldId::parse(&hold_id).ok_or_else(|| corrupt("orders.hold_id", &hold_id))?,
        product_id: ProductId(row.try_get("product_id")?),
        buyer_id: buyer_from_row(row)?,
        bucket: row.try_get("bucket")?,
        qty: row.try_get("qty")?,
        amount: Cents(row.try_get("amount_cents")?),
        status: OrderStatus::from_db(&status, cancel_at <= db_now),
        created_at: row.try_get("created_at")?,
        payment_due_at: row.try_get("payment_due_at")?,
        cancel_at,
    };
    Ok((order, OrderStatus::from_db(&status, false)))
}

pub(super) fn order_event_detail(order: &Order, reason: &str) -> serde_json::Value {
    json!({
        "order_id": order.order_id, "hold_id": order.hold_id, "product_id": order.product_id,
        "qty": order.qty, "amount": order.amount, "reason": reason,
    })
}

/// A binary-collated column, so sqlx reads it as bytes; `''` is no buyer.
fn buyer_from_row(row: &MySqlRow) -> Result<Option<BuyerId>, Error> {
    let stored = std::str::from_utf8(row.try_get::<&[u8], _>("buyer_id")?)
        .map_err(|_| corrupt("buyer_id", "not UTF-8"))?;
    Ok(BuyerId::from_stored(stored))
}
