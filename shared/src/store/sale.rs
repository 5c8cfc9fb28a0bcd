//! A sale's rules, checked by the reservation's own transaction against the database clock: the
//! product's sale window and the buyer's limit (under the buyer's row lock).

use chrono::NaiveDateTime;
use sqlx::{MySql, Row, Transaction};

use super::products::sale_from_row;
use crate::domain::ids::{BuyerId, ProductId};
use crate::error::Error;

/// The product's bucket count and sale terms and the database clock, in one round trip outside
/// any lock; then the sale window, and the buyer's limit under the buyer's row lock: the first
/// lock of a reservation (before the hold and the stock bucket rows), taken only for a product
/// with a limit, so a hold on any other product takes no lock more.
pub(super) async fn open_sale(
    tx: &mut Transaction<'static, MySql>,
    product_id: ProductId,
    buyer: Option<&BuyerId>,
    qty: u32,
) -> Result<(u16, NaiveDateTime), Error> {
    let row = sqlx::query(
        "SELECT stock_buckets, max_per_buyer, sale_starts_at, sale_ends_at, UTC_TIMESTAMP(3) AS db_now \
         FROM products WHERE id = ?",
    )
    .bind(product_id.0)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::ProductNotFound(product_id))?;
    let now: NaiveDateTime = row.try_get("db_now")?;
    let sale = sale_from_row(&row)?;
    sale.check_open(now)?;
    if let Some(limit) = sale.max_per_buyer {
        check_buyer_limit(tx, product_id, buyer, qty, limit).await?;
    }
    Ok((row.try_get("stock_buckets")?, now))
}

/// Refuses a hold that would take the buyer past `limit` units of the product: their active
/// holds and their orders not cancelled (lapsed ones do not count), counted under the buyer's row
/// lock, which every reservation of theirs for the product takes first. An anonymous buyer
/// cannot be counted, so a product with a limit refuses anonymous holds.
async fn check_buyer_limit(
    tx: &mut Transaction<'static, MySql>,
    product_id: ProductId,
    buyer: Option<&BuyerId>,
    qty: u32,
    limit: u32,
) -> Result<(), Error> {
    let Some(buyer) = buyer else {
        return Err(Error::BuyerLimitReached { limit: 0, held: 0 });
    };
    sqlx::query(
        "INSERT INTO buyer_limits (product_id, buyer_id) VALUES (?, ?) \
         ON DUPLICATE KEY UPDATE buyer_id = buyer_id",
    )
    .bind(product_id.0)
    .bind(buyer.as_str())
    .execute(&mut **tx)
    .await?;
    let held: i64 = sqlx::query_scalar(
        "SELECT CAST( \
           COALESCE((SELECT SUM(qty) FROM holds WHERE buyer_id = ? AND product_id = ? \
                     AND status = 'active' AND expires_at > UTC_TIMESTAMP(3)), 0) + \
           COALESCE((SELECT SUM(qty) FROM orders WHERE buyer_id = ? AND product_id = ? \
                     AND (status = 'paid' OR (status = 'pending_payment' AND cancel_at > UTC_TIMESTAMP(3)))), 0) \
         AS SIGNED)",
    )
    .bind(buyer.as_str())
    .bind(product_id.0)
    .bind(buyer.as_str())
    .bind(product_id.0)
    .fetch_one(&mut **tx)
    .await?;
    if held + i64::from(qty) > i64::from(limit) {
        return Err(Error::BuyerLimitReached { limit, held });
    }
    Ok(())
}
