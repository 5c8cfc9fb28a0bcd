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

/// Every product: counters add up and none is negative; stored reserved = units of active holds;
/// sold = units of live orders; for the flow, every order paid.
pub async fn audit(
    pool: &Pool,
    products: &[ProductId],
    scenario: Scenario,
) -> Result<String, String> {
    let mut held_total = 0;
    for product in products {
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
        let (total, available, reserved, sold) = (
            column("total_stock")?,
            column("available_stock")?,
            column("reserved_stock")?,
            column("sold_stock")?,
        );
        if total != available + reserved + sold
            || total != column("bucket_total")?
            || column("lowest")? < 0
        {
            return Err(format!(
                "product {product}: {available} + {reserved} + {sold} != {total}, or a bucket below zero"
            ));
        }
        if reserved != column("held")? || sold != column("ordered")? {
            return Err(format!(
                "product {product}: reserved {reserved} vs holds {}, sold {sold} vs orders {}",
                column("held")?,
                column("ordered")?
            ));
        }
        held_total += reserved + sold;
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
