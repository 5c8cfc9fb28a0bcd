//! Products: creating one with its stock split over buckets, and reading its stock as of now.

use chrono::NaiveDateTime;
use sqlx::{MySql, Row, Transaction};

use super::db::finish;
use super::pool::Pool;
use super::sql::{Sql, literal};
use crate::domain::ids::ProductId;
use crate::domain::model::{Product, ProductRead, SaleTerms};
use crate::domain::money::Cents;
use crate::domain::waiting_room::{WaitingRoom, WaitingRoomState};
use crate::error::{Error, is_duplicate_key};

/// The most rows a product's stock may be split over.
pub const MAX_STOCK_BUCKETS: u16 = 64;

pub struct NewProduct {
    pub name: String,
    pub price: Cents,
    pub stock: u32,
    /// Rows the stock is spread over (1..=MAX_STOCK_BUCKETS): more buckets, less lock contention
    /// on a hot product.
    pub buckets: u16,
    pub sale: SaleTerms,
    pub waiting_room: Option<WaitingRoom>,
}

/// The stock of each bucket: as even as possible, the first ones taking the remainder.
fn split_stock(stock: u32, buckets: u16) -> Vec<u32> {
    let buckets = u32::from(buckets.max(1));
    (0..buckets)
        .map(|i| stock / buckets + u32::from(i < stock % buckets))
        .collect()
}

/// Creates the product, and reads it back (the figures as of their first instant).
pub async fn create_product(pool: &Pool, new: &NewProduct) -> Result<Product, Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let created = insert_product(&mut tx, new).await;
    let id = finish(tx, created).await?;
    pool.product_reads().forget_terms(id);
    get_product(pool, id).await
}

async fn insert_product(
    tx: &mut Transaction<'_, MySql>,
    new: &NewProduct,
) -> Result<ProductId, Error> {
    let inserted = Sql::new(
        "INSERT INTO products (name, price_cents, total_stock, stock_buckets, max_per_buyer, \
                               sale_starts_at, sale_ends_at, waiting_room, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, UTC_TIMESTAMP(3))",
    )
    .bind(&new.name)
    .bind(new.price.0)
    .bind(new.stock)
    .bind(new.buckets)
    .bind(new.sale.max_per_buyer)
    .bind(new.sale.sale_starts_at)
    .bind(new.sale.sale_ends_at)
    .bind(opening_room(new.waiting_room, new.sale.sale_starts_at)?.map(|room| room.to_json()))
    .execute(&mut **tx)
    .await?;
    let id = ProductId(inserted.last_insert_id());
    insert_buckets(tx, id, new.stock, new.buckets).await?;
    Ok(id)
}

async fn insert_buckets(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
    stock: u32,
    buckets: u16,
) -> Result<(), Error> {
    let rows: Vec<String> = split_stock(stock, buckets)
        .into_iter()
        .enumerate()
        .map(|(bucket, units)| {
            format!(
                "({}, {}, {}, {})",
                literal(product_id.0),
                literal(bucket as u16),
                literal(units),
                literal(units)
            )
        })
        .collect();
    Sql::new(format!(
        "INSERT INTO stock_buckets (product_id, bucket, total_stock, available_stock) VALUES {}",
        rows.join(", ")
    ))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates product 1 (100 units at 50.00) when there is no product at all. Instances starting
/// together race on the primary key; the losers see a duplicate and do nothing.
pub async fn seed_demo_product(pool: &Pool) -> Result<bool, Error> {
    let mut conn = pool.acquire().await?;
    let mut tx = conn.begin().await?;
    let seeded = insert_demo_product(&mut tx).await;
    finish(tx, seeded).await
}

async fn insert_demo_product(tx: &mut Transaction<'_, MySql>) -> Result<bool, Error> {
    let seeded = Sql::new(
        "INSERT INTO products (id, name, price_cents, total_stock, stock_buckets, created_at) \
         SELECT 1, 'Demo product', 5000, 100, 1, UTC_TIMESTAMP(3) FROM DUAL \
         WHERE NOT EXISTS (SELECT 1 FROM products)",
    )
    .execute(&mut **tx)
    .await;
    match seeded {
        Ok(done) if done.rows_affected() == 1 => {
            insert_buckets(tx, ProductId(1), 100, 1).await?;
            Ok(true)
        }
        Ok(_) => Ok(false),
        Err(err) if is_duplicate_key(&err) => Ok(false),
        Err(err) => Err(err.into()),
    }
}

/// The product as of now: see [`read_product`].
pub async fn get_product(pool: &Pool, id: ProductId) -> Result<Product, Error> {
    Ok(read_product(pool, id).await?.product)
}

/// One consistent statement: the bucket counters, the lapsed holds they still count as reserved
/// and the lapsed unpaid orders they still count as sold, from one snapshot at one instant, with
/// that instant and the next lapse.
pub async fn read_product(pool: &Pool, id: ProductId) -> Result<ProductRead, Error> {
    let row = Sql::new(
        "SELECT p.id, p.name, p.price_cents, p.total_stock, p.stock_buckets, \
                p.max_per_buyer, p.sale_starts_at, p.sale_ends_at, p.waiting_room, \
                UTC_TIMESTAMP(3) AS as_of, \
                CAST((SELECT SUM(b.available_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS available, \
                CAST((SELECT SUM(b.reserved_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS reserved, \
                CAST((SELECT SUM(b.sold_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS sold, \
                CAST((SELECT COALESCE(SUM(h.qty), 0) FROM holds h \
                      WHERE h.product_id = p.id AND h.status = 'active' \
                        AND h.expires_at <= UTC_TIMESTAMP(3)) AS SIGNED) AS lapsed_holds, \
                CAST((SELECT COALESCE(SUM(o.qty), 0) FROM orders o \
                      WHERE o.product_id = p.id AND o.status = 'pending_payment' \
                        AND o.cancel_at <= UTC_TIMESTAMP(3)) AS SIGNED) AS lapsed_orders, \
                (SELECT COUNT(*) FROM orders o \
                  WHERE o.product_id = p.id AND o.status = 'pending_payment' \
                    AND o.cancel_at > UTC_TIMESTAMP(3)) AS pending_orders, \
                (SELECT MIN(h.expires_at) FROM holds h \
                  WHERE h.product_id = p.id AND h.status = 'active' \
                    AND h.expires_at > UTC_TIMESTAMP(3)) AS next_hold_lapse, \
                (SELECT MIN(o.cancel_at) FROM orders o \
                  WHERE o.product_id = p.id AND o.status = 'pending_payment' \
                    AND o.cancel_at > UTC_TIMESTAMP(3)) AS next_order_lapse \
         FROM products p WHERE p.id = ?",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::ProductNotFound(id))?;
    let sum = |column: &str| row.try_get::<i64, _>(column);
    let (lapsed_holds, lapsed_orders) = (sum("lapsed_holds")?, sum("lapsed_orders")?);
    let next_hold_lapse: Option<NaiveDateTime> = row.try_get("next_hold_lapse")?;
    let next_order_lapse: Option<NaiveDateTime> = row.try_get("next_order_lapse")?;
    Ok(ProductRead {
        product: Product {
            id: ProductId(row.try_get("id")?),
            name: row.try_get("name")?,
            price: Cents(row.try_get("price_cents")?),
            total_stock: i64::from(row.try_get::<i32, _>("total_stock")?),
            available_stock: sum("available")? + lapsed_holds + lapsed_orders,
            reserved_stock: sum("reserved")? - lapsed_holds,
            sold_stock: sum("sold")? - lapsed_orders,
            stock_buckets: row.try_get("stock_buckets")?,
            sale: sale_from_row(&row)?,
            waiting_room: waiting_room_from_row(&row)?,
            as_of: row.try_get("as_of")?,
        },
        pending_orders: row.try_get("pending_orders")?,
        next_lapse_at: next_hold_lapse.into_iter().chain(next_order_lapse).min(),
    })
}

pub(super) fn sale_from_row(row: &sqlx::mysql::MySqlRow) -> Result<SaleTerms, Error> {
    Ok(SaleTerms {
        max_per_buyer: row.try_get("max_per_buyer")?,
        sale_starts_at: row.try_get("sale_starts_at")?,
        sale_ends_at: row.try_get("sale_ends_at")?,
    })
}

/// Whether the product has a waiting room (`false` for one that does not exist).
pub async fn has_waiting_room(pool: &Pool, id: ProductId) -> Result<bool, Error> {
    let row = Sql::new("SELECT waiting_room IS NOT NULL AS has FROM products WHERE id = ?")
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    Ok(match row {
        Some(row) => row.try_get::<i64, _>("has")? == 1,
        None => false,
    })
}

/// The product's waiting room, from a row with its `waiting_room` column.
pub(super) fn waiting_room_from_row(
    row: &sqlx::mysql::MySqlRow,
) -> Result<Option<WaitingRoomState>, Error> {
    let Some(text) = row.try_get::<Option<String>, _>("waiting_room")? else {
        return Ok(None);
    };
    WaitingRoomState::from_json(&text)
        .map(Some)
        .ok_or_else(|| Error::Internal(format!("a waiting room this code cannot read: {text}")))
}

/// A new waiting room's state, its terms checked against the sale's start.
fn opening_room(
    terms: Option<WaitingRoom>,
    sale_starts_at: Option<NaiveDateTime>,
) -> Result<Option<WaitingRoomState>, Error> {
    let Some(terms) = terms else { return Ok(None) };
    terms.validate(sale_starts_at)?;
    Ok(sale_starts_at.map(|starts| WaitingRoomState::opening(terms, starts)))
}

/// What `PATCH /api/admin/products/{id}` changes: each field given is set (`Some(None)` clears a
/// limit or a window's end), the others are left as they are.
#[derive(Debug, Default, Clone)]
pub struct ProductChange {
    pub max_per_buyer: Option<Option<u32>>,
    pub sale_starts_at: Option<Option<chrono::NaiveDateTime>>,
    pub sale_ends_at: Option<Option<chrono::NaiveDateTime>>,
    pub total_stock: Option<u32>,
    /// `Some(None)` removes the waiting room.
    pub waiting_room: Option<Option<WaitingRoom>>,
}

/// Changes a product's sale terms and total stock. Raising the total adds available units (spread
/// over the buckets); lowering it takes available units away, and is refused with
/// `insufficient_stock`, changing nothing, when fewer are available than it would take (lapsed
/// holds and orders are settled first, so only what is really held or sold stands in the way).
/// The product row is locked first (only this takes it), then the buckets in bucket order.
pub async fn change_product(
    pool: &Pool,
    id: ProductId,
    change: &ProductChange,
) -> Result<crate::domain::events::Committed<Product>, Error> {
    let settled = if change.total_stock.is_some() {
        super::settle::settle_lapsed(pool, id).await?.events
    } else {
        Vec::new()
    };
    super::db::retry_conflicts("change_product", || async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let changed = apply_change(&mut tx, id, change).await;
        finish(tx, changed).await
    })
    .await?;
    pool.product_reads().forget_terms(id);
    Ok(crate::domain::events::Committed::new(
        get_product(pool, id).await?,
        settled,
    ))
}

async fn apply_change(
    tx: &mut Transaction<'_, MySql>,
    id: ProductId,
    change: &ProductChange,
) -> Result<(), Error> {
    let row = Sql::new(
        "SELECT total_stock, max_per_buyer, sale_starts_at, sale_ends_at, waiting_room, \
                UTC_TIMESTAMP(3) AS db_now \
         FROM products WHERE id = ? FOR UPDATE",
    )
    .bind(id.0)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::ProductNotFound(id))?;
    let current = sale_from_row(&row)?;
    let sale = SaleTerms {
        max_per_buyer: change.max_per_buyer.unwrap_or(current.max_per_buyer),
        sale_starts_at: change.sale_starts_at.unwrap_or(current.sale_starts_at),
        sale_ends_at: change.sale_ends_at.unwrap_or(current.sale_ends_at),
    };
    sale.validate()?;
    let room = changed_room(
        waiting_room_from_row(&row)?,
        &current,
        &sale,
        change.waiting_room,
        row.try_get("db_now")?,
    )?;
    let total: i64 = i64::from(row.try_get::<i32, _>("total_stock")?);
    let new_total = change.total_stock.map_or(total, i64::from);
    if new_total != total {
        change_stock(tx, id, new_total - total).await?;
    }
    Sql::new(
        "UPDATE products SET total_stock = ?, max_per_buyer = ?, sale_starts_at = ?, sale_ends_at = ?, \
                             waiting_room = ? \
         WHERE id = ?",
    )
    .bind(new_total)
    .bind(sale.max_per_buyer)
    .bind(sale.sale_starts_at)
    .bind(sale.sale_ends_at)
    .bind(room.map(|room| room.to_json()))
    .bind(id.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The waiting room once a change is applied at `now`. A new rate applies from the next
/// admission tick (no one admitted is un-admitted); a new start of the sale starts the schedule
/// again from it, at the rate in force.
fn changed_room(
    current: Option<WaitingRoomState>,
    current_sale: &SaleTerms,
    sale: &SaleTerms,
    change: Option<Option<WaitingRoom>>,
    now: NaiveDateTime,
) -> Result<Option<WaitingRoomState>, Error> {
    let terms = match change {
        Some(terms) => terms,
        None => current.as_ref().map(WaitingRoomState::terms),
    };
    let Some(terms) = terms else { return Ok(None) };
    terms.validate(sale.sale_starts_at)?;
    match current {
        Some(room) if sale.sale_starts_at == current_sale.sale_starts_at => {
            Ok(Some(room.changed(terms, now)))
        }
        _ => opening_room(Some(terms), sale.sale_starts_at),
    }
}

/// Adds (`delta` > 0) or takes away available units, moving each bucket's total with them.
async fn change_stock(
    tx: &mut Transaction<'_, MySql>,
    id: ProductId,
    delta: i64,
) -> Result<(), Error> {
    let buckets = Sql::new(
        "SELECT bucket, available_stock FROM stock_buckets WHERE product_id = ? ORDER BY bucket FOR UPDATE",
    )
    .bind(id.0)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|row| Ok((row.try_get::<u16, _>(0)?, row.try_get::<i32, _>(1)?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()?;
    let available: i64 = buckets.iter().map(|(_, units)| i64::from(*units)).sum();
    if delta < 0 && available < -delta {
        return Err(Error::InsufficientStock {
            requested: u32::try_from(-delta).unwrap_or(u32::MAX),
            available,
        });
    }
    let mut left = delta.unsigned_abs();
    let shares: Vec<(u16, i64)> = if delta > 0 {
        let count = u16::try_from(buckets.len()).unwrap_or(1);
        let split = split_stock(u32::try_from(left).unwrap_or(u32::MAX), count);
        buckets
            .iter()
            .zip(split)
            .map(|((bucket, _), units)| (*bucket, i64::from(units)))
            .collect()
    } else {
        buckets
            .iter()
            .map(|(bucket, units)| {
                let taken = left.min(u64::try_from(*units).unwrap_or(0));
                left -= taken;
                (*bucket, -(taken as i64))
            })
            .collect()
    };
    for (bucket, units) in shares.into_iter().filter(|(_, units)| *units != 0) {
        Sql::new(
            "UPDATE stock_buckets SET available_stock = available_stock + ?, total_stock = total_stock + ? \
             WHERE product_id = ? AND bucket = ?",
        )
        .bind(units)
        .bind(units)
        .bind(id.0)
        .bind(bucket)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
