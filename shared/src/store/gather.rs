//! The slow path's gathering: when no single bucket of a product has the units a reservation
//! asks for, though the buckets have them together, units move into one bucket so that the next
//! `CALL reserve_hold_v2` finds them there.

use sqlx::{MySql, Row, Transaction};

use super::db::finish;
use super::pool::Pool;
use super::sql::{Sql, list, literal};
use crate::domain::ids::ProductId;
use crate::error::Error;
use crate::server_errors;

/// The slow path's own transaction: every bucket of the product locked in bucket order, and
/// units gathered into the fullest bucket until it has `qty` (totals move with them, so each
/// bucket still adds up). It reserves nothing: the next `CALL` finds the units there.
///
/// It never waits for a bucket (`NOWAIT`), and answers `false`, having changed nothing, when
/// another transaction holds one. The procedure goes round the buckets from a random one, and a
/// conditional UPDATE that had to wait for its row keeps the lock even when its condition then
/// fails (MariaDB at READ COMMITTED), so a reservation may hold a later bucket while it waits
/// for an earlier one: a transaction holding some buckets and waiting for the next would
/// deadlock with it. One that never waits is in no cycle.
pub(super) async fn consolidate(
    pool: &Pool,
    product_id: ProductId,
    qty: u32,
) -> Result<bool, Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let gathered = gather_units(&mut tx, product_id, qty).await;
    match finish(tx, gathered).await {
        Ok(()) => Ok(true),
        Err(Error::Database(err)) if is_busy(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

/// A bucket another transaction holds: MariaDB answers `NOWAIT` with 1205, MySQL 8 with 3572.
fn is_busy(err: &sqlx::Error) -> bool {
    matches!(
        server_errors::number(err),
        Some(server_errors::ER_LOCK_WAIT_TIMEOUT | server_errors::ER_LOCK_NOWAIT)
    )
}

async fn gather_units(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
    qty: u32,
) -> Result<(), Error> {
    let rows = Sql::new(
        "SELECT bucket, available_stock FROM stock_buckets WHERE product_id = ? \
         ORDER BY bucket FOR UPDATE NOWAIT",
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
    let moves = units_to_move(&buckets, i64::from(qty));
    if moves.is_empty() {
        return Ok(());
    }
    // One statement for every move, so the buckets are held for one round trip before COMMIT.
    let cases: String = moves
        .iter()
        .map(|(bucket, delta)| format!(" WHEN {} THEN {}", literal(*bucket), literal(*delta)))
        .collect();
    Sql::new(format!(
        "UPDATE stock_buckets SET available_stock = available_stock + CASE bucket{cases} END, \
         total_stock = total_stock + CASE bucket{cases} END \
         WHERE product_id = ? AND bucket IN ({})",
        list(moves.iter().map(|(bucket, _)| *bucket))
    ))
    .bind(product_id.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The moves (bucket, units added, negative for taken) that gather `qty` units into the fullest
/// bucket, taking from the others in bucket order; none when it has them already. When the
/// buckets hold fewer than `qty` together, it gathers what there is.
fn units_to_move(buckets: &[(u16, i64)], qty: i64) -> Vec<(u16, i64)> {
    let Some((target, mut gathered)) = buckets.iter().copied().max_by_key(|(_, units)| *units)
    else {
        return Vec::new();
    };
    let mut moves = Vec::new();
    for (donor, units) in buckets
        .iter()
        .copied()
        .filter(|(bucket, _)| *bucket != target)
    {
        if gathered >= qty {
            break;
        }
        let moved = units.min(qty - gathered);
        if moved > 0 {
            moves.push((donor, -moved));
            gathered += moved;
        }
    }
    let added: i64 = moves.iter().map(|(_, taken)| -taken).sum();
    if added > 0 {
        moves.push((target, added));
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::units_to_move;

    #[test]
    fn units_are_gathered_into_the_fullest_bucket_from_the_others_in_bucket_order() {
        let buckets = [(0, 1), (1, 3), (2, 2), (3, 2)];
        assert_eq!(units_to_move(&buckets, 6), vec![(0, -1), (2, -2), (1, 3)]);
        assert_eq!(units_to_move(&buckets, 3), Vec::new(), "bucket 1 has 3");
    }

    #[test]
    fn buckets_short_together_give_what_they_have_and_empty_ones_move_nothing() {
        assert_eq!(
            units_to_move(&[(0, 0), (1, 1), (2, 1)], 5),
            vec![(1, -1), (2, 1)]
        );
        assert_eq!(units_to_move(&[(0, 0), (1, 0)], 1), Vec::new());
        assert_eq!(units_to_move(&[], 1), Vec::new());
    }
}
