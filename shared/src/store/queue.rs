//! Waiting rooms' queues: a buyer's join (one `CALL join_queue`), reading an entry (one indexed
//! read), the draw of a pre-queue at the start, and the figures of the summary.
//!
//! Positions come from the entries' AUTO_INCREMENT ids, never from a counter row: the draw gives
//! the pre-queue (ids up to D, P entries) positions 1..P in a random order, and every later entry
//! `id` has position P + (id − D). The ids are shared by every product's queue, so a product's
//! later positions skip the ids other products' joins took meanwhile (a skipped position admits
//! no one: its second of admission goes to fewer buyers). Nothing is written while buyers wait:
//! admission is computed from the position and the clock ([`crate::domain::queue`]).

use chrono::NaiveDateTime;
use sha2::{Digest, Sha256};
use sqlx::{MySql, Row, Transaction};

use super::db::finish;
use super::pool::Pool;
use super::sql::{Sql, literal};
use crate::domain::ids::{BuyerId, ProductId};
use crate::domain::queue::{Draw, StoredEntry};
use crate::error::{Error, is_duplicate_key};

/// The entry of a buyer, with its drawn position and its product's draw: one indexed read.
const ENTRY_SELECT: &str = "SELECT e.id, e.joined_at, q.position AS drawn_position, \
            d.pre_queue_size, d.last_pre_queue_id, d.product_id IS NOT NULL AS draw_claimed, \
            UTC_TIMESTAMP(3) AS db_now \
       FROM queue_entries e \
       LEFT JOIN queue_positions q ON q.entry_id = e.id \
       LEFT JOIN queue_draws d ON d.product_id = e.product_id \
      WHERE e.product_id = ? AND e.buyer_id = ?";

/// Drawn positions per `INSERT`: about 20 characters a row keeps a statement under RDS Proxy's
/// pinning threshold ([`super::sql::PROXY_PINS_TEXT_OVER`]).
const POSITIONS_PER_STATEMENT: usize = 600;

/// Drawn positions per transaction: one commit (a log flush) per 20 statements, not per statement.
const POSITIONS_PER_COMMIT: usize = 20 * POSITIONS_PER_STATEMENT;

/// A drawer that has not finished this long after it claimed the draw is taken to have died:
/// another takes over (the draw is deterministic, so it writes the same positions).
const DRAWER_GIVES_UP_SECONDS: i64 = 60;

/// An entry as read, at the database's instant.
#[derive(Debug, Clone)]
pub struct EntryRead {
    pub stored: StoredEntry,
    /// True once a drawer has claimed the product's draw (its pre-queue may not be counted
    /// yet: then `stored.draw` is `None`).
    pub draw_claimed: bool,
    /// True when this call made the entry (a join).
    pub joined: bool,
    pub db_now: NaiveDateTime,
}

/// The buyer joins the product's queue, or finds the place they have: one round trip.
pub async fn join(pool: &Pool, product: ProductId, buyer: &BuyerId) -> Result<EntryRead, Error> {
    let row = Sql::new("CALL join_queue(?, ?)")
        .bind(product.0)
        .bind(buyer.as_str())
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::Internal("join_queue answered no row".into()))?;
    let mut entry = entry_from_row(&row)?;
    entry.joined = row.try_get::<i8, _>("joined")? == 1;
    Ok(entry)
}

/// The buyer's entry in the product's queue, if they are in it.
pub async fn read_entry(
    pool: &Pool,
    product: ProductId,
    buyer: &BuyerId,
) -> Result<Option<EntryRead>, Error> {
    Sql::new(ENTRY_SELECT)
        .bind(product.0)
        .bind(buyer.as_str())
        .fetch_optional(pool)
        .await?
        .map(|row| entry_from_row(&row))
        .transpose()
}

/// An entry whose admission ended leaves the queue, so that its buyer may join again at the back.
pub async fn leave(pool: &Pool, entry_id: u64) -> Result<(), Error> {
    Sql::new("DELETE FROM queue_entries WHERE id = ?")
        .bind(entry_id)
        .execute(pool)
        .await?;
    Ok(())
}

fn entry_from_row(row: &sqlx::mysql::MySqlRow) -> Result<EntryRead, Error> {
    let pre_queue_size: Option<u64> = row.try_get("pre_queue_size")?;
    let last_pre_queue_id: Option<u64> = row.try_get("last_pre_queue_id")?;
    Ok(EntryRead {
        stored: StoredEntry {
            id: row.try_get("id")?,
            joined_at: row.try_get("joined_at")?,
            drawn_position: row.try_get("drawn_position")?,
            draw: pre_queue_size
                .zip(last_pre_queue_id)
                .map(|(size, last)| Draw {
                    pre_queue_size: size,
                    last_pre_queue_id: last,
                }),
        },
        draw_claimed: row.try_get::<i64, _>("draw_claimed")? == 1,
        joined: false,
        db_now: row.try_get("db_now")?,
    })
}

/// What the summary counts, at the database's instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFigures {
    /// Positions given out: the last one after the draw (P + the last id − D, an index dive);
    /// before it, `None`: the pre-queue's size is a count ([`count_entries`]).
    pub queue_length: Option<u64>,
    /// True once a drawer has claimed the draw.
    pub draw_claimed: bool,
    pub db_now: NaiveDateTime,
}

pub async fn figures(pool: &Pool, product: ProductId) -> Result<QueueFigures, Error> {
    let row = Sql::new(
        "SELECT d.pre_queue_size, d.last_pre_queue_id, d.product_id IS NOT NULL AS draw_claimed, \
                (SELECT MAX(e.id) FROM queue_entries e WHERE e.product_id = ?) AS last_id, \
                UTC_TIMESTAMP(3) AS db_now \
           FROM (SELECT 1 AS one) o LEFT JOIN queue_draws d ON d.product_id = ?",
    )
    .bind(product.0)
    .bind(product.0)
    .fetch_one(pool)
    .await?;
    let pre_queue_size: Option<u64> = row.try_get("pre_queue_size")?;
    let last_pre_queue_id: Option<u64> = row.try_get("last_pre_queue_id")?;
    let last_id: Option<u64> = row.try_get("last_id")?;
    Ok(QueueFigures {
        queue_length: pre_queue_size
            .zip(last_pre_queue_id)
            .map(|(size, last)| size + last_id.unwrap_or(0).saturating_sub(last)),
        draw_claimed: row.try_get::<i64, _>("draw_claimed")? == 1,
        db_now: row.try_get("db_now")?,
    })
}

/// The product's entries, counted over its index entries: a pre-queue's size before its draw
/// (0.3 s for a million here, so a summary keeps it for the max age of a product read).
pub async fn count_entries(pool: &Pool, product: ProductId) -> Result<u64, Error> {
    let count: i64 = Sql::new("SELECT COUNT(*) FROM queue_entries WHERE product_id = ?")
        .bind(product.0)
        .fetch_scalar(pool)
        .await?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Draws the product's pre-queue, if no one has (or its drawer died): the entries that joined
/// before `sale_starts_at` take positions 1..P in the order of SHA-256(seed, id), a seed drawn
/// now, written in position order (the first positions are readable first). Returns whether
/// this call drew. Call it at least [`crate::domain::queue::DRAW_AFTER_START`] after the start.
pub async fn draw(
    pool: &Pool,
    product: ProductId,
    sale_starts_at: NaiveDateTime,
) -> Result<bool, Error> {
    let started = std::time::Instant::now();
    let Some(claim) = claim_draw(pool, product, sale_starts_at).await? else {
        return Ok(false);
    };
    let claimed = started.elapsed();
    let order = drawn_order(&claim.seed, claim.ids);
    let ordered = started.elapsed();
    let mut conn = pool.acquire().await?;
    for (batch_index, batch) in order.chunks(POSITIONS_PER_COMMIT).enumerate() {
        let first = batch_index * POSITIONS_PER_COMMIT + 1;
        let mut tx = conn.begin().await?;
        let written = write_positions(&mut tx, first, batch).await;
        finish(tx, written).await?;
    }
    Sql::new("UPDATE queue_draws SET finished_at = UTC_TIMESTAMP(3) WHERE product_id = ?")
        .bind(product.0)
        .execute(&mut *conn)
        .await?;
    tracing::info!(
        %product,
        pre_queue = order.len(),
        claim_ms = claimed.as_millis() as u64,
        order_ms = (ordered - claimed).as_millis() as u64,
        write_ms = (started.elapsed() - ordered).as_millis() as u64,
        "pre-queue drawn"
    );
    Ok(true)
}

/// Positions `first`, `first + 1`, … of the entries `ids`, in statements of
/// [`POSITIONS_PER_STATEMENT`]. IGNORE: a drawer taking over from one that died writes the same
/// rows again.
async fn write_positions(
    tx: &mut Transaction<'_, MySql>,
    first: usize,
    ids: &[u64],
) -> Result<(), Error> {
    for (chunk_index, chunk) in ids.chunks(POSITIONS_PER_STATEMENT).enumerate() {
        let first = first + chunk_index * POSITIONS_PER_STATEMENT;
        let rows: Vec<String> = chunk
            .iter()
            .enumerate()
            .map(|(offset, id)| format!("({}, {})", literal(*id), literal((first + offset) as u64)))
            .collect();
        Sql::new(format!(
            "INSERT IGNORE INTO queue_positions (entry_id, position) VALUES {}",
            rows.join(", ")
        ))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The products whose pre-queue is due to be drawn and is not (none drew it, or its drawer
/// died): the sweeper draws them, in case no request after the start did.
pub async fn due_draws(pool: &Pool) -> Result<Vec<(ProductId, NaiveDateTime)>, Error> {
    Sql::new(
        "SELECT p.id, p.sale_starts_at FROM products p \
           LEFT JOIN queue_draws d ON d.product_id = p.id \
          WHERE p.waiting_room IS NOT NULL \
            AND p.sale_starts_at <= UTC_TIMESTAMP(3) - INTERVAL 1 SECOND \
            AND (d.product_id IS NULL OR (d.finished_at IS NULL \
                 AND d.claimed_at < UTC_TIMESTAMP(3) - INTERVAL ? SECOND))",
    )
    .bind(DRAWER_GIVES_UP_SECONDS)
    .fetch_all(pool)
    .await?
    .iter()
    .map(|row| {
        Ok((
            ProductId(row.try_get("id")?),
            row.try_get("sale_starts_at")?,
        ))
    })
    .collect()
}

/// The pre-queue's entry ids in drawn order: sorted by SHA-256(seed ‖ id), a uniformly random
/// permutation for a seed no one knew before the start, and the same one for a drawer taking
/// over with the same seed.
fn drawn_order(seed: &[u8], mut ids: Vec<u64>) -> Vec<u64> {
    let key = |id: u64| {
        let digest = Sha256::new()
            .chain_update(seed)
            .chain_update(id.to_be_bytes())
            .finalize();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(first), id)
    };
    ids.sort_by_cached_key(|id| key(*id));
    ids
}

struct Claim {
    seed: Vec<u8>,
    ids: Vec<u64>,
}

/// Claims the draw by inserting its row with a new seed (a concurrent drawer fails on the key at
/// once, having read nothing), then counts the pre-queue; or takes over a draw whose drawer died.
/// `None`: someone else draws, or drew.
async fn claim_draw(
    pool: &Pool,
    product: ProductId,
    sale_starts_at: NaiveDateTime,
) -> Result<Option<Claim>, Error> {
    let mut conn = pool.acquire().await?;
    let existing = Sql::new(
        "SELECT seed, last_pre_queue_id, finished_at IS NULL AND \
                claimed_at < UTC_TIMESTAMP(3) - INTERVAL ? SECOND AS abandoned, claimed_at \
           FROM queue_draws WHERE product_id = ?",
    )
    .bind(DRAWER_GIVES_UP_SECONDS)
    .bind(product.0)
    .fetch_optional(&mut *conn)
    .await?;
    let (seed, counted) = match existing {
        Some(row) => {
            if row.try_get::<i64, _>("abandoned")? != 1 {
                return Ok(None);
            }
            let claimed_at: NaiveDateTime = row.try_get("claimed_at")?;
            let taken = Sql::new(
                "UPDATE queue_draws SET claimed_at = UTC_TIMESTAMP(3) \
                  WHERE product_id = ? AND claimed_at = ? AND finished_at IS NULL",
            )
            .bind(product.0)
            .bind(claimed_at)
            .execute(&mut *conn)
            .await?;
            if taken.rows_affected() != 1 {
                return Ok(None);
            }
            tracing::warn!(%product, "took over the draw of a drawer that did not finish");
            let counted: Option<u64> = row.try_get("last_pre_queue_id")?;
            (row.try_get("seed")?, counted)
        }
        None => {
            let seed = uuid::Uuid::new_v4().into_bytes().to_vec();
            let inserted = Sql::new(
                "INSERT INTO queue_draws (product_id, seed, claimed_at) \
                 VALUES (?, ?, UTC_TIMESTAMP(3))",
            )
            .bind(product.0)
            .bind(seed.as_slice())
            .execute(&mut *conn)
            .await;
            match inserted {
                Ok(_) => (seed, None),
                Err(err) if is_duplicate_key(&err) => return Ok(None),
                Err(err) => return Err(err.into()),
            }
        }
    };
    let ids = match counted {
        Some(last) => pre_queue_ids(&mut *conn, product, last, "").await?,
        None => {
            let mut tx = conn.begin().await?;
            let counting = count_pre_queue(&mut tx, product, sale_starts_at).await;
            finish(tx, counting).await?
        }
    };
    Ok(Some(Claim { seed, ids }))
}

/// The pre-queue: the entries that joined before the start (D the last id of them, every id up
/// to it), recorded in the claimed draw's row.
async fn count_pre_queue(
    tx: &mut Transaction<'_, MySql>,
    product: ProductId,
    sale_starts_at: NaiveDateTime,
) -> Result<Vec<u64>, Error> {
    let last: Option<u64> = Sql::new(
        "SELECT MAX(id) AS last FROM queue_entries WHERE product_id = ? AND joined_at < ?",
    )
    .bind(product.0)
    .bind(sale_starts_at)
    .fetch_one(&mut **tx)
    .await?
    .try_get("last")?;
    let last = last.unwrap_or(0);
    // A locking read (READ COMMITTED: no gap locks, so joins go on) waits for any join with an
    // id up to D still in flight, so the pre-queue is exactly the entries up to D.
    let ids = pre_queue_ids(&mut **tx, product, last, " LOCK IN SHARE MODE").await?;
    Sql::new(
        "UPDATE queue_draws SET pre_queue_size = ?, last_pre_queue_id = ?, \
                finished_at = IF(? = 0, UTC_TIMESTAMP(3), NULL) \
          WHERE product_id = ?",
    )
    .bind(ids.len() as u64)
    .bind(last)
    .bind(ids.len() as u64)
    .bind(product.0)
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}

async fn pre_queue_ids<'c, E>(
    executor: E,
    product: ProductId,
    last: u64,
    locking: &str,
) -> Result<Vec<u64>, Error>
where
    E: sqlx::Executor<'c, Database = MySql>,
{
    Ok(Sql::new(format!(
        "SELECT id FROM queue_entries WHERE product_id = ? AND id <= ?{locking}"
    ))
    .bind(product.0)
    .bind(last)
    .fetch_column(executor)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drawn_order_is_a_permutation_fixed_by_its_seed() {
        let ids: Vec<u64> = (1..=1000).collect();
        let drawn = drawn_order(b"seed-1", ids.clone());
        let mut sorted = drawn.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, ids, "every entry once");
        assert_ne!(drawn, ids, "not the join order");
        assert_eq!(drawn_order(b"seed-1", ids.clone()), drawn, "same seed");
        assert_ne!(drawn_order(b"seed-2", ids), drawn, "another seed");
    }
}
