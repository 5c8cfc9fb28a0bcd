//! The stock transactions. Each public function is one business operation that owns its
//! transaction(s) from `begin()` to `commit()`.
//!
//! Invariant, enforced per bucket by a CHECK constraint as well: `available + reserved + sold =
//! total`, none negative; a product's total is the sum of its buckets'. Correctness comes from InnoDB row locks only, taken in one order everywhere:
//!
//!   holds -> orders -> stock buckets (in bucket order when several)
//!
//! A stock bucket row is the contended one, so it is always locked last, by the one conditional
//! UPDATE that checks and moves stock, immediately followed by COMMIT. A product's stock may be
//! split over several buckets so that concurrent holds lock different rows.
//!
//! Deadlines need no job to take effect: an `active` hold whose `expires_at` has passed, or a
//! `pending_payment` order whose `cancel_at` has passed (by the database clock), is expired or
//! cancelled for every reader and every check. (An order's `cancel_at` is its `payment_due_at`
//! plus the grace in which a payment received in time may still be applied: [`crate::payments`].) Settling the row (units back to
//! `available_stock`) is bookkeeping that its trigger, the sweeper, a reservation that finds the
//! counter short or a late payment will do, whichever comes first.
//!
//! Every change worth telling other systems about writes its domain event to the outbox in the
//! same transaction ([`crate::events`]); functions here return those events with their result.
//!
//! Every transaction ends in [`finish`] (or an explicit rollback): none is left to a drop, which
//! would keep its row locks until the connection is next used.

use std::time::Duration;

use chrono::NaiveDateTime;
use serde::Serialize;
use serde_json::json;
use sqlx::mysql::MySqlRow;
use sqlx::{MySql, MySqlConnection, MySqlPool, QueryBuilder, Row, Transaction};

use crate::db::{finish, retry_conflicts};
use crate::error::{Error, is_duplicate_key};
use crate::events::{self, Committed, DomainEvent, EventType};
use crate::ids::{HoldId, OrderId, ProductId};
use crate::model::{
    Hold, HoldStatus, Order, OrderDetails, OrderStatus, PaymentRecord, PaymentStatus,
    PaymentWindow, Product, RecordedOutcome,
};
use crate::money::Cents;

/// Settling works through a product's lapsed holds and orders in batches of this many rows.
const SETTLE_BATCH: usize = 500;
/// The most rows a product's stock may be split over.
pub const MAX_STOCK_BUCKETS: u16 = 64;

pub struct NewProduct {
    pub name: String,
    pub price: Cents,
    pub stock: u32,
    /// Rows the stock is spread over (1..=MAX_STOCK_BUCKETS): more buckets, less lock contention
    /// on a hot product.
    pub buckets: u16,
}

/// The stock of each bucket: as even as possible, the first ones taking the remainder.
fn split_stock(stock: u32, buckets: u16) -> Vec<u32> {
    let buckets = u32::from(buckets.max(1));
    (0..buckets)
        .map(|i| stock / buckets + u32::from(i < stock % buckets))
        .collect()
}

pub async fn create_product(pool: &MySqlPool, new: &NewProduct) -> Result<Product, Error> {
    let mut tx = pool.begin().await?;
    let created = insert_product(&mut tx, new).await;
    finish(tx, created).await
}

async fn insert_product(
    tx: &mut Transaction<'static, MySql>,
    new: &NewProduct,
) -> Result<Product, Error> {
    let inserted = sqlx::query(
        "INSERT INTO products (name, price_cents, total_stock, stock_buckets, created_at) \
         VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3))",
    )
    .bind(&new.name)
    .bind(new.price.0)
    .bind(new.stock)
    .bind(new.buckets)
    .execute(&mut **tx)
    .await?;
    let id = ProductId(inserted.last_insert_id());
    insert_buckets(tx, id, new.stock, new.buckets).await?;
    Ok(Product {
        id,
        name: new.name.clone(),
        price: new.price,
        total_stock: i64::from(new.stock),
        available_stock: i64::from(new.stock),
        reserved_stock: 0,
        sold_stock: 0,
        stock_buckets: new.buckets,
    })
}

async fn insert_buckets(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
    stock: u32,
    buckets: u16,
) -> Result<(), Error> {
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT INTO stock_buckets (product_id, bucket, total_stock, available_stock) ",
    );
    insert.push_values(
        split_stock(stock, buckets).into_iter().enumerate(),
        |mut row, (bucket, units)| {
            row.push_bind(product_id.0)
                .push_bind(bucket as u16)
                .push_bind(units)
                .push_bind(units);
        },
    );
    insert.build().execute(&mut **tx).await?;
    Ok(())
}

/// Creates product 1 (100 units at 50.00) when there is no product at all. Instances starting
/// together race on the primary key; the losers see a duplicate and do nothing.
pub async fn seed_demo_product(pool: &MySqlPool) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let seeded = insert_demo_product(&mut tx).await;
    finish(tx, seeded).await
}

async fn insert_demo_product(tx: &mut Transaction<'static, MySql>) -> Result<bool, Error> {
    let seeded = sqlx::query(
        "INSERT INTO products (id, name, price_cents, total_stock, stock_buckets, created_at) \
         SELECT 1, 'Demo product', 5000, 100, 1, UTC_TIMESTAMP(3) FROM DUAL \
         WHERE NOT EXISTS (SELECT 1 FROM products)",
    )
    .execute(&mut **tx)
    .await;
    match seeded {
        Ok(done) if done.rows_affected() == 1 => {
            insert_buckets(tx, ProductId(1), 100, 1).await?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(err) if is_duplicate_key(&err) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// One consistent statement: the bucket counters, the lapsed holds they still count as reserved
/// and the lapsed unpaid orders they still count as sold, from one snapshot at one instant.
pub async fn get_product(pool: &MySqlPool, id: ProductId) -> Result<Product, Error> {
    let row = sqlx::query(
        "SELECT p.id, p.name, p.price_cents, p.total_stock, p.stock_buckets, \
                CAST((SELECT SUM(b.available_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS available, \
                CAST((SELECT SUM(b.reserved_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS reserved, \
                CAST((SELECT SUM(b.sold_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS sold, \
                CAST((SELECT COALESCE(SUM(h.qty), 0) FROM holds h \
                      WHERE h.product_id = p.id AND h.status = 'active' \
                        AND h.expires_at <= UTC_TIMESTAMP(3)) AS SIGNED) AS lapsed_holds, \
                CAST((SELECT COALESCE(SUM(o.qty), 0) FROM orders o \
                      WHERE o.product_id = p.id AND o.status = 'pending_payment' \
                        AND o.cancel_at <= UTC_TIMESTAMP(3)) AS SIGNED) AS lapsed_orders \
         FROM products p WHERE p.id = ?",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::ProductNotFound(id))?;
    let sum = |column: &str| row.try_get::<i64, _>(column);
    let (lapsed_holds, lapsed_orders) = (sum("lapsed_holds")?, sum("lapsed_orders")?);
    Ok(Product {
        id: ProductId(row.try_get("id")?),
        name: row.try_get("name")?,
        price: Cents(row.try_get("price_cents")?),
        total_stock: i64::from(row.try_get::<i32, _>("total_stock")?),
        available_stock: sum("available")? + lapsed_holds + lapsed_orders,
        reserved_stock: sum("reserved")? - lapsed_holds,
        sold_stock: sum("sold")? - lapsed_orders,
        stock_buckets: row.try_get("stock_buckets")?,
    })
}

pub struct HoldRequest {
    pub product_id: ProductId,
    pub qty: u32,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
}

#[derive(Debug)]
pub struct Reservation {
    pub hold: Hold,
    /// True when this answers a repeat of an earlier request with the same Idempotency-Key.
    pub replayed: bool,
}

/// Reserves `qty` units for `ttl`.
///
/// The fast path is INSERT hold, then one conditional UPDATE of one stock bucket that checks and
/// reserves, then COMMIT: a bucket row is locked for one statement and the commit. The bucket is
/// picked at random so concurrent holds on a split product lock different rows; a bucket short of
/// units makes the same transaction try the next ones (an UPDATE whose condition fails takes no
/// lock at READ COMMITTED). Only when no bucket has `qty` does it take the slow path: settle the
/// product's lapsed holds and unpaid orders, then lock all buckets (in bucket order) and, if their
/// sum is enough, consolidate units into one bucket and reserve there. So a hold is refused only
/// when the product as a whole has too few units. The events of what it settled come back with
/// the result; when it refuses, they stay in the outbox for the sweeper.
pub async fn reserve(
    pool: &MySqlPool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Committed<Reservation>, Error> {
    if let Some(reservation) =
        retry_conflicts("reserve", || try_reserve(pool, request, ttl)).await?
    {
        return Ok(Committed::quiet(reservation));
    }
    let settled = settle_lapsed(pool, request.product_id).await?;
    // Sold out is the common case here in a flash sale: refuse from a plain read, so refusals
    // never lock every bucket; only a hold that can be served takes the consolidation locks.
    let available = get_product(pool, request.product_id).await?.available_stock;
    if available < i64::from(request.qty) {
        return Err(Error::InsufficientStock {
            requested: request.qty,
            available,
        });
    }
    let reservation = retry_conflicts("reserve_consolidating", || {
        reserve_consolidating(pool, request, ttl)
    })
    .await?;
    Ok(Committed::new(reservation, settled.events))
}

/// The product's bucket count and the database clock, in one round trip outside any lock.
async fn buckets_and_now(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
) -> Result<(u16, NaiveDateTime), Error> {
    let row =
        sqlx::query("SELECT stock_buckets, UTC_TIMESTAMP(3) AS db_now FROM products WHERE id = ?")
            .bind(product_id.0)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(Error::ProductNotFound(product_id))?;
    Ok((row.try_get("stock_buckets")?, row.try_get("db_now")?))
}

/// Starts a hold: the row, in `bucket`, not yet backed by stock.
async fn insert_hold(
    tx: &mut Transaction<'_, MySql>,
    request: &HoldRequest,
    bucket: u16,
    now: NaiveDateTime,
    ttl: Duration,
) -> Result<Result<Hold, ()>, Error> {
    let hold = Hold {
        hold_id: HoldId::generate(),
        product_id: request.product_id,
        bucket,
        qty: request.qty,
        status: HoldStatus::Active,
        expires_at: now + chrono_duration(ttl)?,
    };
    let inserted = sqlx::query(
        "INSERT INTO holds (id, product_id, bucket, qty, status, idempotency_key, created_at, expires_at) \
         VALUES (?, ?, ?, ?, 'active', ?, ?, ?)",
    )
    .bind(hold.hold_id.as_str())
    .bind(hold.product_id.0)
    .bind(bucket)
    .bind(hold.qty)
    .bind(request.idempotency_key.as_deref())
    .bind(now)
    .bind(hold.expires_at)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(Ok(hold)),
        // The key's unique index made us wait for the first request with it, which committed.
        Err(err) if request.idempotency_key.is_some() && is_duplicate_key(&err) => Ok(Err(())),
        Err(err) => Err(err.into()),
    }
}

/// How a reservation attempt ended short of a hold.
enum Miss {
    /// The Idempotency-Key is taken: a request with it committed first.
    KeyTaken,
    /// No single bucket has the units (the fast path only).
    NoBucketHasEnough,
}

/// `None` when no bucket has `qty` units on its own.
async fn try_reserve(
    pool: &MySqlPool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Option<Reservation>, Error> {
    let mut tx = pool.begin().await?;
    let attempt = reserve_in_one_bucket(&mut tx, request, ttl).await;
    end_reservation(pool, request, tx, attempt).await
}

/// Commits a hold, or rolls back (the hold row inserted must not outlive a miss) and says why not.
async fn end_reservation(
    pool: &MySqlPool,
    request: &HoldRequest,
    tx: Transaction<'static, MySql>,
    attempt: Result<Result<Hold, Miss>, Error>,
) -> Result<Option<Reservation>, Error> {
    let missed = match attempt {
        Ok(Ok(hold)) => {
            tx.commit().await?;
            return Ok(Some(Reservation {
                hold,
                replayed: false,
            }));
        }
        Ok(Err(miss)) => miss,
        Err(err) => return finish(tx, Err(err)).await,
    };
    tx.rollback().await?;
    match missed {
        Miss::KeyTaken => replay(pool, request).await.map(Some),
        Miss::NoBucketHasEnough => Ok(None),
    }
}

async fn reserve_in_one_bucket(
    tx: &mut Transaction<'static, MySql>,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Result<Hold, Miss>, Error> {
    let (buckets, now) = buckets_and_now(tx, request.product_id).await?;
    let first = fastrand::u16(..buckets.max(1));
    let Ok(mut hold) = insert_hold(tx, request, first, now, ttl).await? else {
        return Ok(Err(Miss::KeyTaken));
    };
    for offset in 0..buckets {
        let bucket = (first + offset) % buckets;
        let reserved = sqlx::query(
            "UPDATE stock_buckets SET available_stock = available_stock - ?, reserved_stock = reserved_stock + ? \
             WHERE product_id = ? AND bucket = ? AND available_stock >= ?",
        )
        .bind(hold.qty)
        .bind(hold.qty)
        .bind(hold.product_id.0)
        .bind(bucket)
        .bind(hold.qty)
        .execute(&mut **tx)
        .await?;
        if reserved.rows_affected() == 1 {
            if bucket != first {
                sqlx::query("UPDATE holds SET bucket = ? WHERE id = ?")
                    .bind(bucket)
                    .bind(hold.hold_id.as_str())
                    .execute(&mut **tx)
                    .await?;
                hold.bucket = bucket;
            }
            return Ok(Ok(hold));
        }
    }
    Ok(Err(Miss::NoBucketHasEnough))
}

/// The slow path: every bucket locked in bucket order, units gathered into the fullest bucket
/// (totals move with them, so each bucket still adds up), the hold reserved there.
async fn reserve_consolidating(
    pool: &MySqlPool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Reservation, Error> {
    let mut tx = pool.begin().await?;
    let attempt = consolidate_and_reserve(&mut tx, request, ttl).await;
    end_reservation(pool, request, tx, attempt)
        .await?
        .ok_or_else(|| Error::Internal("the slow path never misses for want of a bucket".into()))
}

async fn consolidate_and_reserve(
    tx: &mut Transaction<'static, MySql>,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Result<Hold, Miss>, Error> {
    let rows = sqlx::query(
        "SELECT bucket, available_stock FROM stock_buckets WHERE product_id = ? ORDER BY bucket FOR UPDATE",
    )
    .bind(request.product_id.0)
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Err(Error::ProductNotFound(request.product_id));
    }
    let mut buckets = Vec::with_capacity(rows.len());
    for row in &rows {
        buckets.push((
            row.try_get::<u16, _>("bucket")?,
            i64::from(row.try_get::<i32, _>("available_stock")?),
        ));
    }
    let available: i64 = buckets.iter().map(|(_, units)| units).sum();
    let qty = i64::from(request.qty);
    if available < qty {
        return Err(Error::InsufficientStock {
            requested: request.qty,
            available,
        });
    }
    let (target, mut gathered) = buckets
        .iter()
        .copied()
        .max_by_key(|(_, units)| *units)
        .unwrap_or((0, 0));
    for (donor, units) in buckets
        .iter()
        .copied()
        .filter(|(bucket, _)| *bucket != target)
    {
        if gathered >= qty {
            break;
        }
        let moved = units.min(qty - gathered);
        if moved == 0 {
            continue;
        }
        for (bucket, delta) in [(donor, -moved), (target, moved)] {
            sqlx::query(
                "UPDATE stock_buckets SET available_stock = available_stock + ?, total_stock = total_stock + ? \
                 WHERE product_id = ? AND bucket = ?",
            )
            .bind(delta)
            .bind(delta)
            .bind(request.product_id.0)
            .bind(bucket)
            .execute(&mut **tx)
            .await?;
        }
        gathered += moved;
    }
    let now = db_now(tx).await?;
    let Ok(hold) = insert_hold(tx, request, target, now, ttl).await? else {
        return Ok(Err(Miss::KeyTaken));
    };
    move_stock(
        tx,
        hold.product_id,
        target,
        hold.qty,
        Counter::Available,
        Counter::Reserved,
    )
    .await?;
    Ok(Ok(hold))
}

async fn replay(pool: &MySqlPool, request: &HoldRequest) -> Result<Reservation, Error> {
    let row = sqlx::query(&format!("{HOLD_SELECT} WHERE idempotency_key = ?"))
        .bind(request.idempotency_key.as_deref())
        .fetch_one(pool)
        .await?;
    let hold = hold_from_row(&row)?;
    if hold.product_id != request.product_id || hold.qty != request.qty {
        return Err(Error::IdempotencyKeyReused);
    }
    Ok(Reservation {
        hold,
        replayed: true,
    })
}

const HOLD_SELECT: &str =
    "SELECT id, product_id, bucket, qty, status, expires_at, UTC_TIMESTAMP(3) AS db_now FROM holds";

fn hold_from_row(row: &MySqlRow) -> Result<Hold, Error> {
    hold_from_row_at(row, row.try_get("db_now")?)
}

/// The hold a row says, as of `now` by the database clock.
fn hold_from_row_at(row: &MySqlRow, now: NaiveDateTime) -> Result<Hold, Error> {
    let id: String = row.try_get("id")?;
    let expires_at: NaiveDateTime = row.try_get("expires_at")?;
    let status: String = row.try_get("status")?;
    Ok(Hold {
        hold_id: HoldId::parse(&id).ok_or_else(|| corrupt("holds.id", &id))?,
        product_id: ProductId(row.try_get("product_id")?),
        bucket: row.try_get("bucket")?,
        qty: row.try_get("qty")?,
        status: HoldStatus::from_db(&status, expires_at <= now),
        expires_at,
    })
}

pub async fn get_hold(pool: &MySqlPool, id: &HoldId) -> Result<Hold, Error> {
    let row = sqlx::query(&format!("{HOLD_SELECT} WHERE id = ?"))
        .bind(id.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or(Error::HoldNotFound)?;
    hold_from_row(&row)
}

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
    pool: &MySqlPool,
    hold_id: &HoldId,
    window: PaymentWindow,
) -> Result<Committed<Redemption>, Error> {
    let (ttl, grace) = (chrono_duration(window.ttl)?, chrono_duration(window.grace)?);
    retry_conflicts("redeem", || async {
        let mut tx = pool.begin().await?;
        let redeemed = try_redeem(&mut tx, hold_id, ttl, grace).await;
        finish(tx, redeemed).await
    })
    .await
}

async fn try_redeem(
    tx: &mut Transaction<'static, MySql>,
    hold_id: &HoldId,
    payment_ttl: chrono::Duration,
    grace: chrono::Duration,
) -> Result<Committed<Redemption>, Error> {
    let row = sqlx::query(&format!("{HOLD_SELECT} WHERE id = ? FOR UPDATE"))
        .bind(hold_id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::HoldNotFound)?;
    // The clock is read after the hold's lock was granted (the locking statement's own clock is
    // when it started waiting): a hold that expired while we waited is expired. The price never
    // changes after creation, so this plain read needs no lock.
    let (price, now): (i64, NaiveDateTime) =
        sqlx::query_as("SELECT price_cents, UTC_TIMESTAMP(3) FROM products WHERE id = ?")
            .bind(row.try_get::<u64, _>("product_id")?)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or_else(|| Error::Internal(format!("hold {hold_id} names no product")))?;
    let hold = hold_from_row_at(&row, now)?;
    match hold.status {
        HoldStatus::Redeemed => {
            let order = fetch_order(tx, "hold_id", hold_id.as_str()).await?;
            let payments = fetch_payments(tx, &order.order_id).await?;
            return Ok(Committed::quiet(Redemption {
                order: OrderDetails { order, payments },
                created: false,
            }));
        }
        HoldStatus::Expired => return Err(Error::HoldExpired),
        HoldStatus::Active => {}
    }
    let payment_due_at = now + payment_ttl;
    let order = Order {
        order_id: OrderId::generate(),
        hold_id: hold.hold_id.clone(),
        product_id: hold.product_id,
        bucket: hold.bucket,
        qty: hold.qty,
        amount: Cents(price).times(hold.qty),
        status: OrderStatus::PendingPayment,
        created_at: now,
        payment_due_at,
        cancel_at: payment_due_at + grace,
    };
    sqlx::query(
        "INSERT INTO orders (id, hold_id, product_id, bucket, qty, amount_cents, status, created_at, \
                             payment_due_at, cancel_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, 'pending_payment', ?, ?, ?, ?)",
    )
    .bind(order.order_id.as_str())
    .bind(order.hold_id.as_str())
    .bind(order.product_id.0)
    .bind(order.bucket)
    .bind(order.qty)
    .bind(order.amount.0)
    .bind(now)
    .bind(order.payment_due_at)
    .bind(order.cancel_at)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE holds SET status = 'redeemed', settled_at = ? WHERE id = ?")
        .bind(now)
        .bind(hold_id.as_str())
        .execute(&mut **tx)
        .await?;
    let event = events::record(
        tx,
        EventType::OrderCreated,
        json!({
            "order_id": order.order_id, "hold_id": order.hold_id, "product_id": order.product_id,
            "qty": order.qty, "amount": order.amount,
            "payment_due_at": crate::model::to_rfc3339(&order.payment_due_at),
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
pub async fn get_order(pool: &MySqlPool, id: &OrderId) -> Result<OrderDetails, Error> {
    let mut conn = pool.acquire().await?;
    let order = fetch_order(&mut conn, "id", id.as_str()).await?;
    let payments = fetch_payments(&mut conn, id).await?;
    Ok(OrderDetails { order, payments })
}

const ORDER_SELECT: &str = "SELECT id, hold_id, product_id, bucket, qty, amount_cents, status, created_at, \
                            payment_due_at, cancel_at, UTC_TIMESTAMP(3) AS db_now FROM orders";

async fn fetch_order(
    conn: &mut MySqlConnection,
    column: &'static str,
    value: &str,
) -> Result<Order, Error> {
    let row = sqlx::query(&format!("{ORDER_SELECT} WHERE {column} = ?"))
        .bind(value)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::OrderNotFound)?;
    order_from_row(&row).map(|(order, _)| order)
}

/// Oldest first by receipt; a key is recorded once, so a repeated event appears once.
async fn fetch_payments(
    conn: &mut MySqlConnection,
    order_id: &OrderId,
) -> Result<Vec<PaymentRecord>, Error> {
    let rows = sqlx::query(
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

/// The order a row says as readers see it, and the status the row stores (a lapsed unpaid
/// order reads as cancelled but is stored pending until something settles it).
fn order_from_row(row: &MySqlRow) -> Result<(Order, OrderStatus), Error> {
    let id: String = row.try_get("id")?;
    let hold_id: String = row.try_get("hold_id")?;
    let status: String = row.try_get("status")?;
    let cancel_at: NaiveDateTime = row.try_get("cancel_at")?;
    let db_now: NaiveDateTime = row.try_get("db_now")?;
    let order = Order {
        order_id: OrderId::parse(&id).ok_or_else(|| corrupt("orders.id", &id))?,
        hold_id: HoldId::parse(&hold_id).ok_or_else(|| corrupt("orders.hold_id", &hold_id))?,
        product_id: ProductId(row.try_get("product_id")?),
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

/// Locks an order row for a change of its status (orders come before stock buckets in the lock
/// order); with the status its row stores.
pub(crate) async fn lock_order(
    tx: &mut Transaction<'_, MySql>,
    id: &OrderId,
) -> Result<Option<(Order, OrderStatus)>, Error> {
    let Some(row) = sqlx::query(&format!("{ORDER_SELECT} WHERE id = ? FOR UPDATE"))
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
    sqlx::query(
        "UPDATE orders SET status = 'cancelled', updated_at = UTC_TIMESTAMP(3) WHERE id = ?",
    )
    .bind(order.order_id.as_str())
    .execute(&mut **tx)
    .await?;
    let event = events::record(
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

pub(crate) fn order_event_detail(order: &Order, reason: &str) -> serde_json::Value {
    json!({
        "order_id": order.order_id, "hold_id": order.hold_id, "product_id": order.product_id,
        "qty": order.qty, "amount": order.amount, "reason": reason,
    })
}

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
pub async fn expire_hold(
    pool: &MySqlPool,
    hold_id: &HoldId,
) -> Result<Committed<ExpiryOutcome>, Error> {
    let settled = retry_conflicts("expire_hold", || async {
        let mut tx = pool.begin().await?;
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
    tx: &mut Transaction<'static, MySql>,
    hold_id: &HoldId,
) -> Result<Settled<Hold>, Error> {
    let Some(row) = sqlx::query(&format!("{HOLD_SELECT} WHERE id = ? FOR UPDATE"))
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
    sqlx::query("UPDATE holds SET status = 'expired', settled_at = UTC_TIMESTAMP(3) WHERE id = ?")
        .bind(hold_id.as_str())
        .execute(&mut **tx)
        .await?;
    let event = events::record(tx, EventType::HoldExpired, hold_event_detail(&hold)).await?;
    move_stock(
        tx,
        hold.product_id,
        hold.bucket,
        hold.qty,
        Counter::Reserved,
        Counter::Available,
    )
    .await?;
    Ok(Settled::Now(hold, event))
}

fn hold_event_detail(hold: &Hold) -> serde_json::Value {
    json!({
        "hold_id": hold.hold_id, "product_id": hold.product_id, "qty": hold.qty,
        "expires_at": crate::model::to_rfc3339(&hold.expires_at),
    })
}

/// Cancels one order if, and only if, it is still unpaid past its `cancel_at`. Safe to run
/// early, late, twice, concurrently, or after the order was paid.
pub async fn expire_order(
    pool: &MySqlPool,
    order_id: &OrderId,
) -> Result<Committed<ExpiryOutcome>, Error> {
    let settled = retry_conflicts("expire_order", || async {
        let mut tx = pool.begin().await?;
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
    tx: &mut Transaction<'static, MySql>,
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
    pool: &MySqlPool,
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
async fn settle_hold_batch(
    pool: &MySqlPool,
    product_id: ProductId,
) -> Result<Vec<DomainEvent>, Error> {
    let mut tx = pool.begin().await?;
    let settled = expire_lapsed_holds(&mut tx, product_id).await;
    finish(tx, settled).await
}

async fn expire_lapsed_holds(
    tx: &mut Transaction<'static, MySql>,
    product_id: ProductId,
) -> Result<Vec<DomainEvent>, Error> {
    // Index order (expires_at, id): every settler locks a product's holds in the same order.
    let lapsed = sqlx::query(
        "SELECT id, product_id, bucket, qty, status, expires_at, UTC_TIMESTAMP(3) AS db_now FROM holds \
         WHERE product_id = ? AND status = 'active' AND expires_at <= UTC_TIMESTAMP(3) \
         ORDER BY expires_at, id LIMIT ? FOR UPDATE",
    )
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
        events.push(events::record(tx, EventType::HoldExpired, hold_event_detail(hold)).await?);
    }
    let units = holds.iter().map(|hold| (hold.bucket, hold.qty));
    return_units(tx, product_id, units, Counter::Reserved).await?;
    Ok(events)
}

/// Returns one OrderCancelled event per order it cancelled.
async fn settle_order_batch(
    pool: &MySqlPool,
    product_id: ProductId,
) -> Result<Vec<DomainEvent>, Error> {
    let mut tx = pool.begin().await?;
    let settled = cancel_lapsed_orders(&mut tx, product_id).await;
    finish(tx, settled).await
}

async fn cancel_lapsed_orders(
    tx: &mut Transaction<'static, MySql>,
    product_id: ProductId,
) -> Result<Vec<DomainEvent>, Error> {
    // Index order (cancel_at, id), as for holds.
    let lapsed = sqlx::query(&format!(
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
        events.push(events::record(tx, EventType::OrderCancelled, detail).await?);
    }
    let units = orders.iter().map(|order| (order.bucket, order.qty));
    return_units(tx, product_id, units, Counter::Sold).await?;
    Ok(events)
}

/// `update` (an UPDATE … SET …) applied to the rows with these ids, in one statement.
async fn set_status_where_id_in<'a>(
    tx: &mut Transaction<'static, MySql>,
    update: &str,
    ids: impl Iterator<Item = &'a str>,
) -> Result<(), Error> {
    let mut statement = QueryBuilder::<MySql>::new(update);
    statement.push(" WHERE id IN (");
    let mut separated = statement.separated(", ");
    for id in ids {
        separated.push_bind(id);
    }
    statement.push(")");
    statement.build().execute(&mut **tx).await?;
    Ok(())
}

/// Moves settled units back to available: one UPDATE per bucket, in bucket order (the lock
/// order among a product's buckets), as the last statements of the transaction, so no bucket
/// is locked while the rest of the batch is written, and two settlers never deadlock.
async fn return_units(
    tx: &mut Transaction<'static, MySql>,
    product_id: ProductId,
    units: impl Iterator<Item = (u16, u32)>,
    from: Counter,
) -> Result<(), Error> {
    let mut units_by_bucket = std::collections::BTreeMap::<u16, u32>::new();
    for (bucket, qty) in units {
        *units_by_bucket.entry(bucket).or_default() += qty;
    }
    for (bucket, units) in units_by_bucket {
        move_stock(tx, product_id, bucket, units, from, Counter::Available).await?;
    }
    Ok(())
}

/// Settles every lapsed hold and unpaid order of every product: the sweeper's job.
pub async fn settle_all_lapsed(pool: &MySqlPool) -> Result<Committed<Settlement>, Error> {
    let products: Vec<u64> = sqlx::query_scalar(
        "SELECT product_id FROM holds WHERE status = 'active' AND expires_at <= UTC_TIMESTAMP(3) \
         UNION \
         SELECT product_id FROM orders WHERE status = 'pending_payment' AND cancel_at <= UTC_TIMESTAMP(3)",
    )
    .fetch_all(pool)
    .await?;
    let mut settlement = Settlement::default();
    let mut events = Vec::new();
    for product_id in products {
        let settled = settle_lapsed(pool, ProductId(product_id)).await?;
        settlement.add(settled.value);
        events.extend(settled.events);
    }
    Ok(Committed::new(settlement, events))
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Counter {
    Available,
    Reserved,
    Sold,
}

impl Counter {
    fn column(self) -> &'static str {
        match self {
            Self::Available => "available_stock",
            Self::Reserved => "reserved_stock",
            Self::Sold => "sold_stock",
        }
    }
}

/// Moves units between two counters of one stock bucket: the last lock of every transaction.
pub(crate) async fn move_stock(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
    bucket: u16,
    qty: u32,
    from: Counter,
    to: Counter,
) -> Result<(), Error> {
    let (from, to) = (from.column(), to.column());
    let moved = sqlx::query(&format!(
        "UPDATE stock_buckets SET {from} = {from} - ?, {to} = {to} + ? WHERE product_id = ? AND bucket = ?"
    ))
    .bind(qty)
    .bind(qty)
    .bind(product_id.0)
    .bind(bucket)
    .execute(&mut **tx)
    .await?;
    if moved.rows_affected() != 1 {
        return Err(Error::ProductNotFound(product_id));
    }
    Ok(())
}

async fn db_now(tx: &mut Transaction<'_, MySql>) -> Result<NaiveDateTime, Error> {
    Ok(sqlx::query_scalar("SELECT UTC_TIMESTAMP(3)")
        .fetch_one(&mut **tx)
        .await?)
}

fn chrono_duration(duration: Duration) -> Result<chrono::Duration, Error> {
    chrono::Duration::from_std(duration).map_err(|err| Error::Config(err.to_string()))
}

fn corrupt(column: &str, value: &str) -> Error {
    Error::Database(sqlx::Error::Decode(
        format!("unexpected value in {column}: {value:?}").into(),
    ))
}
