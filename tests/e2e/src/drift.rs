//! Stock counters corrupted on purpose, and read back: where the reconciliation tests (the e2e
//! tests' `reconcile` module and the `flash-sale-local reconcile` command's test) start from.

use flash_sale_local::Options;

use crate::testing::{Api, TestDb};

/// A product of 10 units: one active hold of 2, one order of 3, so reserved 2, sold 3.
pub async fn product_with_a_hold_and_an_order(api: &Api) -> u64 {
    let product = api.create_product(10, "5.00").await;
    let (status, _) = api.hold(product, 2).await;
    assert_eq!(status, 201);
    let (status, hold) = api.hold(product, 3).await;
    assert_eq!(status, 201);
    let (status, _) = api.order(hold["hold_id"].as_str().expect("hold id")).await;
    assert_eq!(status, 201);
    product
}

/// What a bug that forgot to release a reservation would leave: one unit moved from available
/// to reserved with no hold behind it (the CHECK constraint still holds: the row adds up).
pub async fn leak_a_reservation(db: &TestDb, product: u64) {
    sqlx::query(
        "UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1 WHERE product_id = ?",
    )
    .bind(product)
    .execute(&db.pool)
    .await
    .expect("corrupt a counter");
}

pub async fn stored(db: &TestDb, product: u64) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT CAST(available_stock AS SIGNED), CAST(reserved_stock AS SIGNED), CAST(sold_stock AS SIGNED) FROM stock_buckets WHERE product_id = ?",
    )
    .bind(product)
    .fetch_one(&db.pool)
    .await
    .expect("counters")
}

pub fn quiet() -> Options {
    Options {
        background_work: false,
        ..Options::default()
    }
}
