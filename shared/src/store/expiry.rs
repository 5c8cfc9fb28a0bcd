//! Deadline triggers: settling one hold or one order whose deadline has passed, and nothing else.

use chrono::NaiveDateTime;
use serde::Serialize;
use sqlx::{MySql, Row, Transaction};

use super::buckets::{Counter, move_stock};
use super::db::{finish, retry_conflicts};
use super::orders::{cancel_order, lock_order};
use super::outbox;
use super::pool::Pool;
use super::rows::{HOLD_SELECT, hold_event_detail, hold_from_row};
use super::sql::Sql;
use crate::domain::events::{Committed, DomainEvent, EventType};
use crate::domain::ids::{HoldId, OrderId};
use crate::domain::model::{Hold, HoldStatus, Order, OrderStatus};
use crate::error::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryOutcome {
    /// The deadline had passed: the hold is now expired (or the order cancelled) and its units
    /// available.
    Expired,
    /// The trigger came early; nothing changed (the sweeper or a retry settles it later).
    NotYetDue,
    /// Settled before (redeemed, paid, expired, cancelled): a duplicate or late trigger.
    AlreadySettled,
    NotFound,
}

/// Settles one hold if, and only if, it is active and past its expiry. Safe to run early, late,
/// twice, concurrently, or after the hold was redeemed.
pub async fn expire_hold(pool: &Pool, hold_id: &HoldId) -> Result<Committed<ExpiryOutcome>, Error> {
    let settled = retry_conflicts("expire_hold", || async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let settled = try_expire_hold(&mut tx, hold_id).await;
        finish(tx, settled).await
    })
    .await?;
    Ok(match settled {
        Settled::Not(outcome) => Committed::quiet(outcome),
        Settled::Now(hold, event) => {
            record_expiry_lag(hold.expires_at);
            tracing::info!(hold_id = %hold.hold_id, product_id = %hold.product_id, qty = hold.qty, "hold expired");
            Committed::new(ExpiryOutcome::Expired, vec![event])
        }
    })
}

/// What a deadline trigger's transaction did: settled the row now (with its event), or nothing.
enum Settled<T> {
    Now(T, DomainEvent),
    Not(ExpiryOutcome),
}

async fn try_expire_hold(
    tx: &mut Transaction<'_, MySql>,
    hold_id: &HoldId,
) -> Result<Settled<Hold>, Error> {
    let Some(row) = Sql::new(format!("{HOLD_SELECT} WHERE id = ? FOR UPDATE"))
        .bind(hold_id.as_str())
        .fetch_optional(&mut **tx)
        .await?
    else {
        return Ok(Settled::Not(ExpiryOutcome::NotFound));
    };
    let stored: String = row.try_get("status")?;
    if stored != "active" {
        return Ok(Settled::Not(ExpiryOutcome::AlreadySettled));
    }
    let hold = hold_from_row(&row)?;
    if hold.status == HoldStatus::Active {
        return Ok(Settled::Not(ExpiryOutcome::NotYetDue));
    }
    let event = give_back(tx, &hold, "expired", EventType::HoldExpired).await?;
    Ok(Settled::Now(hold, event))
}

/// Ends a locked active hold (`expired`, or `released` by its buyer): its status, its event,
/// its units back to available.
pub(super) async fn give_back(
    tx: &mut Transaction<'_, MySql>,
    hold: &Hold,
    status: &'static str,
    event_type: EventType,
) -> Result<DomainEvent, Error> {
    Sql::new("UPDATE holds SET status = ?, settled_at = UTC_TIMESTAMP(3) WHERE id = ?")
        .bind(status)
        .bind(hold.hold_id.as_str())
        .execute(&mut **tx)
        .await?;
    let event = outbox::record(tx, event_type, hold_event_detail(hold)).await?;
    move_stock(
        tx,
        hold.product_id,
        hold.bucket,
        hold.qty,
        Counter::Reserved,
        Counter::Available,
    )
    .await?;
    Ok(event)
}

/// Cancels one order if, and only if, it is still unpaid past its `cancel_at`. Safe to run
/// early, late, twice, concurrently, or after the order was paid.
pub async fn expire_order(
    pool: &Pool,
    order_id: &OrderId,
) -> Result<Committed<ExpiryOutcome>, Error> {
    let settled = retry_conflicts("expire_order", || async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let settled = try_expire_order(&mut tx, order_id).await;
        finish(tx, settled).await
    })
    .await?;
    Ok(match settled {
        Settled::Not(outcome) => Committed::quiet(outcome),
        Settled::Now(order, event) => {
            record_expiry_lag(order.cancel_at);
            tracing::info!(order_id = %order.order_id, hold_id = %order.hold_id, "order cancelled: unpaid past its deadline and grace");
            Committed::new(ExpiryOutcome::Expired, vec![event])
        }
    })
}

async fn try_expire_order(
    tx: &mut Transaction<'_, MySql>,
    order_id: &OrderId,
) -> Result<Settled<Order>, Error> {
    let Some((order, stored)) = lock_order(tx, order_id).await? else {
        return Ok(Settled::Not(ExpiryOutcome::NotFound));
    };
    if stored != OrderStatus::PendingPayment {
        return Ok(Settled::Not(ExpiryOutcome::AlreadySettled));
    }
    if order.status == OrderStatus::PendingPayment {
        return Ok(Settled::Not(ExpiryOutcome::NotYetDue));
    }
    let event = cancel_order(tx, &order, "payment_timeout").await?;
    Ok(Settled::Now(order, event))
}

/// How late a deadline trigger settled its hold or order (by this process's clock).
fn record_expiry_lag(deadline: NaiveDateTime) {
    let lag = (chrono::Utc::now().naive_utc() - deadline).num_milliseconds();
    crate::metrics::milliseconds(crate::metrics::EXPIRY_LAG, lag.max(0) as u64);
}
