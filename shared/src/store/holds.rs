//! Holds: reserving units (a fast path that is one `CALL reserve_hold_v2`, a slow path that settles
//! and gathers units into one bucket: `store::gather`), replaying an Idempotency-Key, and reading
//! a hold.

use std::time::Duration;

use chrono::NaiveDateTime;
use sqlx::Row;

use super::db::retry_conflicts;
use super::gather::consolidate;
use super::pool::Pool;
use super::products::sale_from_row;
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
/// The fast path is one round trip: `CALL reserve_hold_v2(…)` (migrations/0008_reserve_hold_v2.sql,
/// where the rule is written) checks the sale window, checks the buyer's limit, inserts the hold
/// and reserves its units in one bucket (picked at random, so concurrent holds on a split product
/// lock different rows, trying the others in turn), and commits, all inside the server; when no
/// bucket had the units it checks the product's stock and refuses a product short of them in the
/// same round trip, and a refusal of a request whose Idempotency-Key made a hold already is
/// answered with that hold. Once this process has seen the product short
/// ([`ProductReads::found_too_few`](super::product_reads::ProductReads::found_too_few)), a plain
/// read of the stock comes first ([`try_reserve`]), so that every refusal after a sell-out is one
/// round trip that locks and writes nothing and runs no stored program. Only when the units
/// exist but no single bucket has `qty`, or some are in lapsed holds and unpaid orders not yet
/// settled, does it take the slow path, in rounds: refuse from a plain read when the product as
/// a whole is short; settle the product's lapsed holds and unpaid orders whenever that read
/// counts any (at sell-out they lapse all the time, and their units are available to every
/// reader but still in the buckets' reserved and sold counters, out of the procedure's reach);
/// gather units into one bucket; and call again.
/// So a hold is refused only when the product as a whole has too few units, or when other holds
/// took the gathered units first in every one of [`MAX_ROUNDS`] rounds. The events of what it
/// settled come back with the result; when it refuses, they stay in the outbox for the sweeper.
pub async fn reserve(
    pool: &Pool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Committed<Reservation>, Error> {
    let reserved = reserve_in_rounds(pool, request, ttl).await;
    let product_reads = pool.product_reads();
    match &reserved {
        Ok(_) => product_reads.forget(request.product_id),
        Err(Error::InsufficientStock { .. }) => product_reads.found_too_few(request.product_id),
        Err(_) => {}
    }
    reserved
}

async fn reserve_in_rounds(
    pool: &Pool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Committed<Reservation>, Error> {
    let mut settled = Vec::new();
    let mut available = 0;
    for _ in 0..MAX_ROUNDS {
        if let Some(reservation) =
            retry_conflicts("reserve", || try_reserve(pool, request, ttl)).await?
        {
            return Ok(Committed::new(reservation, settled));
        }
        // The procedure refused a product short of units itself: here some are, but must be
        // gathered into one bucket, or settled from lapsed holds and orders first.
        let stock = read_stock(pool, request.product_id, None).await?;
        stock.refusal(request)?;
        available = stock.counted + stock.lapsed;
        // Settling and gathering are bookkeeping another round can do again: losing a lock
        // conflict in either (or finding a bucket taken) loses this round, not the request.
        if stock.lapsed > 0 {
            match settle_lapsed(pool, request.product_id).await {
                Ok(committed) => settled.extend(committed.events),
                Err(err) if err.is_retryable_conflict() => continue,
                Err(err) => return Err(err),
            }
        }
        consolidate(pool, request.product_id, request.qty).await?;
    }
    // Every round, other holds took the units this one gathered (at sell-out, the units each
    // lapse frees): for this request the product has none, though it had a moment ago.
    tracing::warn!(
        product_id = %request.product_id,
        requested = request.qty,
        available,
        rounds = MAX_ROUNDS,
        "hold refused: other holds took the gathered units every round"
    );
    Err(Error::InsufficientStock {
        requested: request.qty,
        available,
    })
}

/// How many rounds one reservation's slow path runs before it refuses. A round is lost only to a
/// hold another request made, so this bounds a race at sell-out (each lapse frees units that
/// every waiting request goes for), not a normal sell-out, which ends in a refusal from the read.
const MAX_ROUNDS: usize = 64;

/// A product's units as a reservation judges them, with its terms and the database clock, from
/// one statement (one snapshot at one instant).
struct Stock {
    /// 0 when the product does not exist.
    found: i64,
    terms: SaleTerms,
    db_now: NaiveDateTime,
    /// What the buckets' `available_stock` counters hold: what the procedure can take.
    counted: i64,
    /// The units of lapsed holds and of unpaid orders past their deadline: available to every
    /// reader (as `get_product` counts them) but still in the reserved and sold counters until
    /// settled.
    lapsed: i64,
    /// Whether the buyer's `Idempotency-Key` (when asked about) made a hold already.
    keyed: bool,
}

/// Reads the product's [`Stock`], and whether `key` (the buyer's and their Idempotency-Key) made
/// a hold already. A plain SELECT that locks nothing: aggregates over the product's row answer
/// one row even when it does not exist, and the subqueries name the product by its id, not by
/// that row's column (which an aggregate query may not select on MySQL 8, ONLY_FULL_GROUP_BY).
async fn read_stock(
    pool: &Pool,
    product_id: ProductId,
    key: Option<(&str, &str)>,
) -> Result<Stock, Error> {
    let keyed = if key.is_some() {
        "(SELECT COUNT(*) FROM holds k WHERE k.buyer_id = ? AND k.idempotency_key = ?)"
    } else {
        "0"
    };
    let mut sql = Sql::new(format!(
        "SELECT COUNT(*) AS found, MAX(p.max_per_buyer) AS max_per_buyer, \
                MAX(p.sale_starts_at) AS sale_starts_at, MAX(p.sale_ends_at) AS sale_ends_at, \
                UTC_TIMESTAMP(3) AS db_now, \
                CAST((SELECT COALESCE(SUM(b.available_stock), 0) FROM stock_buckets b \
                      WHERE b.product_id = ?) AS SIGNED) AS counted, \
                CAST((SELECT COALESCE(SUM(h.qty), 0) FROM holds h \
                      WHERE h.product_id = ? AND h.status = 'active' \
                        AND h.expires_at <= UTC_TIMESTAMP(3)) \
                   + (SELECT COALESCE(SUM(o.qty), 0) FROM orders o \
                      WHERE o.product_id = ? AND o.status = 'pending_payment' \
                        AND o.cancel_at <= UTC_TIMESTAMP(3)) AS SIGNED) AS lapsed, \
                {keyed} AS keyed \
         FROM products p WHERE p.id = ?"
    ))
    .bind(product_id.0)
    .bind(product_id.0)
    .bind(product_id.0);
    if let Some((buyer, key)) = key {
        sql = sql.bind(buyer).bind(key);
    }
    let row = sql.bind(product_id.0).fetch_one(pool).await?;
    Ok(Stock {
        found: row.try_get("found")?,
        terms: sale_from_row(&row)?,
        db_now: row.try_get("db_now")?,
        counted: row.try_get("counted")?,
        lapsed: row.try_get("lapsed")?,
        keyed: row.try_get::<i64, _>("keyed")? > 0,
    })
}

impl Stock {
    /// Why `request` cannot be served from this stock: the product does not exist, its sale is
    /// not open, or it has too few units (which [`reserve`] then notes); `Ok` when it has
    /// enough, in buckets or lapsed holds and orders.
    fn refusal(&self, request: &HoldRequest) -> Result<(), Error> {
        if self.found == 0 {
            return Err(Error::ProductNotFound(request.product_id));
        }
        self.terms.check_open(self.db_now)?;
        let available = self.counted + self.lapsed;
        if available < i64::from(request.qty) {
            return Err(Error::InsufficientStock {
                requested: request.qty,
                available,
            });
        }
        Ok(())
    }
}

/// How `reserve_hold_v2` answered: `outcome` and what the answer needs.
struct Attempt {
    outcome: String,
    bucket: Option<u16>,
    expires_at: Option<NaiveDateTime>,
    db_now: NaiveDateTime,
    terms: SaleTerms,
    held: i64,
    /// The product's units as every reader counts them, with `insufficient_stock`.
    available: Option<i64>,
}

/// One `CALL reserve_hold_v2`: the hold (made now, or replayed for its Idempotency-Key), `None`
/// when the units must be gathered or settled first, or the refusal.
///
/// When this process last found the product short of units, one plain SELECT comes first
/// ([`read_stock`]), and a refusal is that read alone: no stored program (whose own machinery
/// costs the server more than the read), nothing locked, nothing written. It reads whether the
/// request's Idempotency-Key made a hold in the same snapshot as the stock, so a request whose
/// key's hold is not committed yet finds that hold's units still unreserved, goes on to the
/// `CALL`, and is answered with the hold there: the answer is the one this request would get at
/// the read's instant, as from the `CALL`.
async fn try_reserve(
    pool: &Pool,
    request: &HoldRequest,
    ttl: Duration,
) -> Result<Option<Reservation>, Error> {
    if pool.product_reads().expects_too_few(request.product_id) {
        let buyer = BuyerId::stored(request.buyer.as_ref());
        let key = request.idempotency_key.as_deref().map(|key| (buyer, key));
        let stock = read_stock(pool, request.product_id, key).await?;
        if stock.keyed {
            return replay(pool, request).await.map(Some);
        }
        stock.refusal(request)?;
    }
    let hold_id = HoldId::generate();
    let ttl_ms = u64::try_from(ttl.as_millis()).map_err(|_| Error::Config("hold TTL".into()))?;
    let rows = Sql::new("CALL reserve_hold_v2(?, ?, ?, ?, ?, ?, ?, ?)")
        .bind(hold_id.as_str())
        .bind(request.product_id.0)
        .bind(BuyerId::stored(request.buyer.as_ref()))
        .bind(request.qty)
        .bind(request.idempotency_key.as_deref())
        .bind(ttl_ms)
        .bind(fastrand::u16(..))
        // The stock is checked first above, not by the procedure.
        .bind(false)
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
        .ok_or_else(|| Error::Internal("reserve_hold_v2 answered no row".into()))?;
    let attempt = Attempt {
        outcome: row.try_get("outcome")?,
        bucket: row.try_get("bucket")?,
        expires_at: row.try_get("expires_at")?,
        db_now: row.try_get("db_now")?,
        terms: sale_from_row(row)?,
        held: row.try_get("held")?,
        available: row.try_get("available")?,
    };
    match attempt.outcome.as_str() {
        "held" => {
            let (Some(bucket), Some(expires_at)) = (attempt.bucket, attempt.expires_at) else {
                return Err(Error::Internal(
                    "reserve_hold_v2 held without a bucket".into(),
                ));
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
        "replay" => replay(pool, request).await.map(Some),
        "insufficient_stock" => Err(Error::InsufficientStock {
            requested: request.qty,
            available: attempt.available.unwrap_or(0),
        }),
        "product_not_found" => Err(Error::ProductNotFound(request.product_id)),
        "sale_not_started" | "sale_ended" => {
            attempt.terms.check_open(attempt.db_now)?;
            Err(Error::Internal(format!(
                "reserve_hold_v2 said {} of an open sale",
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
            "reserve_hold_v2 answered an unknown outcome {other:?}"
        ))),
    }
}

/// The buyer's earlier hold with this request's Idempotency-Key, as a replay; a key used for
/// another product or quantity is refused.
async fn replay(pool: &Pool, request: &HoldRequest) -> Result<Reservation, Error> {
    let row = Sql::new(format!(
        "{HOLD_SELECT} WHERE buyer_id = ? AND idempotency_key = ?"
    ))
    .bind(BuyerId::stored(request.buyer.as_ref()))
    .bind(request.idempotency_key.as_deref())
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::Internal("an Idempotency-Key collided with no hold".into()))?;
    let hold = hold_from_row(&row)?;
    if hold.product_id != request.product_id || hold.qty != request.qty {
        return Err(Error::IdempotencyKeyReused);
    }
    Ok(Reservation {
        hold,
        replayed: true,
    })
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
