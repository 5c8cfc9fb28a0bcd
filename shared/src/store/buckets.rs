//! Moving units between a stock bucket's counters: the last lock of every transaction.

use sqlx::{MySql, Transaction};

use super::sql::Sql;
use crate::domain::ids::ProductId;
use crate::error::Error;

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
    let moved = Sql::new(format!(
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

/// Moves settled units back to available: one UPDATE per bucket, in bucket order (the lock
/// order among a product's buckets), as the last statements of the transaction, so no bucket
/// is locked while the rest of the batch is written, and two settlers never deadlock.
pub(crate) async fn return_units(
    tx: &mut Transaction<'_, MySql>,
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
