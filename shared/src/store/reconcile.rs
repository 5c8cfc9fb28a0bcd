//! Reconciliation: recomputes every stock bucket's counters from the rows they summarise (a
//! bucket's `reserved_stock` is the quantity of its `active` holds, `sold_stock` that of its
//! orders not cancelled, `available_stock` the rest of its total) and reports any difference as
//! drift. The transactions keep the counters right by construction; drift means a bug or a manual
//! edit, so it is logged as an error and counted, and repaired only when an operator asks.
//!
//! The check takes no lock: one SELECT reads the counters and the sums from one snapshot (InnoDB
//! gives each statement a consistent read view), and every transaction changes a hold or order
//! and its bucket's counters together, so a consistent snapshot never shows drift that is not
//! there. A repair locks the product's buckets (in bucket order, as every transaction takes them
//! last) and recomputes under that lock before it writes. It refuses a product whose total differs
//! from the sum of its buckets' totals: a bucket's counters are computed from its total, and
//! nothing says which of the two totals is right.

use serde::Serialize;
use sqlx::Row;

use super::pool::Pool;
use super::sql::Sql;
use crate::domain::ids::ProductId;
use crate::error::Error;
use crate::metrics;

/// One bucket's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub available_stock: i64,
    pub reserved_stock: i64,
    pub sold_stock: i64,
}

/// A bucket whose stored counters differ from what its holds and orders say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketDrift {
    pub product_id: u64,
    pub bucket: u16,
    pub total_stock: i64,
    pub stored: Counters,
    pub expected: Counters,
    /// Set the counters to `expected` (only when repair was asked for and possible).
    pub repaired: bool,
}

impl BucketDrift {
    /// More units are held and sold than the bucket has in total: no counters can say that, so
    /// only a person can decide what to do.
    pub fn repairable(&self) -> bool {
        self.expected.available_stock >= 0
    }
}

/// A product whose total differs from the sum of its buckets' totals (reported, never repaired:
/// nothing says which of the two is right).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotalDrift {
    pub product_id: u64,
    pub product_total: i64,
    pub buckets_total: i64,
    /// Repair was asked for and refused: none of this product's buckets was written, drifted
    /// or not.
    pub repair_refused: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReconcileReport {
    pub buckets_checked: u64,
    pub drifted: Vec<BucketDrift>,
    pub totals_drifted: Vec<TotalDrift>,
}

impl ReconcileReport {
    /// Drift that is still there after this run.
    pub fn unresolved(&self) -> usize {
        self.drifted.iter().filter(|d| !d.repaired).count() + self.totals_drifted.len()
    }
}

/// Every bucket (of one product, or all) with its stored counters and the sums of its holds and
/// orders, read in one statement, so from one snapshot. Each table is summed once, grouped by
/// bucket (live orders through an index that carries every column read: migration 0004), not once
/// per bucket: live orders are every order ever paid.
async fn buckets_with_sums<'c, E>(
    executor: E,
    product: Option<ProductId>,
) -> Result<Vec<sqlx::mysql::MySqlRow>, Error>
where
    E: sqlx::Executor<'c, Database = sqlx::MySql>,
{
    let (and_product, where_product) = match product {
        Some(_) => ("AND product_id = ?", "WHERE b.product_id = ?"),
        None => ("", ""),
    };
    let sql = format!(
        "SELECT b.product_id, b.bucket, CAST(b.total_stock AS SIGNED) AS total_stock,
                CAST(b.available_stock AS SIGNED) AS available_stock,
                CAST(b.reserved_stock AS SIGNED) AS reserved_stock,
                CAST(b.sold_stock AS SIGNED) AS sold_stock,
                CAST(COALESCE(h.held, 0) AS SIGNED) AS held,
                CAST(COALESCE(o.ordered, 0) AS SIGNED) AS ordered,
                CAST(p.total_stock AS SIGNED) AS product_total,
                CAST(t.buckets_total AS SIGNED) AS buckets_total
           FROM stock_buckets b
           JOIN products p ON p.id = b.product_id
           JOIN (SELECT product_id, SUM(total_stock) AS buckets_total FROM stock_buckets
                  WHERE 1 = 1 {and_product} GROUP BY product_id) t
             ON t.product_id = b.product_id
           LEFT JOIN (SELECT product_id, bucket, SUM(qty) AS held FROM holds
                       WHERE status = 'active' {and_product} GROUP BY product_id, bucket) h
             ON h.product_id = b.product_id AND h.bucket = b.bucket
           LEFT JOIN (SELECT product_id, bucket, SUM(qty) AS ordered FROM orders
                       WHERE status IN ('pending_payment', 'paid') {and_product}
                       GROUP BY product_id, bucket) o
             ON o.product_id = b.product_id AND o.bucket = b.bucket
          {where_product}
          ORDER BY b.product_id, b.bucket"
    );
    let mut query = Sql::new(sql);
    if let Some(id) = product {
        // The three derived tables' filters and the outer one.
        for _ in 0..4 {
            query = query.bind(id.0);
        }
    }
    Ok(query.fetch_all(executor).await?)
}

/// Checks every product (or one), reporting drift as an error log line and the `StockDrift`
/// metric; with `repair`, sets each drifted bucket's counters to what its rows say.
pub async fn reconcile(
    pool: &Pool,
    product: Option<ProductId>,
    repair: bool,
) -> Result<ReconcileReport, Error> {
    let mut report = check(pool, product).await?;
    if repair {
        let products: std::collections::BTreeSet<u64> = report
            .drifted
            .iter()
            .map(|d| d.product_id)
            .filter(|id| report.totals_drifted.iter().all(|t| t.product_id != *id))
            .collect();
        let mut repaired = Vec::new();
        for product_id in products {
            match repair_product(pool, ProductId(product_id)).await? {
                Repair::Written(buckets) => repaired.extend(buckets),
                // The totals parted after the check (a hand edit): found under the lock.
                Repair::Refused(total) => report.totals_drifted.push(total),
            }
        }
        for total in &mut report.totals_drifted {
            total.repair_refused = true;
        }
        for drift in &mut report.drifted {
            drift.repaired = repaired
                .iter()
                .any(|r| r.product_id == drift.product_id && r.bucket == drift.bucket);
        }
    }
    for drift in &report.drifted {
        tracing::error!(
            product_id = drift.product_id,
            bucket = drift.bucket,
            stored = ?drift.stored,
            expected = ?drift.expected,
            repaired = drift.repaired,
            repairable = drift.repairable(),
            "stock counters drifted from the holds and orders they count"
        );
    }
    for drift in &report.totals_drifted {
        tracing::error!(
            product_id = drift.product_id,
            product_total = drift.product_total,
            buckets_total = drift.buckets_total,
            repair_refused = drift.repair_refused,
            "product total differs from the sum of its stock buckets"
        );
    }
    // What is still wrong after this run: a repair clears the alarm it answers.
    metrics::count(metrics::STOCK_DRIFT, report.unresolved() as u64);
    if repair {
        let repaired = report.drifted.iter().filter(|d| d.repaired).count();
        metrics::count(metrics::STOCK_DRIFT_REPAIRED, repaired as u64);
    }
    Ok(report)
}

async fn check(pool: &Pool, product: Option<ProductId>) -> Result<ReconcileReport, Error> {
    let rows = buckets_with_sums(pool, product).await?;
    let mut report = ReconcileReport::default();
    for row in &rows {
        report.buckets_checked += 1;
        let product_id: u64 = row.try_get("product_id")?;
        let product_total: i64 = row.try_get("product_total")?;
        let buckets_total: i64 = row.try_get("buckets_total")?;
        // Rows come ordered by product: its total is checked on its first bucket's row.
        let first_of_product = report
            .totals_drifted
            .last()
            .is_none_or(|d| d.product_id != product_id);
        if product_total != buckets_total && first_of_product {
            report.totals_drifted.push(TotalDrift {
                product_id,
                product_total,
                buckets_total,
                repair_refused: false,
            });
        }
        if let Some(drift) = bucket_drift(row)? {
            report.drifted.push(drift);
        }
    }
    Ok(report)
}

fn bucket_drift(row: &sqlx::mysql::MySqlRow) -> Result<Option<BucketDrift>, Error> {
    let total_stock: i64 = row.try_get("total_stock")?;
    let stored = Counters {
        available_stock: row.try_get("available_stock")?,
        reserved_stock: row.try_get("reserved_stock")?,
        sold_stock: row.try_get("sold_stock")?,
    };
    let held: i64 = row.try_get("held")?;
    let ordered: i64 = row.try_get("ordered")?;
    let expected = Counters {
        available_stock: total_stock - held - ordered,
        reserved_stock: held,
        sold_stock: ordered,
    };
    if stored == expected {
        return Ok(None);
    }
    Ok(Some(BucketDrift {
        product_id: row.try_get("product_id")?,
        bucket: row.try_get("bucket")?,
        total_stock,
        stored,
        expected,
        repaired: false,
    }))
}

enum Repair {
    /// The buckets set to what their rows say.
    Written(Vec<BucketDrift>),
    /// Nothing written: the product's total and its buckets' disagree.
    Refused(TotalDrift),
}

/// Repairs one product's drifted buckets under their locks, unless its totals disagree there.
async fn repair_product(pool: &Pool, product_id: ProductId) -> Result<Repair, Error> {
    crate::store::db::retry_conflicts("reconcile_repair", || async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let repaired = repair_locked(&mut tx, product_id).await;
        crate::store::db::finish(tx, repaired).await
    })
    .await
}

async fn repair_locked(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    product_id: ProductId,
) -> Result<Repair, Error> {
    Sql::new("SELECT bucket FROM stock_buckets WHERE product_id = ? ORDER BY bucket FOR UPDATE")
        .bind(product_id.0)
        .fetch_all(&mut **tx)
        .await?;
    let rows = buckets_with_sums(&mut **tx, Some(product_id)).await?;
    if let Some(row) = rows.first() {
        let product_total: i64 = row.try_get("product_total")?;
        let buckets_total: i64 = row.try_get("buckets_total")?;
        if product_total != buckets_total {
            return Ok(Repair::Refused(TotalDrift {
                product_id: product_id.0,
                product_total,
                buckets_total,
                repair_refused: true,
            }));
        }
    }
    let mut repaired = Vec::new();
    for row in &rows {
        let Some(drift) = bucket_drift(row)? else {
            continue;
        };
        if !drift.repairable() {
            continue;
        }
        Sql::new(
            "UPDATE stock_buckets SET available_stock = ?, reserved_stock = ?, sold_stock = ? \
                 WHERE product_id = ? AND bucket = ?",
        )
        .bind(drift.expected.available_stock)
        .bind(drift.expected.reserved_stock)
        .bind(drift.expected.sold_stock)
        .bind(drift.product_id)
        .bind(drift.bucket)
        .execute(&mut **tx)
        .await?;
        tracing::warn!(
            product_id = drift.product_id,
            bucket = drift.bucket,
            from = ?drift.stored,
            to = ?drift.expected,
            "stock counters repaired"
        );
        repaired.push(drift);
    }
    Ok(Repair::Written(repaired))
}
