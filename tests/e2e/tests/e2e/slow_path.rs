//! The catch-up paths under trouble: a reservation's slow path at sell-out while holds lapse all
//! the time ends in a hold or a refusal, and the sweep settles every product it can when one
//! product's settlement fails.

use std::sync::Arc;
use std::time::Duration;

use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants};
use flash_sale_local::Options;
use shared::adapters::local::LogPublisher;
use shared::domain::ids::ProductId;
use shared::store::holds::{HoldRequest, reserve};

fn no_background_work() -> Options {
    Options {
        background_work: false,
        ..Options::default()
    }
}

/// A few units over three buckets, holds of 1 to 3 units that lapse within tens of milliseconds,
/// and no sweeper or trigger: only the reservations themselves settle what lapsed. A reservation
/// that gathers units sees units lapse under it again and again; it must settle them as it
/// goes, and, losing round after round to other holds, still answer a hold or a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_at_sell_out_while_holds_lapse_end_in_a_hold_or_a_refusal() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], no_background_work()).await;
    let api = Api::new(&server);
    let product_id = db.product(6, 3).await;
    let pool = shared::store::db::connect(&db.url, 20)
        .await
        .expect("a pool for the clients");

    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let clients = (0..16u32).map(|client| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while tokio::time::Instant::now() < until {
                let request = HoldRequest {
                    product_id,
                    buyer: None,
                    qty: 1 + client % 3,
                    idempotency_key: None,
                };
                let ttl = Duration::from_millis(fastrand::u64(10..60));
                answers.push(match reserve(&pool, &request, ttl).await {
                    Ok(_) => (201, String::new()),
                    Err(err) => (err.status(), err.to_string()),
                });
            }
            answers
        })
    });
    let mut answers = Vec::new();
    for client in futures::future::join_all(clients).await {
        answers.extend(client.expect("a client ran"));
    }

    let count = |status: u16| answers.iter().filter(|(s, _)| *s == status).count();
    let others: Vec<&(u16, String)> = answers
        .iter()
        .filter(|(status, _)| *status != 201 && *status != 409)
        .collect();
    assert!(
        others.is_empty(),
        "every answer is a hold or a refusal ({} holds, {} refusals, {} others): {:?}",
        count(201),
        count(409),
        others.len(),
        others.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        count(201) > 0 && count(409) > 0,
        "sold out and lapsing: {} holds, {} refusals",
        count(201),
        count(409)
    );

    assert_stock_invariants(&db.pool, &api, product_id.0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    shared::store::settle::settle_lapsed(&db.pool, product_id)
        .await
        .expect("settled");
    let stock = assert_stock_invariants(&db.pool, &api, product_id.0).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["total_stock"].as_i64()
        ),
        (Some(6), Some(6)),
        "every unit back once every hold lapsed: {stock}"
    );
}

/// Lapsed holds of `product_id`, `count` of one unit each, their TTL already over.
async fn lapsed_holds(db: &TestDb, product_id: ProductId, count: usize) {
    for _ in 0..count {
        let request = HoldRequest {
            product_id,
            buyer: None,
            qty: 1,
            idempotency_key: None,
        };
        reserve(&db.pool, &request, Duration::from_millis(20))
            .await
            .expect("held");
    }
}

async fn active_holds(db: &TestDb, product_id: ProductId) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM holds WHERE product_id = ? AND status = 'active'")
        .bind(product_id.0)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

async fn unpublished_events(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events WHERE published_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

/// One product's settlement fails for real: a trigger on `holds` refuses to expire its holds, as
/// a row the settle UPDATE cannot change would. The sweep still settles the other product, still
/// republishes the outbox, counts the failure, and fails its invocation; once the fault is gone,
/// the next sweep settles the first product too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_product_whose_settlement_fails_leaves_the_rest_of_the_sweep_to_run() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], no_background_work()).await;
    let api = Api::new(&server);
    // The failing product first, its holds lapsing first: the one a sweep would meet first.
    let failing = db.product(4, 1).await;
    let healthy = db.product(4, 2).await;
    lapsed_holds(&db, failing, 2).await;
    lapsed_holds(&db, healthy, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    sqlx::raw_sql(&format!(
        "CREATE TRIGGER holds_of_one_product_cannot_expire BEFORE UPDATE ON holds FOR EACH ROW \
         BEGIN \
           IF NEW.product_id = {} AND NEW.status = 'expired' THEN \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'this product cannot be settled'; \
           END IF; \
         END",
        failing.0
    ))
    .execute(&db.pool)
    .await
    .expect("create the trigger");
    // An event its operation never published, for the republish step to find.
    sqlx::query(
        "INSERT INTO outbox_events (id, event_type, detail, created_at) \
         VALUES (UUID(), 'OrderCreated', '{}', UTC_TIMESTAMP(3) - INTERVAL 1 MINUTE)",
    )
    .execute(&db.pool)
    .await
    .expect("an unpublished event");

    let deps = db.sweeper(Arc::new(LogPublisher));
    let incomplete = shared::service::sweep::sweep(
        &deps.pool,
        deps.publisher.as_ref(),
        deps.payment_retry,
        deps.republish_grace,
    )
    .await
    .expect_err("a product failed, so the sweep is incomplete");
    assert_eq!(incomplete.products_failed, 1, "{incomplete}");
    assert!(incomplete.steps_failed.is_empty(), "{incomplete}");
    assert_eq!(
        incomplete.report.settled.holds_expired, 3,
        "the healthy product was settled: {incomplete}"
    );
    assert_eq!(
        (
            active_holds(&db, failing).await,
            active_holds(&db, healthy).await
        ),
        (2, 0)
    );
    assert_eq!(incomplete.report.events_republished, 1, "{incomplete}");
    assert_eq!(unpublished_events(&db).await, 0, "every event published");
    let stock = assert_stock_invariants(&db.pool, &api, healthy.0).await;
    assert_eq!(stock["available_stock"], 4);

    // The sweeper's Lambda fails its invocation, so its Errors metric shows it too.
    let handled = sweeper::handle(&deps).await;
    assert!(
        matches!(&handled, Err(err) if err.to_string().contains("1 product(s) not settled")),
        "{handled:?}"
    );

    sqlx::raw_sql("DROP TRIGGER holds_of_one_product_cannot_expire")
        .execute(&db.pool)
        .await
        .expect("drop the trigger");
    let report = sweeper::handle(&deps).await.expect("a clean sweep");
    assert_eq!(report.settled.holds_expired, 2);
    let stock = assert_stock_invariants(&db.pool, &api, failing.0).await;
    assert_eq!(stock["available_stock"], 4);
}
