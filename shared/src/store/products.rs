//! Products: creating one with its stock split over buckets, and reading its stock as of now.

use sqlx::{MySql, MySqlPool, QueryBuilder, Row, Transaction};

use super::db::finish;
use crate::domain::ids::ProductId;
use crate::domain::model::Product;
use crate::domain::money::Cents;
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
}

/// The stock of each bucket: as even as possible, the first ones taking the remainder.
fn split_stock(stock: u32, buckets: u16) -> Vec<u32> {
    let buckets = u32::from(buckets.max(1));
    (0..buckets)
        .map(|i| stock / buckets + u32::from(i < stock % buckets))
        .collect()
}

pub async fn create_product(pool: &MySqlPool, new: &NewProduct) -> Result<Product, Error> {
    let mut tx = pool.begin().await?;
    let created = insert_product(&mut tx, new).await;
    finish(tx, created).await
}

async fn insert_product(
    tx: &mut Transaction<'static, MySql>,
    new: &NewProduct,
) -> Result<Product, Error> {
    let inserted = sqlx::query(
        "INSERT INTO products (name, price_cents, total_stock, stock_buckets, created_at) \
         VALUES (?, ?, ?, ?, UTC_TIMESTAMP(3))",
    )
    .bind(&new.name)
    .bind(new.price.0)
    .bind(new.stock)
    .bind(new.buckets)
    .execute(&mut **tx)
    .await?;
    let id = ProductId(inserted.last_insert_id());
    insert_buckets(tx, id, new.stock, new.buckets).await?;
    Ok(Product {
        id,
        name: new.name.clone(),
        price: new.price,
        total_stock: i64::from(new.stock),
        available_stock: i64::from(new.stock),
        reserved_stock: 0,
        sold_stock: 0,
        stock_buckets: new.buckets,
    })
}

async fn insert_buckets(
    tx: &mut Transaction<'_, MySql>,
    product_id: ProductId,
    stock: u32,
    buckets: u16,
) -> Result<(), Error> {
    let mut insert = QueryBuilder::<MySql>::new(
        "INSERT INTO stock_buckets (product_id, bucket, total_stock, available_stock) ",
    );
    insert.push_values(
        split_stock(stock, buckets).into_iter().enumerate(),
        |mut row, (bucket, units)| {
            row.push_bind(product_id.0)
                .push_bind(bucket as u16)
                .push_bind(units)
                .push_bind(units);
        },
    );
    insert.build().execute(&mut **tx).await?;
    Ok(())
}

/// Creates product 1 (100 units at 50.00) when there is no product at all. Instances starting
/// together race on the primary key; the losers see a duplicate and do nothing.
pub async fn seed_demo_product(pool: &MySqlPool) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let seeded = insert_demo_product(&mut tx).await;
    finish(tx, seeded).await
}

async fn insert_demo_product(tx: &mut Transaction<'static, MySql>) -> Result<bool, Error> {
    let seeded = sqlx::query(
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

/// One consistent statement: the bucket counters, the lapsed holds they still count as reserved
/// and the lapsed unpaid orders they still count as sold, from one snapshot at one instant.
pub async fn get_product(pool: &MySqlPool, id: ProductId) -> Result<Product, Error> {
    let row = sqlx::query(
        "SELECT p.id, p.name, p.price_cents, p.total_stock, p.stock_buckets, \
                CAST((SELECT SUM(b.available_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS available, \
                CAST((SELECT SUM(b.reserved_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS reserved, \
                CAST((SELECT SUM(b.sold_stock) FROM stock_buckets b WHERE b.product_id = p.id) AS SIGNED) AS sold, \
                CAST((SELECT COALESCE(SUM(h.qty), 0) FROM holds h \
                      WHERE h.product_id = p.id AND h.status = 'active' \
                        AND h.expires_at <= UTC_TIMESTAMP(3)) AS SIGNED) AS lapsed_holds, \
                CAST((SELECT COALESCE(SUM(o.qty), 0) FROM orders o \
                      WHERE o.product_id = p.id AND o.status = 'pending_payment' \
                        AND o.cancel_at <= UTC_TIMESTAMP(3)) AS SIGNED) AS lapsed_orders \
         FROM products p WHERE p.id = ?",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?
    .ok_or(Error::ProductNotFound(id))?;
    let sum = |column: &str| row.try_get::<i64, _>(column);
    let (lapsed_holds, lapsed_orders) = (sum("lapsed_holds")?, sum("lapsed_orders")?);
    Ok(Product {
        id: ProductId(row.try_get("id")?),
        name: row.try_get("name")?,
        price: Cents(row.try_get("price_cents")?),
        total_stock: i64::from(row.try_get::<i32, _>("total_stock")?),
        available_stock: sum("available")? + lapsed_holds + lapsed_orders,
        reserved_stock: sum("reserved")? - lapsed_holds,
        sold_stock: sum("sold")? - lapsed_orders,
        stock_buckets: row.try_get("stock_buckets")?,
    })
}
