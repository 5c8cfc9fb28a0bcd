//! Settling in bulk: every lapsed hold and unpaid order of a product (a refused reservation, the
//! sweeper), in short batches that take the stock bucket locks last.

use serde::Serialize;
use sqlx::{MySql, Row, Transaction};

use super::buckets::{Counter, return_units};
use super::db::{finish, retry_conflicts};
use super::outbox;
use super::pool::Pool;
use super::rows::{
    HOLD_SELECT, ORDER_SELECT, hold_event_detail, hold_from_row, order_event_detail, order_from_row,
};
use super::sql::{IDS_PER_STATEMENT, Sql, list};
use crate::domain::events::{Committed, DomainEvent, EventType};
use crate::domain::ids::ProductId;
use crate::error::Error;

/// Settling works through a product's lapsed holds and orders in batches of this many rows.
const SETTLE_BATCH: usize = 500;

/// What one settlement run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Settlement {
    pub holds_expired: u64,
    pub orders_cancelled: u64,
}

impl Settlement {
    fn add(&mut self, other: Settlement) {
        self.holds_expired += other.holds_expired;
        self.orders_cancelled += other.orders_cancelled;
    }
}

/// Settles every lapsed hold and every unpaid order past its deadline of one product.
pub async fn settle_lapsed(
    pool: &Pool,
    product_id: ProductId,
) -> Result<Committed<Settlement>, Error> {
    let mut events = Vec::new();
    let holds_expired = settle_in_batches(&mut events, "settle_lapsed_holds", || {
        settle_hold_batch(pool, product_id)
    })
    .await?;
    let orders_cancelled = settle_in_batches(&mut events, "settle_lapsed_orders", || {
        settle_order_batch(pool, product_id)
    })
    .await?;
    Ok(Committed::new(
        Settlement {
            holds_expired,
            orders_cancelled,
        },
        events,
    ))
}

/// Runs a batch transaction (one event per row it settled) until a batch comes back short;
/// returns how many rows were settled.
async fn settle_in_batches<F, Fut>(
    events: &mut Vec<DomainEvent>,
    operation: &'static str,
    mut batch: F,
) -> Result<u64, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Vec<DomainEvent>, Error>>,
{
    let mut settled = 0;
    loop {
        let settled_now = retry_conflicts(operation, &mut batch).await?;
        settled += settled_now.len() as u64;
        let done = settled_now.len() < SETTLE_BATCH;
        events.extend(settled_now);
        if done {
            return Ok(settled);
        }
    }
}

/// Returns one HoldExpired event per hold it settled.
async fn settle_hold_batch(pool: &Pool, product_id: ProductId) -> Result<Vec<DomainEvent>, Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let settled = expire_lapsed_holds(&mut tx, product_id).await;
    finish(tx, settled).await
}

async fn expire_lapsed_holds(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
) -> Result<Vec<DomainEvent>, Error> {
    // Index order (expires_at, id): every settler locks a product's holds in the same order.
    let lapsed = Sql::new(format!(
        "{HOLD_SELECT} WHERE product_id = ? AND status = 'active' \
             AND expires_at <= UTC_TIMESTAMP(3) ORDER BY expires_at, id LIMIT ? FOR UPDATE"
    ))
    .bind(product_id.0)
    .bind(SETTLE_BATCH as u64)
    .fetch_all(&mut **tx)
    .await?;
    let holds = lapsed
        .iter()
        .map(hold_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    if holds.is_empty() {
        return Ok(Vec::new());
    }
    set_status_where_id_in(
        tx,
        "UPDATE holds SET status = 'expired', settled_at = UTC_TIMESTAMP(3)",
        holds.iter().map(|hold| hold.hold_id.as_str()),
    )
    .await?;
    let mut events = Vec::with_capacity(holds.len());
    for hold in &holds {
        events.push(outbox::record(tx, EventType::HoldExpired, hold_event_detail(hold)).await?);
    }
    let units = holds.iter().map(|hold| (hold.bucket, hold.qty));
    return_units(tx, product_id, units, Counter::Reserved).await?;
    Ok(events)
}

/// Returns one OrderCancelled event per order it cancelled.
async fn settle_order_batch(pool: &Pool, product_id: ProductId) -> Result<Vec<DomainEvent>, Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let settled = cancel_lapsed_orders(&mut tx, product_id).await;
    finish(tx, settled).await
}

async fn cancel_lapsed_orders(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
) -> Result<Vec<DomainEvent>, Error> {
    // Index order (cancel_at, id), as for holds.
    let lapsed = Sql::new(format!(
        "{ORDER_SELECT} WHERE product_id = ? AND status = 'pending_payment' \
         AND cancel_at <= UTC_TIMESTAMP(3) ORDER BY cancel_at, id LIMIT ? FOR UPDATE"
    ))
    .bind(product_id.0)
    .bind(SETTLE_BATCH as u64)
    .fetch_all(&mut **tx)
    .await?;
    let orders = lapsed
        .iter()
        .map(|row| order_from_row(row).map(|(order, _)| order))
        .collect::<Result<Vec<_>, _>>()?;
    if orders.is_empty() {
        return Ok(Vec::new());
    }
    set_status_where_id_in(
        tx,
        "UPDATE orders SET status = 'cancelled', updated_at = UTC_TIMESTAMP(3)",
        orders.iter().map(|order| order.order_id.as_str()),
    )
    .await?;
    let mut events = Vec::with_capacity(orders.len());
    for order in &orders {
        let detail = order_event_detail(order, "payment_timeout");
        events.push(outbox::record(tx, EventType::OrderCancelled, detail).await?);
    }
    let units = orders.iter().map(|order| (order.bucket, order.qty));
    return_units(tx, product_id, units, Counter::Sold).await?;
    Ok(events)
}

/// `update` (an UPDATE … SET …) applied to the rows with these ids, in one statement.
/// In statements of at most [`IDS_PER_STATEMENT`] ids, so each stays under RDS Proxy's 16 KB.
async fn set_status_where_id_in<'a>(
    tx: &mut Transaction<'_, MySql>,
    update: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), Error> {
    let ids: Vec<&str> = ids.collect();
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        Sql::new(format!("{update} WHERE id IN ({})", list(chunk)))
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// What settling every product did: what the products that settled committed, and the
/// products whose settlement failed, each with its error.
#[derive(Debug)]
pub struct SettledProducts {
    pub settled: Committed<Settlement>,
    pub failed: Vec<(ProductId, Error)>,
}

/// Settles every lapsed hold and unpaid order of every product: the sweeper's job. Each product
/// is settled on its own, so one whose settlement fails (a row its statements cannot change,
/// say) is reported with its error while the others are still settled; only the listing of the
/// products failing fails the whole.
pub async fn settle_all_lapsed(pool: &Pool) -> Result<SettledProducts, Error> {
    let products = Sql::new(
        "SELECT product_id FROM holds WHERE status = 'active' AND expires_at <= UTC_TIMESTAMP(3) \
         UNION \
         SELECT product_id FROM orders WHERE status = 'pending_payment' AND cancel_at <= UTC_TIMESTAMP(3)",
    )
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| row.try_get::<u64, _>(0))
    .collect::<Result<Vec<_>, _>>()?;
    let mut settlement = Settlement::default();
    let mut events = Vec::new();
    let mut failed = Vec::new();
    for product_id in products.into_iter().map(ProductId) {
        match settle_lapsed(pool, product_id).await {
            Ok(settled) => {
                settlement.add(settled.value);
                events.extend(settled.events);
            }
            Err(err) => failed.push((product_id, err)),
        }
    }
    Ok(SettledProducts {
        settled: Committed::new(settlement, events),
        failed,
    })
}
