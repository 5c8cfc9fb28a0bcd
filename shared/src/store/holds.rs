//! Holds: reserving units (a fast path that is one `CALL reserve_hold`, a slow path that settles
//! and consolidates), replaying an Idempotency-Key, and reading a hold.

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::{MySql, Row, Transaction};

use super::db::{finish, retry_conflicts};
use super::pool::Pool;
use super::products::get_product;
use super::rows::{HOLD_SELECT, hold_from_row};
use super::settle::settle_lapsed;
use super::sql::Sql;
use crate::domain::events::Committed;
use crate::domain::ids::{BuyerId, HoldId, ProductId};
use crate::domain::model::{Hold, HoldStatus, SaleTerms};
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
/// The fast path is one round trip: `CALL reserve_hold(…)` (migrations/0007_reserve_hold.sql,
/// where the rule is written) checks the sale window and the buyer's limit, inserts the hold and
/// reserves its units in one bucket (picked at random, so concurrent holds on a split product lock
/// different rows, trying the others in turn), and commits, all inside the server. Only when no
/// single bucket has `qty` does it take the slow path: settle the product's lapsed holds and
/// unpaid orders, refuse from a plain read when the product as a whole is short, otherwise gather
/// units into one bucket and call again. So a hold is refused only when the product as a whole
/// has too few units. The events of what it settled come back with the result; when it refuses,
/// they stay in the outbox for the sweeper.
pub async fn reserve(
    pool: &Pool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Committed<Reservation>, Error> {
    let mut settled: Option<Committed<super::settle::Settlement>> = None;
    for _ in 0..MAX_CONSOLIDATIONS {
        match retry_conflicts("reserve", || try_reserve(pool, request, ttl)).await {
            Ok(Some(reservation)) => {
                let events = settled.map(|settled| settled.events).unwrap_or_default();
                return Ok(Committed::new(reservation, events));
            }
            Ok(None) => {}
            // A repeat of a request that made its hold is answered with it, whatever the sale
            // says now: it was refused before its key could meet the first one's.
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
        if settled.is_none() {
            settled = Some(settle_lapsed(pool, request.product_id).await?);
        }
        // Sold out is the common case here in a flash sale: refuse from a plain read, so
        // refusals never lock every bucket; only a hold that can be served consolidates.
        let available = get_product(pool, request.product_id).await?.available_stock;
        if available < i64::from(request.qty) {
            return Err(Error::InsufficientStock {
                requested: request.qty,
                available,
            });
        }
        retry_conflicts("consolidate_buckets", || {
            consolidate(pool, request.product_id, request.qty)
        })
        .await?;
    }
    // Each lost round means another hold took the gathered units; so many in a row is a fault.
    Err(Error::Internal(format!(
        "no hold after gathering units {MAX_CONSOLIDATIONS} times"
    )))
}

/// How often one reservation gathers units into a bucket before giving up. Each round it loses
/// is a hold another request made, so this bounds a pathological race, not a normal sell-out.
const MAX_CONSOLIDATIONS: usize = 64;

/// How `reserve_hold` answered: `outcome` and what the answer needs.
struct Attempt {
    outcome: String,
    bucket: Option<u16>,
    expires_at: Option<NaiveDateTime>,
    db_now: NaiveDateTime,
    terms: SaleTerms,
    held: i64,
}

/// One `CALL reserve_hold`: the hold, `None` when no single bucket has `qty`, or the refusal.
async fn try_reserve(
    pool: &Pool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Option<Reservation>, Error> {
    let hold_id = HoldId::generate();
    let ttl_ms = u64::try_from(ttl.as_millis()).map_err(|_| Error::Config("hold TTL".into()))?;
    let rows = Sql::new("CALL reserve_hold(?, ?, ?, ?, ?, ?, ?)")
        .bind(hold_id.as_str())
        .bind(request.product_id.0)
        .bind(BuyerId::stored(request.buyer.as_ref()))
        .bind(request.qty)
        .bind(request.idempotency_key.as_deref())
        .bind(ttl_ms)
        .bind(fastrand::u16(..))
        .fetch_all(pool)
        .await;
    let rows = match rows {
        Ok(rows) => rows,
        // The key's unique index made us wait for the first request with it, which committed.
        Err(err) if request.idempotency_key.is_some() && is_duplicate_key(&err) => {
            return replay(pool, request).await.map(Some);
        }
        Err(err) => return Err(err.into()),
    };
    let row = rows
        .first()
        .ok_or_else(|| Error::Internal("reserve_hold answered no row".into()))?;
    let attempt = Attempt {
        outcome: row.try_get("outcome")?,
        bucket: row.try_get("bucket")?,
        expires_at: row.try_get("expires_at")?,
        db_now: row.try_get("db_now")?,
        terms: SaleTerms {
            max_per_buyer: row.try_get("max_per_buyer")?,
            sale_starts_at: row.try_get("sale_starts_at")?,
            sale_ends_at: row.try_get("sale_ends_at")?,
        },
        held: row.try_get("held")?,
    };
    match attempt.outcome.as_str() {
        "held" => {
            let (Some(bucket), Some(expires_at)) = (attempt.bucket, attempt.expires_at) else {
                return Err(Error::Internal("reserve_hold held without a bucket".into()));
            };
            Ok(Some(Reservation {
                hold: Hold {
                    hold_id,
                    product_id: request.product_id,
                    buyer_id: request.buyer.clone(),
                    bucket,
                    qty: request.qty,
                    status: HoldStatus::Active,
                    expires_at,
                },
                replayed: false,
            }))
        }
        "no_bucket_has_enough" => Ok(None),
        "product_not_found" => Err(Error::ProductNotFound(request.product_id)),
        "sale_not_started" | "sale_ended" => {
            attempt.terms.check_open(attempt.db_now)?;
            Err(Error::Internal(format!(
                "reserve_hold said {} of an open sale",
                attempt.outcome
            )))
        }
        "buyer_limit_reached" => Err(match request.buyer {
            // An anonymous buyer cannot be counted, so a product with a limit refuses them.
            None => Error::BuyerLimitReached { limit: 0, held: 0 },
            Some(_) => Error::BuyerLimitReached {
                limit: attempt.terms.max_per_buyer.unwrap_or(0),
                held: attempt.held,
            },
        }),
        other => Err(Error::Internal(format!(
            "reserve_hold answered an unknown outcome {other:?}"
        ))),
    }
}

/// The slow path's own transaction: every bucket of the product locked in bucket order, and
/// units gathered into the fullest bucket until it has `qty` (totals move with them, so each
/// bucket still adds up). It reserves nothing: the next `reserve_hold` finds the units there.
async fn consolidate(pool: &Pool, product_id: ProductId, qty: u32) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let gathered = gather_units(&mut tx, product_id, qty).await;
    finish(tx, gathered).await
}

async fn gather_units(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
    qty: u32,
) -> Result<(), Error> {
    let rows = Sql::new(
        "SELECT bucket, available_stock FROM stock_buckets WHERE product_id = ? ORDER BY bucket FOR UPDATE",
    )
    .bind(product_id.0)
    .fetch_all(&mut **tx)
    .await?;
    if rows.is_empty() {
        return Err(Error::ProductNotFound(product_id));
    }
    let mut buckets = Vec::with_capacity(rows.len());
    for row in &rows {
        buckets.push((
            row.try_get::<u16, _>("bucket")?,
            i64::from(row.try_get::<i32, _>("available_stock")?),
        ));
    }
    let qty = i64::from(qty);
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
            Sql::new(
                "UPDATE stock_buckets SET available_stock = available_stock + ?, total_stock = total_stock + ? \
                 WHERE product_id = ? AND bucket = ?",
            )
            .bind(delta)
            .bind(delta)
            .bind(product_id.0)
            .bind(bucket)
            .execute(&mut **tx)
            .await?;
        }
        gathered += moved;
    }
    Ok(())
}

async fn replay(pool: &Pool, request: &HoldRequest) -> Result<Reservation, Error> {
    find_replay(pool, request)
        .await?
        .ok_or_else(|| Error::Internal("an Idempotency-Key collided with no hold".into()))
}

/// The buyer's earlier hold with this request's Idempotency-Key, if any, as a replay; a key used
/// for another product or quantity is refused.
async fn find_replay(pool: &Pool, request: &HoldRequest) -> Result<Option<Reservation>, Error> {
    let Some(row) = Sql::new(format!(
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
pub async fn get_hold(pool: &Pool, id: &HoldId, buyer: Option<&BuyerId>) -> Result<Hold, Error> {
    let row = Sql::new(format!("{HOLD_SELECT} WHERE id = ? AND buyer_id = ?"))
        .bind(id.as_str())
        .bind(BuyerId::stored(buyer))
        .fetch_optional(pool)
        .await?
        .ok_or(Error::HoldNotFound)?;
    hold_from_row(&row)
}
