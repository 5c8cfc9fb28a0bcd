//! Contention: many clients at once on one product, over HTTP on the local server, against a
//! real MariaDB/MySQL. These assert invariants and exact counts, never timings.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants};
use futures::future::join_all;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_and_five_concurrent_holds_on_a_hundred_units_sell_exactly_a_hundred() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(100, "50.00").await;

    let statuses: Vec<u16> = join_all((0..105).map(|_| {
        let api = api.clone();
        async move { api.hold(product, 1).await.0 }
    }))
    .await;

    let count = |status: u16| statuses.iter().filter(|s| **s == status).count();
    assert_eq!((count(201), count(409)), (100, 5), "statuses: {statuses:?}");
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(0), Some(100))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_server_instances_on_one_database_never_oversell() {
    let db = TestDb::new().await;
    let (first, second) = (db.server(&[]).await, db.server(&[]).await);
    let apis = [Api::new(&first), Api::new(&second)];
    let product = apis[0].create_product(100, "50.00").await;

    let statuses: Vec<u16> = join_all((0..105).map(|i| {
        let api = apis[i % 2].clone();
        async move { api.hold(product, 1).await.0 }
    }))
    .await;

    let created = statuses.iter().filter(|s| **s == 201).count();
    assert_eq!(created, 100, "statuses: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 409).count(), 5);
    for api in &apis {
        let stock = assert_stock_invariants(&db.pool, api, product).await;
        assert_eq!(stock["available_stock"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_redeems_of_one_hold_make_one_order() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "12.50").await;
    let (_, hold) = api.hold(product, 3).await;
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_owned();

    let answers: Vec<(u16, Value)> = join_all((0..20).map(|_| {
        let api = api.clone();
        let hold_id = hold_id.clone();
        async move { api.order(&hold_id).await }
    }))
    .await;

    let order_ids: HashSet<&str> = answers
        .iter()
        .map(|(_, order)| order["order_id"].as_str().expect("order id"))
        .collect();
    assert_eq!(order_ids.len(), 1, "one order for one hold: {answers:?}");
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 201).count(),
        1
    );
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 200).count(),
        19
    );
    assert_eq!(answers[0].1["amount"], "37.50");
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(orders, 1);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(3), Some(0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeats_of_an_idempotency_key_reserve_once() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(50, "50.00").await;
    let body = json!({"product_id": product, "qty": 2}).to_string();

    let answers: Vec<(u16, Value)> = join_all((0..20).map(|_| {
        let api = api.clone();
        let body = body.clone();
        async move {
            api.post_raw("/api/holds", body, &[("idempotency-key", "checkout-42")])
                .await
        }
    }))
    .await;

    assert!(
        answers.iter().all(|(status, _)| *status == 201),
        "{answers:?}"
    );
    let hold_ids: HashSet<&str> = answers
        .iter()
        .map(|(_, hold)| hold["hold_id"].as_str().expect("id"))
        .collect();
    assert_eq!(hold_ids.len(), 1, "every repeat returns the same hold");
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(stock["reserved_stock"], 2, "reserved once: {stock}");
}

/// Many clients doing everything at once on a small stock: holding, redeeming, paying, failing
/// payments, repeating webhooks and letting holds lapse. Whatever interleaving happened, the end
/// state must satisfy the invariants and agree with what the clients were told.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_random_mix_of_clients_keeps_every_invariant() {
    let db = TestDb::new().await;
    let server = db.server(&[("HOLD_TTL_SECONDS", "1")]).await;
    let api = Api::new(&server);
    let product = api.create_product(40, "9.99").await;

    let outcomes: Vec<Vec<(String, &'static str)>> = join_all((0..24u64).map(|client| {
        let api = api.clone();
        async move {
            let mut rng = fastrand::Rng::with_seed(client);
            let mut orders = Vec::new();
            for round in 0..8 {
                let (status, hold) = api.hold(product, rng.u32(1..=4)).await;
                match status {
                    201 => {}
                    409 => continue,
                    other => panic!("unexpected hold status {other}: {hold}"),
                }
                let hold_id = hold["hold_id"].as_str().expect("hold id").to_owned();
                match rng.u8(0..10) {
                    // Abandon the hold: it lapses after a second.
                    0..=2 => continue,
                    // Redeem after it lapsed: must be refused.
                    3 => {
                        tokio::time::sleep(Duration::from_millis(1100)).await;
                        let (status, body) = api.order(&hold_id).await;
                        assert_eq!(status, 410, "{body}");
                        continue;
                    }
                    _ => {}
                }
                let (status, order) = api.order(&hold_id).await;
                assert!(
                    status == 201 || status == 410,
                    "redeem answered {status}: {order}"
                );
                if status == 410 {
                    continue;
                }
                let order_id = order["order_id"].as_str().expect("order id").to_owned();
                let outcome = if rng.bool() { "paid" } else { "failed" };
                let key = format!("evt-{client}-{round}");
                let (status, body) = api.pay(&key, &order_id, outcome).await;
                assert_eq!(status, 202, "{body}");
                if rng.bool() {
                    // The provider retries: same key, no second effect.
                    assert_eq!(api.pay(&key, &order_id, outcome).await.0, 202);
                }
                orders.push((order_id, outcome));
            }
            orders
        }
    }))
    .await;

    let expected: HashMap<String, &str> = outcomes.into_iter().flatten().collect();
    for (order_id, outcome) in &expected {
        let want = if *outcome == "paid" {
            "paid"
        } else {
            "cancelled"
        };
        api.wait_for_order(order_id, Duration::from_secs(20), |order| {
            order["status"] == want
        })
        .await;
    }
    // Let every remaining hold lapse: then nothing may be reserved.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    let paid_units: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(qty), 0) AS SIGNED) FROM orders WHERE status = 'paid'",
    )
    .fetch_one(&db.pool)
    .await
    .expect("sum");
    assert_eq!(stock["reserved_stock"], 0, "{stock}");
    assert_eq!(stock["sold_stock"].as_i64(), Some(paid_units), "{stock}");
    assert_eq!(
        stock["available_stock"].as_i64(),
        Some(40 - paid_units),
        "{stock}"
    );
    assert!(!expected.is_empty(), "the mix made some orders");
}

/// Pending expiry timers must not keep a stopped server's connections open (they would exhaust
/// the database's connection limit as servers come and go).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_server_releases_its_database_connections_despite_pending_timers() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(100, "1.00").await;
    let statuses: Vec<u16> = join_all((0..40).map(|_| {
        let api = api.clone();
        async move { api.hold(product, 1).await.0 }
    }))
    .await;
    assert!(statuses.iter().all(|s| *s == 201));
    let connections = || async {
        let open: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ?")
                .bind(&db.name)
                .fetch_one(&db.pool)
                .await
                .expect("processlist");
        open
    };
    assert!(
        connections().await > 8,
        "the server opened more connections than the test's own pool holds"
    );

    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    // At most the test's own pool (8) remains.
    while connections().await > 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} connections still open",
            connections().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
