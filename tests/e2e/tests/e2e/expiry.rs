//! Hold expiry: visible to every reader the instant it passes with no job run, then settled by
//! the expiry trigger or the sweeper, each safe to run early, late, twice or after a redeem.

use std::sync::Arc;
use std::time::Duration;

use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants};
use flash_sale_local::Options;
use hold_expiry::ExpireHold;
use shared::adapters::local::NoPublisher;
use shared::store::expiry::ExpiryOutcome;

fn no_background_work() -> Options {
    Options {
        background_work: false,
        ..Options::default()
    }
}

async fn stored_status(db: &TestDb, hold_id: &str) -> String {
    sqlx::query_scalar("SELECT CAST(status AS CHAR) FROM holds WHERE id = ?")
        .bind(hold_id)
        .fetch_one(&db.pool)
        .await
        .expect("hold row")
}

async fn expire(db: &TestDb, hold_id: &str) -> ExpiryOutcome {
    let deps = hold_expiry::Deps {
        pool: db.pool.clone(),
        publisher: Arc::new(NoPublisher),
    };
    hold_expiry::handle(
        &deps,
        ExpireHold {
            hold_id: hold_id.to_owned(),
        },
    )
    .await
    .expect("expiry runs")
    .outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapsed_hold_stops_counting_for_readers_before_any_job_runs() {
    let db = TestDb::new().await;
    // No timers, no sweeper: nothing settles the hold.
    let server = db
        .server_with(&[("HOLD_TTL_SECONDS", "1")], no_background_work())
        .await;
    let api = Api::new(&server);
    let product = api.create_product(3, "50.00").await;
    let (_, hold) = api.hold(product, 3).await;
    let hold_id = hold["hold_id"].as_str().expect("id");
    assert_eq!(api.product(product).await["available_stock"], 0);
    assert_eq!(api.hold(product, 1).await.0, 409, "all units are held");

    tokio::time::sleep(Duration::from_millis(1100)).await;

    assert_eq!(
        stored_status(&db, hold_id).await,
        "active",
        "no job has settled it"
    );
    let stock = api.product(product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(3), Some(0)),
        "{stock}"
    );
    assert_eq!(
        api.get(&format!("/api/holds/{hold_id}")).await.1["status"],
        "expired"
    );
    let refused = api.order(hold_id).await;
    assert_eq!(
        (refused.0, refused.1["error"]["code"].as_str()),
        (410, Some("hold_expired")),
        "{}",
        refused.1
    );
    // The units can be held again at once: the reservation settles the lapsed hold itself.
    assert_eq!(api.hold(product, 3).await.0, 201);
    assert_eq!(stored_status(&db, hold_id).await, "expired");
    assert_stock_invariants(&db.pool, &api, product).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_expiry_trigger_settles_only_a_lapsed_active_hold_and_is_safe_to_repeat() {
    let db = TestDb::new().await;
    let server = db
        .server_with(&[("HOLD_TTL_SECONDS", "1")], no_background_work())
        .await;
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;
    let (_, hold) = api.hold(product, 2).await;
    let hold_id = hold["hold_id"].as_str().expect("id");

    assert_eq!(
        expire(&db, hold_id).await,
        ExpiryOutcome::NotYetDue,
        "an early trigger leaves the hold alone"
    );
    assert_eq!(stored_status(&db, hold_id).await, "active");
    assert_eq!(api.product(product).await["reserved_stock"], 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(expire(&db, hold_id).await, ExpiryOutcome::Expired);
    assert_eq!(
        expire(&db, hold_id).await,
        ExpiryOutcome::AlreadySettled,
        "a duplicate does nothing"
    );
    assert_eq!(stored_status(&db, hold_id).await, "expired");
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(stock["available_stock"], 10);

    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(expire(&db, &unknown).await, ExpiryOutcome::NotFound);
    let deps = hold_expiry::Deps {
        pool: db.pool.clone(),
        publisher: Arc::new(NoPublisher),
    };
    let malformed = hold_expiry::handle(
        &deps,
        ExpireHold {
            hold_id: "nope".into(),
        },
    )
    .await;
    assert_eq!(malformed.expect_err("refused").code(), "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_after_the_hold_was_redeemed_changes_nothing() {
    let db = TestDb::new().await;
    let server = db
        .server_with(&[("HOLD_TTL_SECONDS", "1")], no_background_work())
        .await;
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;
    let (_, hold) = api.hold(product, 4).await;
    let hold_id = hold["hold_id"].as_str().expect("id");
    assert_eq!(api.order(hold_id).await.0, 201);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(expire(&db, hold_id).await, ExpiryOutcome::AlreadySettled);
    let sweep = sweeper::handle(&db.sweeper(Arc::new(NoPublisher)))
        .await
        .expect("sweep");
    assert_eq!(sweep.settled.holds_expired, 0);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["available_stock"].as_i64()
        ),
        (Some(4), Some(6))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_settles_every_lapsed_hold_and_running_it_concurrently_is_safe() {
    let db = TestDb::new().await;
    let server = db
        .server_with(&[("HOLD_TTL_SECONDS", "1")], no_background_work())
        .await;
    let api = Api::new(&server);
    let (first, second) = (
        api.create_product(50, "1.00").await,
        api.create_product(50, "1.00").await,
    );
    for _ in 0..10 {
        assert_eq!(api.hold(first, 2).await.0, 201);
        assert_eq!(api.hold(second, 3).await.0, 201);
    }
    let (_, redeemed) = api.hold(first, 1).await;
    assert_eq!(
        api.order(redeemed["hold_id"].as_str().expect("id")).await.0,
        201
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, live) = api.hold(second, 5).await;

    let deps = db.sweeper(Arc::new(NoPublisher));
    let (a, b, c) = tokio::join!(
        sweeper::handle(&deps),
        sweeper::handle(&deps),
        sweeper::handle(&deps)
    );
    let settled: u64 = [a, b, c]
        .into_iter()
        .map(|sweep| sweep.expect("sweep").settled.holds_expired)
        .sum();
    assert_eq!(settled, 20, "each lapsed hold settled exactly once");
    assert_eq!(
        sweeper::handle(&deps)
            .await
            .expect("sweep")
            .settled
            .holds_expired,
        0
    );

    let stock = assert_stock_invariants(&db.pool, &api, first).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["sold_stock"].as_i64()
        ),
        (Some(49), Some(1))
    );
    let stock = assert_stock_invariants(&db.pool, &api, second).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(45), Some(5))
    );
    assert_eq!(
        stored_status(&db, live["hold_id"].as_str().expect("id")).await,
        "active"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_servers_timer_settles_a_hold_at_its_expiry() {
    let db = TestDb::new().await;
    // A sweeper interval far beyond the test: only the per-hold timer can settle the hold.
    let server = db
        .server(&[
            ("HOLD_TTL_SECONDS", "1"),
            ("SWEEP_INTERVAL_SECONDS", "3600"),
        ])
        .await;
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;
    // The sweeper's first tick runs at start; this hold is created after it.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, hold) = api.hold(product, 2).await;
    let hold_id = hold["hold_id"].as_str().expect("id");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while stored_status(&db, hold_id).await != "expired" {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the timer never settled the hold"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(stock["available_stock"], 10);
}

async fn stored_order_status(db: &TestDb, order_id: &str) -> String {
    sqlx::query_scalar("SELECT CAST(status AS CHAR) FROM orders WHERE id = ?")
        .bind(order_id)
        .fetch_one(&db.pool)
        .await
        .expect("order row")
}

async fn outbox_types(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar("SELECT event_type FROM outbox_events ORDER BY created_at, event_type")
        .fetch_all(&db.pool)
        .await
        .expect("outbox")
}

async fn expire_order(db: &TestDb, order_id: &str) -> ExpiryOutcome {
    let deps = order_expiry::Deps {
        pool: db.pool.clone(),
        publisher: Arc::new(NoPublisher),
    };
    order_expiry::handle(
        &deps,
        order_expiry::ExpireOrder {
            order_id: order_id.to_owned(),
        },
    )
    .await
    .expect("expiry runs")
    .outcome
}

async fn unpaid_order(api: &Api, product: u64, qty: u32) -> String {
    let (_, hold) = api.hold(product, qty).await;
    let (status, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
    assert_eq!(status, 201, "{order}");
    order["order_id"].as_str().expect("id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_is_cancelled_for_readers_the_moment_its_deadline_passes() {
    let db = TestDb::new().await;
    let server = db
        .server_with(
            &[
                ("ORDER_PAYMENT_TTL_SECONDS", "1"),
                ("PAYMENT_GRACE_SECONDS", "0"),
            ],
            no_background_work(),
        )
        .await;
    let api = Api::new(&server);
    let product = api.create_product(5, "10.00").await;
    let order_id = unpaid_order(&api, product, 5).await;
    assert_eq!(api.product(product).await["sold_stock"], 5);
    assert_eq!(api.hold(product, 1).await.0, 409);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        stored_order_status(&db, &order_id).await,
        "pending_payment",
        "no job has run"
    );
    assert_eq!(
        api.get(&format!("/api/orders/{order_id}")).await.1["status"],
        "cancelled"
    );
    let stock = api.product(product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["sold_stock"].as_i64()
        ),
        (Some(5), Some(0)),
        "{stock}"
    );
    // A reservation that needs those units settles the order itself.
    assert_eq!(api.hold(product, 5).await.0, 201);
    assert_eq!(stored_order_status(&db, &order_id).await, "cancelled");
    assert_eq!(outbox_types(&db).await, ["OrderCreated", "OrderCancelled"]);
    assert_stock_invariants(&db.pool, &api, product).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_deadline_trigger_cancels_only_an_unpaid_order_past_its_deadline() {
    let db = TestDb::new().await;
    let server = db
        .server_with(
            &[
                ("ORDER_PAYMENT_TTL_SECONDS", "1"),
                ("PAYMENT_GRACE_SECONDS", "0"),
            ],
            no_background_work(),
        )
        .await;
    let api = Api::new(&server);
    let product = api.create_product(10, "10.00").await;
    let unpaid = unpaid_order(&api, product, 2).await;
    let paid = unpaid_order(&api, product, 3).await;
    let apply = |key: &'static str, order_id: String| {
        let pool = db.pool.clone();
        async move {
            let event = shared::domain::payment::PaymentEvent {
                idempotency_key: key.into(),
                order_id: shared::domain::ids::OrderId::parse(&order_id).expect("id"),
                status: shared::domain::payment::PaymentStatus::Paid,
                amount: None,
                received_at: chrono::Utc::now().naive_utc(),
            };
            shared::service::payments::process_payment(&pool, &NoPublisher, &event)
                .await
                .expect("applied")
        }
    };
    assert_eq!(apply("evt_in_time", paid.clone()).await.as_str(), "paid");

    assert_eq!(
        expire_order(&db, &unpaid).await,
        ExpiryOutcome::NotYetDue,
        "early: nothing changes"
    );
    assert_eq!(stored_order_status(&db, &unpaid).await, "pending_payment");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(expire_order(&db, &unpaid).await, ExpiryOutcome::Expired);
    assert_eq!(
        expire_order(&db, &unpaid).await,
        ExpiryOutcome::AlreadySettled
    );
    assert_eq!(
        expire_order(&db, &paid).await,
        ExpiryOutcome::AlreadySettled,
        "a paid order is never cancelled"
    );
    let unknown = uuid::Uuid::new_v4().to_string();
    assert_eq!(expire_order(&db, &unknown).await, ExpiryOutcome::NotFound);

    // The provider's success arrives after the deadline: recorded as a late payment, not applied.
    assert_eq!(
        apply("evt_late", unpaid.clone()).await.as_str(),
        "refund_required"
    );
    assert_eq!(
        api.get(&format!("/api/orders/{unpaid}")).await.1["status"],
        "cancelled"
    );
    assert_eq!(
        api.get(&format!("/api/orders/{paid}")).await.1["status"],
        "paid"
    );
    let types = outbox_types(&db).await;
    assert_eq!(
        types.iter().filter(|t| *t == "OrderCancelled").count(),
        1,
        "{types:?}"
    );
    assert_eq!(
        types.iter().filter(|t| *t == "LatePayment").count(),
        1,
        "{types:?}"
    );
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["available_stock"].as_i64()
        ),
        (Some(3), Some(7))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_paid_event_settles_the_lapsed_order_itself_and_asks_for_a_refund() {
    let db = TestDb::new().await;
    // No timer and no sweeper: the order is past its deadline but still stored as pending.
    let server = db
        .server_with(
            &[
                ("ORDER_PAYMENT_TTL_SECONDS", "1"),
                ("PAYMENT_GRACE_SECONDS", "0"),
            ],
            no_background_work(),
        )
        .await;
    let api = Api::new(&server);
    let product = api.create_product(10, "10.00").await;
    let order_id = unpaid_order(&api, product, 4).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(stored_order_status(&db, &order_id).await, "pending_payment");

    let event = shared::domain::payment::PaymentEvent {
        idempotency_key: "evt_too_late".into(),
        order_id: shared::domain::ids::OrderId::parse(&order_id).expect("id"),
        status: shared::domain::payment::PaymentStatus::Paid,
        amount: None,
        received_at: chrono::Utc::now().naive_utc(),
    };
    let outcome = shared::service::payments::process_payment(&db.pool, &NoPublisher, &event)
        .await
        .expect("applied");
    assert_eq!(outcome.as_str(), "refund_required");
    assert_eq!(stored_order_status(&db, &order_id).await, "cancelled");
    let mut types = outbox_types(&db).await;
    types.sort();
    assert_eq!(types, ["LatePayment", "OrderCancelled", "OrderCreated"]);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(stock["available_stock"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweeper_cancels_unpaid_orders_past_their_deadline() {
    let db = TestDb::new().await;
    let server = db
        .server_with(
            &[
                ("ORDER_PAYMENT_TTL_SECONDS", "1"),
                ("PAYMENT_GRACE_SECONDS", "0"),
            ],
            no_background_work(),
        )
        .await;
    let api = Api::new(&server);
    let product = api.create_product(10, "10.00").await;
    for _ in 0..3 {
        unpaid_order(&api, product, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = sweeper::handle(&db.sweeper(Arc::new(NoPublisher)))
        .await
        .expect("sweep");
    assert_eq!(report.settled.orders_cancelled, 3);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["sold_stock"].as_i64()
        ),
        (Some(10), Some(0))
    );
}

/// A redeem judges the hold's expiry by the clock after it got the hold's row lock: a hold that
/// expired while the redeem waited for the lock is expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_that_expires_while_its_redeem_waits_for_the_lock_is_expired() {
    let db = TestDb::new().await;
    let server = db
        .server_with(&[("HOLD_TTL_SECONDS", "1")], no_background_work())
        .await;
    let api = Api::new(&server);
    let product = api.create_product(5, "10.00").await;
    let (status, hold) = api.hold(product, 2).await;
    assert_eq!(status, 201, "{hold}");
    let hold_id = hold["hold_id"].as_str().expect("id").to_owned();

    let mut blocker_conn = db.pool.acquire().await.expect("a connection");

    let mut blocker = blocker_conn.begin().await.expect("begin");
    sqlx::query("SELECT id FROM holds WHERE id = ? FOR UPDATE")
        .bind(&hold_id)
        .fetch_one(&mut **blocker)
        .await
        .expect("lock the hold");
    let redeem = {
        let (api, hold_id) = (Api::new(&server), hold_id.clone());
        tokio::spawn(async move { api.order(&hold_id).await })
    };
    let expires_at = chrono::DateTime::parse_from_rfc3339(hold["expires_at"].as_str().expect("at"))
        .expect("RFC 3339");
    let until_expired = (expires_at - chrono::Utc::now().fixed_offset())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(until_expired + Duration::from_millis(300)).await;
    blocker.commit().await.expect("release");

    let (status, answer) = redeem.await.expect("joined");
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (410, Some("hold_expired")),
        "{answer}"
    );
    assert_eq!(
        stored_status(&db, &hold_id).await,
        "active",
        "no order was made"
    );
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["available_stock"].as_i64()
        ),
        (Some(0), Some(5))
    );
}

/// Whether another connection can lock the hold's row at once, asked from a thread of its own
/// while this test's (single-threaded) runtime is blocked: as a Lambda container frozen right
/// after answering, whose pending work never runs.
fn hold_row_is_free(db: &TestDb, hold_id: &str) -> bool {
    let (url, hold_id) = (db.url.clone(), hold_id.to_owned());
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let pool = shared::store::db::connect(&url, 1).await.expect("connect");
            let mut tx_conn = pool.acquire().await.expect("a connection");
            let mut tx = tx_conn.begin().await.expect("begin");
            let locked = sqlx::query("SELECT id FROM holds WHERE id = ? FOR UPDATE NOWAIT")
                .bind(&hold_id)
                .fetch_one(&mut **tx)
                .await;
            locked.is_ok()
        })
    })
    .join()
    .expect("the checking thread")
}

/// Every transaction that returns early ends with an explicit, awaited rollback (or commit): a
/// dropped sqlx transaction only queues its ROLLBACK for the connection's next use, and a frozen
/// Lambda container would keep its row locks until it thaws.
#[tokio::test]
async fn transactions_that_end_early_release_their_row_locks_before_returning() {
    let db = TestDb::new().await;
    let product = shared::store::products::create_product(
        &db.pool,
        &shared::store::products::NewProduct {
            name: "Locks".into(),
            price: shared::domain::money::Cents(100),
            stock: 10,
            buckets: 1,
            sale: Default::default(),
            waiting_room: None,
        },
    )
    .await
    .expect("product");
    let hold = |ttl: u64| {
        let pool = db.pool.clone();
        async move {
            let request = shared::store::holds::HoldRequest {
                buyer: None,
                product_id: product.id,
                qty: 1,
                idempotency_key: None,
            };
            shared::store::holds::reserve(&pool, &request, Duration::from_secs(ttl))
                .await
                .expect("reserved")
                .value
                .hold
                .hold_id
        }
    };

    // The expiry trigger fires early: it locked the hold, found it not due, and returned.
    let not_due = hold(60).await;
    let outcome = shared::store::expiry::expire_hold(&db.pool, &not_due)
        .await
        .expect("expiry ran")
        .value;
    assert_eq!(outcome, ExpiryOutcome::NotYetDue);
    assert!(
        hold_row_is_free(&db, not_due.as_str()),
        "an early trigger left the hold locked"
    );

    // A redeem of an expired hold: it locked the hold, found it expired, and refused.
    let expired = hold(1).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = shared::store::orders::redeem(
        &db.pool,
        &expired,
        None,
        shared::domain::model::PaymentWindow {
            ttl: Duration::from_secs(900),
            grace: Duration::from_secs(300),
        },
    )
    .await;
    assert!(
        matches!(refused, Err(shared::Error::HoldExpired)),
        "{refused:?}"
    );
    assert!(
        hold_row_is_free(&db, expired.as_str()),
        "a refused redeem left the hold locked"
    );
}
