//! The baselines: a hold as raw SQL through the same driver (sqlx), the same pool settings and
//! size as the service's, at the same concurrency. What the service is measured against. The
//! row-lock design comes in both of a client's [`Protocol`]s, the same statements in each, so the
//! comparison is with whichever costs the database less.

use shared::domain::ids::{HoldId, ProductId};
use shared::store::pool::Pool;
use shared::store::sql::Sql;
use sqlx::{Executor, Row};

/// The row-lock design's one product, on its own table.
pub const ROWLOCK_PRODUCT: ProductId = ProductId(1);

/// The row-lock design's tables, created in the run's fresh database beside the service's: a
/// product row with its counters (nothing below zero) and holds with the one index a design
/// needs to expire them. No more than that, so it is the strongest form of the design.
pub async fn create_rowlock_tables(pool: &Pool, stock: u32) -> Result<(), String> {
    let statements = [
        "CREATE TABLE rowlock_products (\
           id BIGINT UNSIGNED NOT NULL PRIMARY KEY, \
           available INT NOT NULL, \
           reserved INT NOT NULL, \
           CONSTRAINT rowlock_available CHECK (available >= 0)) ENGINE = InnoDB"
            .to_owned(),
        "CREATE TABLE rowlock_holds (\
           id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
           product_id BIGINT UNSIGNED NOT NULL, \
           qty INT UNSIGNED NOT NULL, \
           status ENUM('active', 'expired') NOT NULL, \
           created_at DATETIME(3) NOT NULL, \
           expires_at DATETIME(3) NOT NULL, \
           KEY rowlock_holds_status_expiry (status, expires_at)) ENGINE = InnoDB"
            .to_owned(),
        format!(
            "INSERT INTO rowlock_products (id, available, reserved) VALUES ({}, {stock}, 0)",
            ROWLOCK_PRODUCT.0
        ),
    ];
    for statement in statements {
        pool.execute(statement.as_str())
            .await
            .map_err(|err| format!("creating the row-lock baseline's tables: {err}"))?;
    }
    Ok(())
}

/// How a baseline's client sends its statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Prepared on the server and executed with binds (`COM_STMT_EXECUTE`), as any sqlx query
    /// with binds.
    Prepared,
    /// The text protocol (`COM_QUERY`), values in the statement's text (rendered by
    /// `shared::store::sql::Sql`, as the service renders its own): the bytes a C client's
    /// `mysql_query` sends. The server parses each statement every time, and executes nothing
    /// prepared.
    Text,
}

/// The classic row-lock counter design: `BEGIN; SELECT` the counters `FOR UPDATE; UPDATE` them;
/// `INSERT` the hold; `COMMIT`. The lock is held across three round trips and the commit.
pub async fn rowlock_hold(pool: &Pool, protocol: Protocol) -> String {
    let attempt = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let select = "SELECT available FROM rowlock_products WHERE id = ? FOR UPDATE";
        let available: i32 = match protocol {
            Protocol::Prepared => {
                sqlx::query_scalar(select)
                    .bind(ROWLOCK_PRODUCT.0)
                    .fetch_one(&mut **tx)
                    .await?
            }
            Protocol::Text => {
                Sql::new(select)
                    .bind(ROWLOCK_PRODUCT.0)
                    .fetch_scalar(&mut **tx)
                    .await?
            }
        };
        if available < 1 {
            tx.rollback().await?;
            return Ok::<_, sqlx::Error>("insufficient_stock");
        }
        for statement in [
            "UPDATE rowlock_products SET available = available - 1, reserved = reserved + 1 \
             WHERE id = ?",
            "INSERT INTO rowlock_holds (product_id, qty, status, created_at, expires_at) \
             VALUES (?, 1, 'active', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 600 SECOND)",
        ] {
            match protocol {
                Protocol::Prepared => {
                    sqlx::query(statement)
                        .bind(ROWLOCK_PRODUCT.0)
                        .execute(&mut **tx)
                        .await?
                }
                Protocol::Text => {
                    Sql::new(statement)
                        .bind(ROWLOCK_PRODUCT.0)
                        .execute(&mut **tx)
                        .await?
                }
            };
        }
        tx.commit().await?;
        Ok("reserved")
    };
    match attempt.await {
        Ok(outcome) => outcome.into(),
        Err(_) => "error".into(),
    }
}

/// The row-lock design's stock adds up: available + reserved is the stock it started with,
/// reserved is the units of its active holds, nothing below zero.
pub async fn audit_rowlock(pool: &Pool, stock: u32) -> Result<String, String> {
    let row = sqlx::query(
        "SELECT CAST(p.available AS SIGNED) AS available, CAST(p.reserved AS SIGNED) AS reserved, \
           CAST((SELECT COALESCE(SUM(qty), 0) FROM rowlock_holds \
                 WHERE product_id = p.id AND status = 'active') AS SIGNED) AS held \
         FROM rowlock_products p WHERE p.id = ?",
    )
    .bind(ROWLOCK_PRODUCT.0)
    .fetch_one(pool)
    .await
    .map_err(|err| err.to_string())?;
    let column = |name: &str| row.try_get::<i64, _>(name).map_err(|err| err.to_string());
    let (available, reserved, held) = (column("available")?, column("reserved")?, column("held")?);
    if available < 0 || available + reserved != i64::from(stock) || reserved != held {
        return Err(format!(
            "row-lock product: available {available} + reserved {reserved} != {stock}, \
             or reserved != {held} units of active holds"
        ));
    }
    Ok(format!("ok ({reserved} units held, none oversold)"))
}

/// The seed design, as raw SQL on the service's own tables: the product lock is held across four
/// statements, one of them a sum over every active hold of the product, a range that grows with
/// every hold.
pub async fn sum_hold(pool: &Pool, product: ProductId) -> String {
    let attempt = async {
        let mut conn = pool.acquire().await?;
        let mut tx = conn.begin().await?;
        let row =
            sqlx::query(
                "SELECT p.total_stock, CAST((SELECT SUM(sold_stock) FROM stock_buckets WHERE product_id = p.id) AS SIGNED) AS sold_stock \
                 FROM products p WHERE p.id = ? FOR UPDATE",
            )
                .bind(product.0)
                .fetch_one(&mut **tx)
                .await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(SUM(qty), 0) AS SIGNED) FROM holds \
             WHERE product_id = ? AND status = 'active' AND expires_at > UTC_TIMESTAMP(3)",
        )
        .bind(product.0)
        .fetch_one(&mut **tx)
        .await?;
        let available = i64::from(row.try_get::<i32, _>("total_stock")?)
            - row.try_get::<i64, _>("sold_stock")?
            - held;
        if available < 1 {
            tx.rollback().await?;
            return Ok::<_, sqlx::Error>("insufficient_stock");
        }
        // The seed kept its counters on the product row; ours live in its stock buckets.
        sqlx::query(
            "UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1 \
             WHERE product_id = ? AND bucket = 0",
        )
            .bind(product.0)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO holds (id, product_id, qty, status, created_at, expires_at) \
             VALUES (?, ?, 1, 'active', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 600 SECOND)",
        )
        .bind(HoldId::generate().as_str())
        .bind(product.0)
        .execute(&mut **tx)
        .await?;
        tx.commit().await?;
        Ok("reserved")
    };
    match attempt.await {
        Ok(outcome) => outcome.into(),
        Err(_) => "error".into(),
    }
}
