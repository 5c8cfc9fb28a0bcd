//! Holds: reserving units (a fast path in one bucket, a slow path that settles and consolidates),
//! replaying an Idempotency-Key, and reading a hold.

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::{MySql, MySqlPool, Row, Transaction};

use super::buckets::{Counter, move_stock};
use super::chrono_duration;
use super::db::{finish, retry_conflicts};
use super::products::get_product;
use super::rows::{HOLD_SELECT, hold_from_row};
use super::sale::open_sale;
use super::settle::settle_lapsed;
use crate::domain::events::Committed;
use crate::domain::ids::{BuyerId, HoldId, ProductId};
use crate::domain::model::{Hold, HoldStatus};
use crate::error::{Error, is_duplicate_key};

pub struct HoldRequest {
    pub product_id: ProductId,
    /// Whose hold it is (`None`: anonymous, `BUYER_AUTH=none`).
    pub buyer: Option<BuyerId>,
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
    let fast = retry_conflicts("reserve", || try_reserve(pool, request, ttl)).await;
    match fast {
        Ok(Some(reservation)) => return Ok(Committed::quiet(reservation)),
        Ok(None) => {}
        // A repeat of a request that made its hold is answered with it, whatever the sale says
        // now: it was refused before its key could meet the first one's.
        Err(
            refused @ (Error::SaleNotStarted { .. }
            | Error::SaleEnded
            | Error::BuyerLimitReached { .. }),
        ) if request.idempotency_key.is_some() => {
            return match find_replay(pool, request).await? {
                Some(reservation) => Ok(Committed::quiet(reservation)),
                None => Err(refused),
            };
        }
        Err(err) => return Err(err),
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
        buyer_id: request.buyer.clone(),
        bucket,
        qty: request.qty,
        status: HoldStatus::Active,
        expires_at: now + chrono_duration(ttl)?,
    };
    let inserted = sqlx::query(
        "INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, idempotency_key, created_at, expires_at) \
         VALUES (?, ?, ?, ?, ?, 'active', ?, ?, ?)",
    )
    .bind(hold.hold_id.as_str())
    .bind(hold.product_id.0)
    .bind(BuyerId::stored(request.buyer.as_ref()))
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
    let (buckets, now) =
        open_sale(tx, request.product_id, request.buyer.as_ref(), request.qty).await?;
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
    let (_, now) = open_sale(tx, request.product_id, request.buyer.as_ref(), request.qty).await?;
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
    find_replay(pool, request)
        .await?
        .ok_or_else(|| Error::Internal("an Idempotency-Key collided with no hold".into()))
}

/// The buyer's earlier hold with this request's Idempotency-Key, if any, as a replay; a key used
/// for another product or quantity is refused.
async fn find_replay(
    pool: &MySqlPool,
    request: &HoldRequest,
) -> Result<Option<Reservation>, Error> {
    let Some(row) = sqlx::query(&format!(
        "{HOLD_SELECT} WHERE buyer_id = ? AND idempotency_key = ?"
    ))
    .bind(BuyerId::stored(request.buyer.as_ref()))
    .bind(request.idempotency_key.as_deref())
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let hold = hold_from_row(&row)?;
    if hold.product_id != request.product_id || hold.qty != request.qty {
        return Err(Error::IdempotencyKeyReused);
    }
    Ok(Some(Reservation {
        hold,
        replayed: true,
    }))
}

/// A hold of `buyer`'s: another buyer's is not found, as one that does not exist.
pub async fn get_hold(
    pool: &MySqlPool,
    id: &HoldId,
    buyer: Option<&BuyerId>,
) -> Result<Hold, Error> {
    let row = sqlx::query(&format!("{HOLD_SELECT} WHERE id = ? AND buyer_id = ?"))
        .bind(id.as_str())
        .bind(BuyerId::stored(buyer))
        .fetch_optional(pool)
        .await?
        .ok_or(Error::HoldNotFound)?;
    hold_from_row(&row)
}
