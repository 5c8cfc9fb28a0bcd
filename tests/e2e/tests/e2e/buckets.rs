//! Split stock: a product's stock spread over several bucket rows keeps exactly the contract of
//! one row. Never oversold, and never refused while the product as a whole has enough.

use flash_sale_e2e::testing::{ADMIN_TOKEN, Api, TestDb, assert_stock_invariants};
use futures::future::join_all;
use serde_json::{Value, json};

/// Every bucket's counters, as stored.
async fn buckets(db: &TestDb, product: u64) -> Vec<(i32, i32, i32, i32)> {
    sqlx::query_as(
        "SELECT total_stock, available_stock, reserved_stock, sold_stock FROM stock_buckets WHERE product_id = ? ORDER BY bucket",
    )
    .bind(product)
    .fetch_all(&db.pool)
    .await
    .expect("buckets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_and_five_holds_on_a_hundred_units_in_sixteen_buckets_sell_exactly_a_hundred() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_split_product(100, 16, "5.00").await;
    assert_eq!(buckets(&db, product).await.len(), 16);

    let statuses: Vec<u16> = join_all((0..105).map(|_| {
        let api = api.clone();
        async move { api.hold(product, 1).await.0 }
    }))
    .await;

    let count = |status: u16| statuses.iter().filter(|s| **s == status).count();
    assert_eq!((count(201), count(409)), (100, 5), "{statuses:?}");
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(0), Some(100))
    );
    assert!(
        buckets(&db, product)
            .await
            .iter()
            .all(|(_, available, _, _)| *available == 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_larger_than_any_bucket_is_served_while_the_product_has_enough() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    // 8 units in 4 buckets of 2: no bucket can serve 5 alone.
    let product = api.create_split_product(8, 4, "5.00").await;
    let (status, hold) = api.hold(product, 5).await;
    assert_eq!(status, 201, "{hold}");
    let (status, hold) = api.hold(product, 3).await;
    assert_eq!(status, 201, "{hold}");
    let refused = api.hold(product, 1).await;
    assert_eq!(
        (refused.0, refused.1["error"]["code"].as_str()),
        (409, Some("insufficient_stock")),
        "{}",
        refused.1
    );

    let rows = buckets(&db, product).await;
    assert_eq!(
        rows.iter().map(|(total, ..)| total).sum::<i32>(),
        8,
        "totals moved, none created: {rows:?}"
    );
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(0), Some(8))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nearly_exhausted_split_stock_under_contention_sells_every_unit_and_no_more() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    // 41 units in 8 buckets (6,5,5,5,5,5,5,5) and 30 clients wanting 2 each: 20 holds fit, and
    // the last unit is left over, however the holds land.
    let product = api.create_split_product(41, 8, "5.00").await;
    let answers: Vec<(u16, Value)> = join_all((0..30).map(|_| {
        let api = api.clone();
        async move { api.hold(product, 2).await }
    }))
    .await;

    let created = answers.iter().filter(|(status, _)| *status == 201).count();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(status, _)| *status == 409)
        .map(|(_, body)| body)
        .collect();
    assert_eq!((created, refused.len()), (20, 10), "{answers:?}");
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(1), Some(40))
    );
    assert_eq!(
        api.hold(product, 1).await.0,
        201,
        "the odd unit can still be held"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_payments_and_expiry_return_units_to_their_own_bucket() {
    let db = TestDb::new().await;
    let server = db.server(&[("HOLD_TTL_SECONDS", "1")]).await;
    let api = Api::new(&server);
    let product = api.create_split_product(32, 8, "5.00").await;
    let mut orders = Vec::new();
    for _ in 0..6 {
        let (_, hold) = api.hold(product, 2).await;
        let (status, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
        assert_eq!(status, 201, "{order}");
        orders.push(order["order_id"].as_str().expect("id").to_owned());
    }
    for _ in 0..4 {
        assert_eq!(api.hold(product, 1).await.0, 201, "left to lapse");
    }
    for (index, order_id) in orders.iter().enumerate() {
        let outcome = if index % 2 == 0 { "paid" } else { "failed" };
        assert_eq!(
            api.pay(&format!("evt-{index}"), order_id, outcome).await.0,
            202
        );
    }
    for (index, order_id) in orders.iter().enumerate() {
        let want = if index % 2 == 0 { "paid" } else { "cancelled" };
        api.wait_for_order(order_id, std::time::Duration::from_secs(10), |order| {
            order["status"] == want
        })
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64(),
            stock["sold_stock"].as_i64()
        ),
        (Some(26), Some(0), Some(6))
    );
}

#[tokio::test]
async fn the_bucket_count_is_validated() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let admin = format!("Bearer {ADMIN_TOKEN}");
    for buckets in [json!(0), json!(65), json!(-1), json!("4")] {
        let body = json!({"name": "x", "price": "1.00", "stock": 10, "stock_buckets": buckets});
        let (status, answer) = api
            .post_raw(
                "/api/admin/products",
                body.to_string(),
                &[("authorization", &admin)],
            )
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (400, Some("invalid_request")),
            "{buckets}: {answer}"
        );
    }
    let product = api.create_split_product(10, 64, "5.00").await;
    let rows = buckets(&db, product).await;
    assert_eq!(rows.len(), 64);
    assert_eq!(
        rows.iter().map(|(total, ..)| total).sum::<i32>(),
        10,
        "more buckets than units: some hold none"
    );
}

/// Settling lapsed orders takes bucket locks last and in bucket order, whatever order the orders
/// lapsed in, so a transaction locking buckets in bucket order never deadlocks with it and never
/// waits longer than one short batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn settling_lapsed_orders_keeps_the_bucket_lock_order() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], no_background_work()).await;
    let api = Api::new(&server);
    let product = api.create_split_product(10, 2, "5.00").await;
    // Five units in each bucket: the first hold of 5 takes one bucket, the second the other.
    let mut orders_by_bucket = Vec::new();
    for _ in 0..2 {
        let (status, hold) = api.hold(product, 5).await;
        assert_eq!(status, 201, "{hold}");
        let (status, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
        assert_eq!(status, 201, "{order}");
        orders_by_bucket.push(order["order_id"].as_str().expect("id").to_owned());
    }
    // Both lapsed, the order in bucket 1 first.
    for (bucket, seconds_ago) in [(1, 20), (0, 10)] {
        sqlx::query(
            "UPDATE orders SET payment_due_at = UTC_TIMESTAMP(3) - INTERVAL ? SECOND, \
             cancel_at = UTC_TIMESTAMP(3) - INTERVAL ? SECOND WHERE product_id = ? AND bucket = ?",
        )
        .bind(seconds_ago)
        .bind(seconds_ago)
        .bind(product)
        .bind(bucket)
        .execute(&db.pool)
        .await
        .expect("backdate");
    }

    // Another transaction takes bucket 0, then (while the settler waits) bucket 1.
    let lock_bucket = |bucket: u16| {
        format!(
            "SELECT bucket FROM stock_buckets WHERE product_id = {product} AND bucket = {bucket} FOR UPDATE"
        )
    };
    let mut other_conn = db.pool.acquire().await.expect("a connection");
    let mut other = other_conn.begin().await.expect("begin");
    sqlx::query(&lock_bucket(0))
        .fetch_one(&mut **other)
        .await
        .expect("bucket 0");
    let pool = db.pool.clone();
    let settler = tokio::spawn(async move {
        shared::store::settle::settle_lapsed(&pool, shared::domain::ids::ProductId(product)).await
    });
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let second = sqlx::query(&lock_bucket(1)).fetch_one(&mut **other).await;
    let waited = started.elapsed();
    assert!(
        second.is_ok(),
        "locking bucket 1 after bucket 0 must not deadlock with the settler: {second:?}"
    );
    assert!(
        waited < std::time::Duration::from_secs(1),
        "bucket 1 was held {waited:?} while the settler waited for bucket 0"
    );
    other.commit().await.expect("commit");

    let settled = settler.await.expect("joined").expect("settled");
    assert_eq!(settled.value.orders_cancelled, 2);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(stock["available_stock"], 10);
}

fn no_background_work() -> flash_sale_local::Options {
    flash_sale_local::Options {
        background_work: false,
        ..flash_sale_local::Options::default()
    }
}

/// A connection of its own, set up as the service's are (READ COMMITTED, 5 s lock waits).
async fn session(url: &str) -> sqlx::MySqlConnection {
    use sqlx::Connection;
    let mut conn = sqlx::MySqlConnection::connect(url)
        .await
        .expect("a connection");
    sqlx::raw_sql(
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED; \
         SET SESSION innodb_lock_wait_timeout = 5",
    )
    .execute(&mut conn)
    .await
    .expect("the session");
    conn
}

/// One `CALL reserve_hold_v2` of 1 unit starting at bucket `pick`: its outcome.
async fn reserve_from(url: String, product: u64, pick: u16) -> Result<String, String> {
    use sqlx::Row;
    let mut conn = session(&url).await;
    sqlx::raw_sql(&format!(
        "CALL reserve_hold_v2('{}', {product}, 'ring-{pick}', 1, NULL, 120000, {pick}, 0)",
        uuid::Uuid::new_v4()
    ))
    .fetch_one(&mut conn)
    .await
    .map(|row| row.get::<String, _>("outcome"))
    .map_err(|err| err.to_string())
}

/// Two reservations that each had to wait for their picked bucket (another transaction was
/// taking its last unit), then found it empty, go on round the buckets without waiting for each
/// other: MariaDB keeps the lock of a conditional UPDATE that waited and then failed, so walking
/// the ring from different starts used to deadlock (1213, and 503 after five retries). Run at the
/// procedure's level, where the test picks the buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_that_waited_for_emptied_buckets_do_not_deadlock_on_the_ring() {
    use secrecy::ExposeSecret;
    let db = TestDb::new().await;
    // Two buckets, one unit each.
    let product = db.product(2, 2).await.0;
    let url = db.url.expose_secret().to_owned();
    // Another transaction takes the last unit of both buckets and holds them a moment.
    let mut taker = session(&url).await;
    sqlx::raw_sql(&format!(
        "BEGIN; UPDATE stock_buckets SET available_stock = 0, total_stock = 0 \
         WHERE product_id = {product}"
    ))
    .execute(&mut taker)
    .await
    .expect("the units taken");
    let commit_later = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        sqlx::raw_sql("COMMIT")
            .execute(&mut taker)
            .await
            .expect("commit");
    };
    let (first, second, ()) = tokio::join!(
        reserve_from(url.clone(), product, 0),
        reserve_from(url.clone(), product, 1),
        commit_later
    );
    for walk in [first, second] {
        assert_eq!(
            walk.as_deref(),
            Ok("insufficient_stock"),
            "each is refused, neither deadlocks"
        );
    }
}
