//! The waiting room's audit, from the database's rows and what the buyers saw: the pre-queue's
//! positions are a permutation, admissions followed the rate, and no one held without an
//! admission that was running.

use shared::domain::ids::ProductId;
use shared::store::pool::Pool;
use sqlx::Row;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sqlx::types::chrono::NaiveDateTime;

use super::QueueConfig;
use super::buyers::Buyers;
use super::sale::Sale;
use crate::audit::{audit as audit_stock, audit_sold_out};
use crate::scenario::Scenario;

/// The product's draw, as its row says.
#[derive(Debug, Clone)]
pub struct DrawRow {
    pub pre_queue_size: u64,
    pub claimed_at: NaiveDateTime,
    pub finished_at: Option<NaiveDateTime>,
}

impl DrawRow {
    pub async fn read(pool: &Pool, product: ProductId) -> Result<Option<Self>, String> {
        let row = sqlx::query(
            "SELECT pre_queue_size, claimed_at, finished_at FROM queue_draws WHERE product_id = ?",
        )
        .bind(product.0)
        .fetch_optional(pool)
        .await
        .map_err(|err| err.to_string())?;
        row.map(|row| {
            Ok(Self {
                pre_queue_size: row.try_get(0)?,
                claimed_at: row.try_get(1)?,
                finished_at: row.try_get(2)?,
            })
        })
        .transpose()
        .map_err(|err: sqlx::Error| err.to_string())
    }

    /// Milliseconds from its claim to its last position written.
    pub fn took_ms(&self) -> Option<i64> {
        self.finished_at
            .map(|finished| (finished - self.claimed_at).num_milliseconds())
    }
}

/// When position `p` is admitted: `starts + floor((p − 1) / rate)` seconds.
pub fn admission_of(starts: NaiveDateTime, position: u64, rate: u32) -> NaiveDateTime {
    starts + Duration::from_secs(position.saturating_sub(1) / u64::from(rate.max(1)))
}

/// Every check, on the pass's product: `Ok` with a summary, or what broke.
pub async fn audit(
    pool: &Pool,
    config: &QueueConfig,
    buyers: &Buyers,
    starts: NaiveDateTime,
    sale: &Sale,
) -> Result<String, String> {
    let product = buyers.product();
    let positions = positions(pool, product).await?;
    let count = buyers.count() as u64;
    let mut drawn: Vec<u64> = positions.values().copied().collect();
    drawn.sort_unstable();
    if drawn.len() as u64 != count || drawn.iter().zip(1..).any(|(p, k)| *p != k) {
        return Err(format!(
            "{} entries with positions, not a permutation of 1..={count} (every buyer joined before the start)",
            drawn.len()
        ));
    }
    match DrawRow::read(pool, product).await? {
        Some(draw) if draw.pre_queue_size == count && draw.finished_at.is_some() => {}
        other => {
            return Err(format!(
                "the draw: {other:?}, expected {count} drawn and finished"
            ));
        }
    }

    let per_second = admissions(config, buyers, starts, sale, &positions)?;
    let busiest = per_second.values().copied().max().unwrap_or(0);
    if busiest > u64::from(config.rate) {
        return Err(format!(
            "{busiest} admitted in one second, above the rate {}",
            config.rate
        ));
    }

    let holds = held_in_time(pool, config, starts, &positions, product).await?;
    if holds > u64::from(config.stock) || holds != sale.holds.count() {
        return Err(format!(
            "{holds} holds in the table, {} answered 201, stock {}",
            sale.holds.count(),
            config.stock
        ));
    }
    let stock = if count >= u64::from(config.stock) {
        audit_sold_out(pool, product, config.stock).await?
    } else {
        audit_stock(pool, &[product], Scenario::HotHold).await?
    };
    Ok(format!(
        "ok: positions 1..={count}; at most {busiest} admitted a second over {} s, each at its turn; \
         {holds} holds, each within its buyer's admission; {stock}",
        per_second.len()
    ))
}

/// Each buyer's drawn position, by buyer id.
async fn positions(pool: &Pool, product: ProductId) -> Result<HashMap<String, u64>, String> {
    let rows = sqlx::query(
        "SELECT e.buyer_id, q.position FROM queue_entries e \
           LEFT JOIN queue_positions q ON q.entry_id = e.id WHERE e.product_id = ?",
    )
    .bind(product.0)
    .fetch_all(pool)
    .await
    .map_err(|err| err.to_string())?;
    let mut positions = HashMap::with_capacity(rows.len());
    for row in rows {
        let buyer = text(&row)?;
        let position: Option<u64> = row.try_get(1).map_err(|err| err.to_string())?;
        let position = position.ok_or(format!("{buyer}'s entry has no position"))?;
        positions.insert(buyer, position);
    }
    Ok(positions)
}

/// Each buyer was shown its stored position and admitted exactly at its turn, never read
/// admitted before then; the admissions by second since the start.
fn admissions(
    config: &QueueConfig,
    buyers: &Buyers,
    starts: NaiveDateTime,
    sale: &Sale,
    positions: &HashMap<String, u64>,
) -> Result<BTreeMap<i64, u64>, String> {
    let mut per_second = BTreeMap::new();
    for (buyer, seen) in sale.seen.iter().enumerate() {
        let name = buyers.name(buyer);
        let stored = positions.get(name).copied();
        if seen.position != stored {
            return Err(format!(
                "{name} was shown position {:?}, its row says {stored:?}",
                seen.position
            ));
        }
        let Some(position) = stored else { continue };
        let turn = admission_of(starts, position, config.rate);
        let (Some(admitted), Some(seen_at)) = (seen.admitted_at, seen.seen_admitted) else {
            return Err(format!("{name} (position {position}) was never admitted"));
        };
        if admitted != turn || seen_at < admitted {
            return Err(format!(
                "{name} (position {position}): admitted at {admitted}, read admitted at {seen_at}; its turn was {turn}"
            ));
        }
        *per_second
            .entry((admitted - starts).num_seconds())
            .or_default() += 1;
    }
    Ok(per_second)
}

/// Every hold of the product is one unit of a buyer in the queue, made at or after its
/// admission and before its end; how many there are.
async fn held_in_time(
    pool: &Pool,
    config: &QueueConfig,
    starts: NaiveDateTime,
    positions: &HashMap<String, u64>,
    product: ProductId,
) -> Result<u64, String> {
    let rows = sqlx::query("SELECT buyer_id, created_at, qty FROM holds WHERE product_id = ?")
        .bind(product.0)
        .fetch_all(pool)
        .await
        .map_err(|err| err.to_string())?;
    let ttl = Duration::from_secs(u64::from(config.ttl));
    for row in &rows {
        let buyer = text(row)?;
        let created: NaiveDateTime = row.try_get(1).map_err(|err| err.to_string())?;
        let qty: u32 = row.try_get(2).map_err(|err| err.to_string())?;
        let position = positions
            .get(&buyer)
            .ok_or(format!("a hold of {buyer}, who is not in the queue"))?;
        let admitted = admission_of(starts, *position, config.rate);
        if created < admitted || created >= admitted + ttl || qty != 1 {
            return Err(format!(
                "{buyer} (position {position}, admitted {admitted} for {} s) held {qty} at {created}",
                config.ttl
            ));
        }
    }
    Ok(rows.len() as u64)
}

/// The first column, a buyer id: `ascii_bin`, so binary to the driver.
fn text(row: &sqlx::mysql::MySqlRow) -> Result<String, String> {
    let bytes: Vec<u8> = row.try_get(0).map_err(|err| err.to_string())?;
    String::from_utf8(bytes).map_err(|err| err.to_string())
}

#[cfg(test)]
mod tests {
    use sqlx::types::chrono::DateTime;

    use super::*;

    #[test]
    fn position_k_is_admitted_floor_of_k_minus_one_over_the_rate_seconds_after_the_start() {
        let starts = DateTime::from_timestamp_millis(1_765_000_000_123)
            .expect("an instant")
            .naive_utc();
        let second = |n| starts + Duration::from_secs(n);
        assert_eq!(admission_of(starts, 1, 500), starts);
        assert_eq!(admission_of(starts, 500, 500), starts);
        assert_eq!(admission_of(starts, 501, 500), second(1));
        assert_eq!(admission_of(starts, 10_000, 500), second(19));
        assert_eq!(admission_of(starts, 3, 1), second(2));
    }
}
