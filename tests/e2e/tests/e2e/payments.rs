//! The payment webhook and its queue: signatures, idempotency per event, the first terminal
//! outcome winning, failures returning units, retries, dead letters and durability.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use flash_sale_e2e::testing::{
    Api, TestDb, WEBHOOK_SECRET, assert_stock_invariants, webhook_signature,
};
use flash_sale_local::Options;
use secrecy::SecretString;
use serde_json::{Value, json};

fn no_background_work() -> Options {
    Options {
        background_work: false,
        ..Options::default()
    }
}

const SETTLED: Duration = Duration::from_secs(10);

/// The order's `payments`, as (idempotency_key, status, outcome), in the order the API lists them.
fn payments_of(order: &Value) -> Vec<(String, String, String)> {
    order["payments"]
        .as_array()
        .expect("payments")
        .iter()
        .map(|payment| {
            let field = |name: &str| payment[name].as_str().expect(name).to_owned();
            (field("idempotency_key"), field("status"), field("outcome"))
        })
        .collect()
}

async fn outbox_count(db: &TestDb, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events WHERE event_type = ?")
        .bind(event_type)
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

/// Sleeps until `at` (an RFC 3339 instant of the database clock, which is this machine's).
async fn sleep_until(at: &str) {
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    if let Ok(wait) = at.signed_duration_since(chrono::Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

fn plus_seconds(at: &str, seconds: i64) -> String {
    let at = chrono::DateTime::parse_from_rfc3339(at).expect("RFC 3339");
    (at + chrono::Duration::seconds(seconds)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_received_before_the_deadline_pays_however_late_it_is_applied() {
    let db = TestDb::new().await;
    let server = db.server(&[("ORDER_PAYMENT_TTL_SECONDS", "3")]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let in_time = ordered(&api, product, 1).await;
    let too_late = ordered(&api, product, 1).await;
    let due = api.get(&format!("/api/orders/{in_time}")).await.1["payment_due_at"]
        .as_str()
        .expect("due")
        .to_owned();

    // Another transaction holds the order's row lock from before the payment arrives until
    // after the deadline: the payment can only be applied once the deadline has passed.
    let mut blocker_conn = db.pool.acquire().await.expect("a connection");
    let mut blocker = blocker_conn.begin().await.expect("begin");
    sqlx::query("SELECT id FROM orders WHERE id = ? FOR UPDATE")
        .bind(&in_time)
        .fetch_one(&mut **blocker)
        .await
        .expect("lock the order");
    sleep_until(&plus_seconds(&due, -1)).await;
    assert_eq!(api.pay("evt_in_time", &in_time, "paid").await.0, 202);
    sleep_until(&plus_seconds(&due, 1)).await;
    assert_eq!(api.pay("evt_too_late", &too_late, "paid").await.0, 202);
    sleep_until(&plus_seconds(&due, 3)).await;
    blocker.commit().await.expect("release the lock");

    let paid = api
        .wait_for_order(&in_time, SETTLED, |order| {
            order["status"] != "pending_payment"
        })
        .await;
    assert_eq!(paid["status"], "paid", "{paid}");
    assert_eq!(
        payments_of(&paid),
        [("evt_in_time".into(), "paid".into(), "applied".into())]
    );
    let late = api
        .wait_for_order(&too_late, SETTLED, |order| {
            order["status"] != "pending_payment"
        })
        .await;
    assert_eq!(late["status"], "cancelled", "{late}");
    assert_eq!(
        payments_of(&late),
        [(
            "evt_too_late".into(),
            "paid".into(),
            "refund_required".into()
        )]
    );
    assert_eq!(outbox_count(&db, "LatePayment").await, 1);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["available_stock"].as_i64()
        ),
        (Some(1), Some(9)),
        "the late order's unit is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpaid_order_stays_sold_through_the_grace_and_is_cancelled_after_it() {
    let db = TestDb::new().await;
    let server = db
        .server_with(
            &[
                ("ORDER_PAYMENT_TTL_SECONDS", "1"),
                ("PAYMENT_GRACE_SECONDS", "2"),
            ],
            no_background_work(),
        )
        .await;
    let api = Api::new(&server);
    let product = api.create_product(4, "20.00").await;
    let order_id = ordered(&api, product, 4).await;
    let due = api.get(&format!("/api/orders/{order_id}")).await.1["payment_due_at"]
        .as_str()
        .expect("due")
        .to_owned();
    sleep_until(&plus_seconds(&due, 1)).await;
    let order = api.get(&format!("/api/orders/{order_id}")).await.1;
    assert_eq!(order["status"], "pending_payment", "in its grace: {order}");
    assert_eq!(api.product(product).await["sold_stock"], 4);
    assert_eq!(api.hold(product, 1).await.0, 409, "its units stay sold");
    let sweep =
        sweeper::handle(&db.sweeper(std::sync::Arc::new(shared::adapters::local::NoPublisher)))
            .await
            .expect("sweep");
    assert_eq!(sweep.settled.orders_cancelled, 0, "the sweeper waits too");

    sleep_until(&plus_seconds(&due, 2)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        api.get(&format!("/api/orders/{order_id}")).await.1["status"],
        "cancelled"
    );
    assert_eq!(api.hold(product, 4).await.0, 201, "the units are back");
    assert_stock_invariants(&db.pool, &api, product).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_payment_of_a_paid_order_is_a_double_charge_to_refund() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let order_id = ordered(&api, product, 2).await;

    for (key, status) in [
        ("evt_first", "paid"),
        ("evt_first", "paid"),
        ("evt_again", "paid"),
        ("evt_failed_after", "failed"),
    ] {
        assert_eq!(api.pay(key, &order_id, status).await.0, 202);
        queue_is_drained(&db).await;
    }

    let order = api.get(&format!("/api/orders/{order_id}")).await.1;
    assert_eq!(order["status"], "paid", "{order}");
    assert_eq!(
        payments_of(&order),
        [
            ("evt_first".into(), "paid".into(), "applied".into()),
            ("evt_again".into(), "paid".into(), "refund_required".into()),
            ("evt_failed_after".into(), "failed".into(), "ignored".into()),
        ],
        "a repeated key appears once, oldest first"
    );
    let mut stored = events_recorded(&db, &order_id).await;
    stored.sort();
    assert!(
        stored.contains(&("paid".into(), "double_charge".into())),
        "{stored:?}"
    );
    assert_eq!(outbox_count(&db, "DoublePayment").await, 1);
    assert_eq!(outbox_count(&db, "OrderPaid").await, 1);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(stock["sold_stock"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_of_another_amount_is_not_a_payment_of_the_order() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let order_id = ordered(&api, product, 2).await;

    let event = |key: &str, amount: &str| json!({"idempotency_key": key, "order_id": order_id, "status": "paid", "amount": amount});
    assert_eq!(api.pay_event(&event("evt_short", "39.99")).await.0, 202);
    queue_is_drained(&db).await;
    let order = api.get(&format!("/api/orders/{order_id}")).await.1;
    assert_eq!(order["status"], "pending_payment", "unchanged: {order}");
    assert_eq!(
        payments_of(&order),
        [("evt_short".into(), "paid".into(), "amount_mismatch".into())]
    );
    assert_eq!(outbox_count(&db, "PaymentAmountMismatch").await, 1);

    // The right amount, written either way, pays it.
    assert_eq!(api.pay_event(&event("evt_right", "40")).await.0, 202);
    let paid = api
        .wait_for_order(&order_id, SETTLED, |order| order["status"] == "paid")
        .await;
    assert_eq!(payments_of(&paid)[1].2, "applied");
    let (status, error) = api.pay_event(&event("evt_bad", "40.001")).await;
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
}

async fn ordered(api: &Api, product: u64, qty: u32) -> String {
    let (_, hold) = api.hold(product, qty).await;
    let (status, order) = api.order(hold["hold_id"].as_str().expect("hold id")).await;
    assert_eq!(status, 201, "{order}");
    order["order_id"].as_str().expect("order id").to_owned()
}

async fn events_recorded(db: &TestDb, order_id: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT CAST(status AS CHAR), outcome FROM payment_events WHERE order_id = ? ORDER BY applied_at, outcome")
        .bind(order_id)
        .fetch_all(&db.pool)
        .await
        .expect("events")
}

async fn queue_is_drained(db: &TestDb) {
    let deadline = tokio::time::Instant::now() + SETTLED;
    loop {
        let pending: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM payment_inbox WHERE state = 'pending'")
                .fetch_one(&db.pool)
                .await
                .expect("count");
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{pending} payment events never processed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_event_pays_the_order_once_however_often_it_is_delivered() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let order_id = ordered(&api, product, 2).await;

    let (status, body) = api.pay("evt_1", &order_id, "paid").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    for _ in 0..3 {
        assert_eq!(api.pay("evt_1", &order_id, "paid").await.0, 202);
    }
    api.wait_for_order(&order_id, SETTLED, |order| order["status"] == "paid")
        .await;
    queue_is_drained(&db).await;
    assert_eq!(
        events_recorded(&db, &order_id).await,
        [("paid".into(), "paid".into())],
        "applied once, repeats left no trace"
    );
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["available_stock"].as_i64()
        ),
        (Some(2), Some(8))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_cancels_the_order_and_returns_its_units() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let order_id = ordered(&api, product, 3).await;
    assert_eq!(api.product(product).await["available_stock"], 7);

    assert_eq!(api.pay("evt_fail", &order_id, "failed").await.0, 202);
    api.wait_for_order(&order_id, SETTLED, |order| order["status"] == "cancelled")
        .await;
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["available_stock"].as_i64()
        ),
        (Some(0), Some(10))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_terminal_outcome_wins_and_later_conflicts_are_recorded() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;

    // Paid, then a conflicting failure: stays paid, units stay sold.
    let paid = ordered(&api, product, 1).await;
    assert_eq!(api.pay("evt_a1", &paid, "paid").await.0, 202);
    assert_eq!(api.pay("evt_a2", &paid, "failed").await.0, 202);
    // Failed, then a late success: stays cancelled, flagged for refund.
    let cancelled = ordered(&api, product, 2).await;
    assert_eq!(api.pay("evt_b1", &cancelled, "failed").await.0, 202);
    assert_eq!(api.pay("evt_b2", &cancelled, "paid").await.0, 202);
    queue_is_drained(&db).await;

    assert_eq!(
        api.get(&format!("/api/orders/{paid}")).await.1["status"],
        "paid"
    );
    assert_eq!(
        api.get(&format!("/api/orders/{cancelled}")).await.1["status"],
        "cancelled"
    );
    let outcomes = |events: Vec<(String, String)>| {
        events
            .into_iter()
            .map(|(_, outcome)| outcome)
            .collect::<Vec<_>>()
    };
    let mut paid_outcomes = outcomes(events_recorded(&db, &paid).await);
    paid_outcomes.sort();
    assert_eq!(paid_outcomes, ["ignored_order_paid", "paid"]);
    let mut cancelled_outcomes = outcomes(events_recorded(&db, &cancelled).await);
    cancelled_outcomes.sort();
    assert_eq!(cancelled_outcomes, ["cancelled", "refund_required"]);
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["sold_stock"].as_i64(),
            stock["available_stock"].as_i64()
        ),
        (Some(1), Some(9))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_order_apply_in_the_order_they_arrived() {
    let db = TestDb::new().await;
    // Workers off while the events arrive, so both are queued before either is processed.
    let intake = db.server_with(&[], no_background_work()).await;
    let api = Api::new(&intake);
    let product = api.create_product(10, "20.00").await;
    let order_id = ordered(&api, product, 1).await;
    assert_eq!(api.pay("evt_first", &order_id, "failed").await.0, 202);
    assert_eq!(api.pay("evt_second", &order_id, "paid").await.0, 202);

    let _workers = db.server(&[]).await;
    queue_is_drained(&db).await;
    assert_eq!(
        api.get(&format!("/api/orders/{order_id}")).await.1["status"],
        "cancelled",
        "the earlier failure won"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_event_survives_a_crash_of_the_server_that_accepted_it() {
    let db = TestDb::new().await;
    let crashing = db.server_with(&[], no_background_work()).await;
    let api = Api::new(&crashing);
    let product = api.create_product(10, "20.00").await;
    let order_id = ordered(&api, product, 1).await;
    assert_eq!(api.pay("evt_durable", &order_id, "paid").await.0, 202);
    drop(crashing);

    let restarted = db.server(&[]).await;
    Api::new(&restarted)
        .wait_for_order(&order_id, SETTLED, |order| order["status"] == "paid")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_for_an_unknown_order_is_retried_then_dead_lettered_never_dropped() {
    let db = TestDb::new().await;
    let server = db
        .server(&[
            ("PAYMENT_MAX_ATTEMPTS", "3"),
            ("PAYMENT_RETRY_BASE_MS", "20"),
        ])
        .await;
    let api = Api::new(&server);
    let unknown_order = uuid::Uuid::new_v4().to_string();
    assert_eq!(api.pay("evt_orphan", &unknown_order, "paid").await.0, 202);

    let deadline = tokio::time::Instant::now() + SETTLED;
    let (state, receive_count, last_error) = loop {
        let row: (String, u32, Option<String>) = sqlx::query_as(
            "SELECT CAST(state AS CHAR), receive_count, last_error FROM payment_inbox WHERE order_id = ?",
        )
        .bind(&unknown_order)
        .fetch_one(&db.pool)
        .await
        .expect("the event is kept");
        if row.0 != "pending" || tokio::time::Instant::now() > deadline {
            break row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (state.as_str(), receive_count),
        ("dead", 3),
        "retried to its budget, then dead-lettered"
    );
    assert_eq!(last_error.as_deref(), Some("order not found"));
    assert!(events_recorded(&db, &unknown_order).await.is_empty());
}

#[tokio::test]
async fn unsigned_forged_and_stale_webhooks_are_refused_and_nothing_is_queued() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let order_id = uuid::Uuid::new_v4().to_string();
    let body =
        json!({"idempotency_key": "evt_x", "order_id": order_id, "status": "paid"}).to_string();
    let now = chrono::Utc::now().timestamp();
    let secret = SecretString::from(WEBHOOK_SECRET.to_owned());
    let forged = shared::domain::webhook::sign(
        &SecretString::from("guess".to_owned()),
        now,
        body.as_bytes(),
    );
    let stale = shared::domain::webhook::sign(&secret, now - 301, body.as_bytes());
    let tampered = webhook_signature(&body.replace("paid", "failed"));

    for headers in [
        vec![],
        vec![("x-signature", forged.as_str())],
        vec![("x-signature", stale.as_str())],
        vec![("x-signature", tampered.as_str())],
        vec![("x-signature", "garbage")],
    ] {
        let (status, answer) = api
            .post_raw("/api/payments/webhook", body.clone(), &headers)
            .await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (401, Some("invalid_signature")),
            "{headers:?}: {answer}"
        );
    }
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_inbox")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(queued, 0);
}

/// The SQS consumer: a message that cannot be applied fails, and so does every later message
/// of its message group in the batch, so SQS redelivers them in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqs_processor_fails_a_group_from_its_first_unapplied_message_on() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], no_background_work()).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let known = ordered(&api, product, 1).await;
    let unknown = uuid::Uuid::new_v4().to_string();
    let message = |id: &str, key: &str, order: &str, status: &str| -> Value {
        json!({
            "messageId": id,
            "receiptHandle": format!("rh-{id}"),
            "body": json!({"idempotency_key": key, "order_id": order, "status": status}).to_string(),
            "attributes": {
                "MessageGroupId": order,
                "MessageDeduplicationId": key,
                "SentTimestamp": chrono::Utc::now().timestamp_millis().to_string(),
            },
            "messageAttributes": {},
            "eventSource": "aws:sqs"
        })
    };
    let batch: SqsEvent = serde_json::from_value(json!({"Records": [
        message("m1", "evt_u1", &unknown, "paid"),
        message("m2", "evt_k1", &known, "paid"),
        message("m3", "evt_u2", &unknown, "failed"),
        {"messageId": "m4", "body": "not json", "attributes": {"MessageGroupId": "poison"}},
    ]}))
    .expect("an SQS event");

    let deps = db.payment_processor();
    let response = payment_processor::handle(&deps, batch)
        .await
        .expect("batch handled");
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(failed, ["m1", "m3", "m4"]);
    assert_eq!(
        api.get(&format!("/api/orders/{known}")).await.1["status"],
        "paid"
    );
}
