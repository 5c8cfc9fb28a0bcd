//! The invariants every run ends with: the stock adds up, nothing is oversold, and in the flow
//! every order was paid.

use std::time::{Duration, Instant};

use shared::domain::ids::ProductId;
use shared::store::pool::Pool;
use sqlx::Row;

use crate::scenario::Scenario;

pub async fn wait_until_paid(pool: &Pool, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payment_inbox WHERE state = 'pending'")
                .fetch_one(pool)
                .await
                .map_err(|err| err.to_string())?;
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{pending} payment events still pending after {timeout:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One product's counters in one snapshot: the buckets' sums and the rows they must match.
struct Stock {
    total: i64,
    bucket_total: i64,
    available: i64,
    reserved: i64,
    sold: i64,
    /// The lowest counter of any bucket.
    lowest: i64,
    /// Units of active holds.
    held: i64,
    /// Units of orders not cancelled.
    ordered: i64,
}

impl Stock {
    async fn read(pool: &Pool, product: ProductId) -> Result<Self, String> {
        let row = sqlx::query(
            "SELECT CAST(p.total_stock AS SIGNED) AS total_stock, \
               CAST((SELECT SUM(total_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS bucket_total, \
               CAST((SELECT SUM(available_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS available_stock, \
               CAST((SELECT SUM(reserved_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS reserved_stock, \
               CAST((SELECT SUM(sold_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS sold_stock, \
               CAST((SELECT MIN(LEAST(available_stock, reserved_stock, sold_stock)) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS lowest, \
               CAST((SELECT COALESCE(SUM(qty), 0) FROM holds WHERE product_id = p.id AND status = 'active') AS SIGNED) AS held, \
               CAST((SELECT COALESCE(SUM(qty), 0) FROM orders WHERE product_id = p.id AND status <> 'cancelled') AS SIGNED) AS ordered \
             FROM products p WHERE p.id = ?",
        )
        .bind(product.0)
        .fetch_one(pool)
        .await
        .map_err(|err| err.to_string())?;
        let column = |name: &str| row.try_get::<i64, _>(name).map_err(|err| err.to_string());
        Ok(Self {
            total: column("total_stock")?,
            bucket_total: column("bucket_total")?,
            available: column("available_stock")?,
            reserved: column("reserved_stock")?,
            sold: column("sold_stock")?,
            lowest: column("lowest")?,
            held: column("held")?,
            ordered: column("ordered")?,
        })
    }

    /// Counters add up and none is negative; reserved = units of active holds; sold = units of
    /// live orders.
    fn check(&self, product: ProductId) -> Result<(), String> {
        let Self {
            total,
            available,
            reserved,
            sold,
            ..
        } = *self;
        if total != available + reserved + sold || total != self.bucket_total || self.lowest < 0 {
            return Err(format!(
                "product {product}: {available} + {reserved} + {sold} != {total}, or a bucket below zero"
            ));
        }
        if reserved != self.held || sold != self.ordered {
            return Err(format!(
                "product {product}: reserved {reserved} vs holds {}, sold {sold} vs orders {}",
                self.held, self.ordered
            ));
        }
        Ok(())
    }
}

/// Every product: counters add up and none is negative; stored reserved = units of active holds;
/// sold = units of live orders; for the flow, every order paid.
pub async fn audit(
    pool: &Pool,
    products: &[ProductId],
    scenario: Scenario,
) -> Result<String, String> {
    let mut held_total = 0;
    for product in products {
        let stock = Stock::read(pool, *product).await?;
        stock.check(*product)?;
        held_total += stock.reserved + stock.sold;
    }
    if scenario == Scenario::Flow {
        let unpaid: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE status <> 'paid'")
            .fetch_one(pool)
            .await
            .map_err(|err| err.to_string())?;
        if unpaid > 0 {
            return Err(format!("{unpaid} orders not paid"));
        }
    }
    Ok(format!(
        "ok ({held_total} units held or sold, none oversold)"
    ))
}

/// A product sold out by holds alone: the audit above, and exactly `units` units reserved in
/// active holds, none sold, none available.
pub async fn audit_sold_out(pool: &Pool, product: ProductId, units: u32) -> Result<String, String> {
    let stock = Stock::read(pool, product).await?;
    stock.check(product)?;
    let units = i64::from(units);
    if (stock.held, stock.sold, stock.available) != (units, 0, 0) {
        return Err(format!(
            "product {product}: {} units in active holds, {} sold, {} available; expected exactly {units} held, none sold or available",
            stock.held, stock.sold, stock.available
        ));
    }
    Ok(format!(
        "ok (exactly {units} units held, none available, none negative)"
    ))
}
