//! The AWS side effects over the wire, through the real AWS SDK, against a local emulator
//! (moto_server): EventBridge Scheduler triggers, the SQS FIFO webhook pipeline and domain
//! events on EventBridge.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_eventbridge::Client as EventBridge;
use aws_sdk_scheduler::Client as Scheduler;
use aws_sdk_sqs::Client as Sqs;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use flash_sale_e2e::testing::{Api, Moto, TestDb};
use flash_sale_local::{LocalServer, Options};
use serde_json::{Value, json};
use shared::adapters::aws::eventbridge::EventBridgePublisher;

const GROUP: &str = "flash-sale-holds";
const ROLE: &str = "arn:aws:iam::123456789012:role/flash-sale-scheduler";
const HOLD_EXPIRY: &str = "arn:aws:lambda:us-east-1:123456789012:function:hold-expiry";
const ORDER_EXPIRY: &str = "arn:aws:lambda:us-east-1:123456789012:function:order-expiry";
const SETTLED: Duration = Duration::from_secs(20);

async fn server(
    db: &TestDb,
    moto: &Moto,
    vars: &[(&str, &str)],
    background_work: bool,
) -> LocalServer {
    let options = Options {
        background_work,
        aws: Some(moto.sdk_config().await),
    };
    db.server_with(vars, options).await
}

fn scheduler_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("HOLD_SCHEDULE_GROUP", GROUP),
        ("SCHEDULER_ROLE_ARN", ROLE),
        ("HOLD_EXPIRY_FUNCTION_ARN", HOLD_EXPIRY),
        ("ORDER_EXPIRY_FUNCTION_ARN", ORDER_EXPIRY),
    ]
}

/// `2026-11-21T12:02:00.120Z` -> `at(2026-11-21T12:02:01)`: the schedule is never due early.
fn expected_at(rfc3339: &str) -> String {
    let at = chrono::DateTime::parse_from_rfc3339(rfc3339)
        .expect("RFC 3339")
        .naive_utc();
    shared::adapters::aws::scheduler::at_expression(at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_gets_a_one_time_expiry_schedule_and_redeeming_replaces_it_with_the_payment_deadline()
 {
    let moto = Moto::start().await.expect("moto_server starts");
    let scheduler = Scheduler::new(&moto.sdk_config().await);
    scheduler
        .create_schedule_group()
        .name(GROUP)
        .send()
        .await
        .expect("group");
    let db = TestDb::new().await;
    let server = server(&db, &moto, &scheduler_vars(), true).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;

    let (status, hold) = api.hold(product, 2).await;
    assert_eq!(status, 201, "{hold}");
    let hold_id = hold["hold_id"].as_str().expect("id");
    let schedule = scheduler
        .get_schedule()
        .name(format!("hold-{hold_id}"))
        .group_name(GROUP)
        .send()
        .await
        .expect("the hold's schedule exists");
    assert_eq!(
        schedule.schedule_expression(),
        Some(expected_at(hold["expires_at"].as_str().expect("expires_at")).as_str())
    );
    assert_eq!(schedule.schedule_expression_timezone(), Some("UTC"));
    assert_eq!(
        schedule.flexible_time_window().map(|w| w.mode().as_str()),
        Some("OFF")
    );
    assert_eq!(
        schedule.action_after_completion().map(|a| a.as_str()),
        Some("DELETE")
    );
    let target = schedule.target().expect("target");
    assert_eq!((target.arn(), target.role_arn()), (HOLD_EXPIRY, ROLE));
    let input: Value = serde_json::from_str(target.input().expect("input")).expect("JSON input");
    assert_eq!(input, json!({"hold_id": hold_id}));
    let retry = target.retry_policy().expect("a retry policy");
    assert!(retry.maximum_retry_attempts().is_some_and(|n| n > 0));

    let (status, order) = api.order(hold_id).await;
    assert_eq!(status, 201, "{order}");
    let deleted = scheduler
        .get_schedule()
        .name(format!("hold-{hold_id}"))
        .group_name(GROUP)
        .send()
        .await;
    assert!(
        deleted
            .expect_err("deleted on redeem")
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())
    );
    let order_id = order["order_id"].as_str().expect("id");
    let deadline = scheduler
        .get_schedule()
        .name(format!("order-{order_id}"))
        .group_name(GROUP)
        .send()
        .await
        .expect("the order's payment deadline schedule exists");
    // The trigger fires when the order lapses: its payment deadline plus the grace in which a
    // payment received in time may still be applied (PAYMENT_GRACE_SECONDS, 300 by default).
    let due = chrono::DateTime::parse_from_rfc3339(order["payment_due_at"].as_str().expect("due"))
        .expect("RFC 3339");
    let cancel_at = (due + chrono::Duration::seconds(300)).naive_utc();
    assert_eq!(
        deadline.schedule_expression(),
        Some(shared::adapters::aws::scheduler::at_expression(cancel_at).as_str())
    );
    let target = deadline.target().expect("target");
    assert_eq!(target.arn(), ORDER_EXPIRY);
    assert_eq!(
        serde_json::from_str::<Value>(target.input().expect("input")).expect("JSON"),
        json!({"order_id": order_id})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_down_never_fails_a_hold_or_an_order() {
    let moto = Moto::start().await.expect("moto_server starts");
    let db = TestDb::new().await;
    let server = server(&db, &moto, &scheduler_vars(), false).await;
    // Scheduler is down: every CreateSchedule and DeleteSchedule fails to connect.
    drop(moto);
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;
    let (status, hold) = api.hold(product, 3).await;
    assert_eq!(status, 201, "{hold}");
    assert_eq!(api.product(product).await["reserved_stock"], 3);
    let (status, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
    assert_eq!(status, 201, "{order}");
}

async fn queue_arn(sqs: &Sqs, queue_url: &str) -> String {
    sqs.get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("attributes")
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .expect("arn")
}

async fn fifo_queue_with_dead_letters(sqs: &Sqs, max_receive_count: u32) -> (String, String) {
    let dlq = sqs
        .create_queue()
        .queue_name("payments-dlq.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("dlq");
    let dlq_url = dlq.queue_url().expect("url").to_owned();
    let dlq_arn = queue_arn(sqs, &dlq_url).await;
    let redrive =
        json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count.to_string()});
    let queue = sqs
        .create_queue()
        .queue_name("payments.fifo")
        .attributes(QueueAttributeName::FifoQueue, "true")
        // Failed messages come back at once: the test need not wait out a visibility timeout.
        .attributes(QueueAttributeName::VisibilityTimeout, "0")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .expect("queue");
    (queue.queue_url().expect("url").to_owned(), dlq_url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_sends_to_the_fifo_queue_grouped_by_order_and_deduplicated_by_key() {
    let moto = Moto::start().await.expect("moto_server starts");
    let sqs = Sqs::new(&moto.sdk_config().await);
    let (queue_url, _) = fifo_queue_with_dead_letters(&sqs, 3).await;
    let db = TestDb::new().await;
    // No poller: the messages stay in the queue for the test to read.
    let server = server(&db, &moto, &[("WEBHOOK_QUEUE_URL", &queue_url)], false).await;
    let api = Api::new(&server);
    let order_id = uuid::Uuid::new_v4().to_string();

    assert_eq!(api.pay("evt_42", &order_id, "paid").await.0, 202);
    assert_eq!(
        api.pay("evt_42", &order_id, "paid").await.0,
        202,
        "a provider retry is accepted too"
    );

    let received = sqs
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .expect("receive");
    let messages = received.messages();
    assert_eq!(
        messages.len(),
        1,
        "SQS deduplicated the retry: {messages:?}"
    );
    let message = &messages[0];
    let mut body: Value = serde_json::from_str(message.body().expect("body")).expect("JSON");
    let received_at = body["received_at"].take();
    let received_at = chrono::DateTime::parse_from_rfc3339(received_at.as_str().expect("a time"))
        .expect("RFC 3339");
    let age = chrono::Utc::now().signed_duration_since(received_at);
    assert!(
        (0..10_000).contains(&age.num_milliseconds()),
        "the webhook's receipt time travels with the event: {received_at}"
    );
    assert_eq!(
        body,
        json!({"idempotency_key": "evt_42", "order_id": order_id, "status": "paid", "received_at": null})
    );
    let attributes = message.attributes().expect("attributes");
    assert_eq!(
        attributes.get(&MessageSystemAttributeName::MessageGroupId),
        Some(&order_id)
    );
    assert_eq!(
        attributes.get(&MessageSystemAttributeName::MessageDeduplicationId),
        Some(&shared::adapters::aws::sqs::deduplication_id("evt_42"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_refuses_the_message_makes_the_webhook_answer_503() {
    let moto = Moto::start().await.expect("moto_server starts");
    let db = TestDb::new().await;
    let missing = format!("{}/123456789012/no-such-queue.fifo", moto.endpoint);
    let server = server(&db, &moto, &[("WEBHOOK_QUEUE_URL", &missing)], false).await;
    let api = Api::new(&server);
    let (status, body) = api
        .pay("evt_1", &uuid::Uuid::new_v4().to_string(), "paid")
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("service_unavailable")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sqs_pipeline_applies_events_in_order_and_dead_letters_what_it_cannot_apply() {
    let moto = Moto::start().await.expect("moto_server starts");
    let sqs = Sqs::new(&moto.sdk_config().await);
    let (queue_url, dlq_url) = fifo_queue_with_dead_letters(&sqs, 2).await;
    let db = TestDb::new().await;
    let vars = [("WEBHOOK_QUEUE_URL", queue_url.as_str())];
    // Take the events in while nothing consumes them, so both of an order's are queued first.
    let intake = server(&db, &moto, &vars, false).await;
    let api = Api::new(&intake);
    let product = api.create_product(10, "20.00").await;
    let (_, hold) = api.hold(product, 2).await;
    let (_, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
    let order_id = order["order_id"].as_str().expect("id");
    let orphan = uuid::Uuid::new_v4().to_string();
    assert_eq!(api.pay("evt_fail", order_id, "failed").await.0, 202);
    assert_eq!(api.pay("evt_paid", order_id, "paid").await.0, 202);
    assert_eq!(api.pay("evt_orphan", &orphan, "paid").await.0, 202);
    sqs.send_message()
        .queue_url(&queue_url)
        .message_body("not json")
        .message_group_id("poison")
        .message_deduplication_id("poison")
        .send()
        .await
        .expect("send poison");

    let _consumer = server(&db, &moto, &vars, true).await;
    api.wait_for_order(order_id, SETTLED, |order| order["status"] == "cancelled")
        .await;
    let deadline = tokio::time::Instant::now() + SETTLED;
    let mut dead = Vec::new();
    while dead.len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead letters so far: {dead:?}"
        );
        let received = sqs
            .receive_message()
            .queue_url(&dlq_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("dlq");
        dead.extend(
            received
                .messages()
                .iter()
                .filter_map(|m| m.body().map(str::to_owned)),
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    dead.sort();
    assert_eq!(dead[0], "not json");
    assert!(dead[1].contains(&orphan), "{dead:?}");
    // The earlier failure won; the later `paid` found a cancelled order and was flagged for refund.
    let outcomes: Vec<String> = sqlx::query_scalar(
        "SELECT outcome FROM payment_events WHERE order_id = ? ORDER BY outcome",
    )
    .bind(order_id)
    .fetch_all(&db.pool)
    .await
    .expect("outcomes");
    assert_eq!(outcomes, ["cancelled", "refund_required"]);
    assert_eq!(api.product(product).await["available_stock"], 10);
}

/// A bus whose events all land in a queue the test reads.
async fn bus_with_sink(moto: &Moto, bus: &str) -> (Sqs, String) {
    let config = moto.sdk_config().await;
    let (events, sqs) = (EventBridge::new(&config), Sqs::new(&config));
    events
        .create_event_bus()
        .name(bus)
        .send()
        .await
        .expect("bus");
    let sink = sqs
        .create_queue()
        .queue_name(format!("{bus}-sink"))
        .send()
        .await
        .expect("sink");
    let sink_url = sink.queue_url().expect("url").to_owned();
    let sink_arn = queue_arn(&sqs, &sink_url).await;
    events
        .put_rule()
        .name("everything")
        .event_bus_name(bus)
        .event_pattern(json!({"source": ["flash-sale"]}).to_string())
        .send()
        .await
        .expect("rule");
    let target = aws_sdk_eventbridge::types::Target::builder()
        .id("sink")
        .arn(sink_arn)
        .build()
        .expect("target");
    events
        .put_targets()
        .rule("everything")
        .event_bus_name(bus)
        .targets(target)
        .send()
        .await
        .expect("target");
    (sqs, sink_url)
}

/// Every event delivered to the sink so far, as (detail-type, detail).
async fn delivered(sqs: &Sqs, sink_url: &str, expected: usize) -> Vec<(String, Value)> {
    let deadline = tokio::time::Instant::now() + SETTLED;
    let mut events = Vec::new();
    while events.len() < expected {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events delivered so far: {events:?}"
        );
        let received = sqs
            .receive_message()
            .queue_url(sink_url)
            .max_number_of_messages(10)
            .send()
            .await
            .expect("sink");
        for message in received.messages() {
            let envelope: Value =
                serde_json::from_str(message.body().expect("body")).expect("JSON");
            assert_eq!(envelope["source"], "flash-sale");
            events.push((
                envelope["detail-type"].as_str().expect("type").to_owned(),
                envelope["detail"].clone(),
            ));
        }
    }
    events
}

async fn outbox(db: &TestDb) -> Vec<(String, String, Option<chrono::NaiveDateTime>)> {
    sqlx::query_as(
        "SELECT id, event_type, published_at FROM outbox_events ORDER BY created_at, event_type",
    )
    .fetch_all(&db.pool)
    .await
    .expect("outbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn domain_events_reach_eventbridge_exactly_as_recorded_in_the_outbox() {
    let moto = Moto::start().await.expect("moto_server starts");
    let (sqs, sink_url) = bus_with_sink(&moto, "flash-sale").await;
    let db = TestDb::new().await;
    let server = server(&db, &moto, &[("EVENT_BUS_NAME", "flash-sale")], true).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let (_, hold) = api.hold(product, 2).await;
    let (_, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
    let order_id = order["order_id"].as_str().expect("id");
    assert_eq!(api.pay("evt_ok", order_id, "paid").await.0, 202);
    api.wait_for_order(order_id, SETTLED, |order| order["status"] == "paid")
        .await;

    let mut events = delivered(&sqs, &sink_url, 2).await;
    events.sort_by(|a, b| a.0.cmp(&b.0));
    let recorded = outbox(&db).await;
    assert_eq!(recorded.len(), 2);
    assert!(
        recorded.iter().all(|(_, _, published)| published.is_some()),
        "{recorded:?}"
    );
    let (created, paid) = (&events[0], &events[1]);
    assert_eq!(created.0, "OrderCreated");
    assert_eq!(created.1["order_id"], order_id);
    assert_eq!(
        (created.1["qty"].as_u64(), created.1["amount"].as_str()),
        (Some(2), Some("40.00"))
    );
    assert_eq!(paid.0, "OrderPaid");
    assert_eq!(paid.1["idempotency_key"], "evt_ok");
    for (event_type, detail) in &events {
        let id = detail["event_id"].as_str().expect("event_id");
        assert!(
            recorded
                .iter()
                .any(|(rid, rtype, _)| rid == id && rtype == event_type),
            "{id} {event_type} in {recorded:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_the_bus_refused_stay_in_the_outbox_until_the_sweeper_publishes_them() {
    let moto = Moto::start().await.expect("moto_server starts");
    let (sqs, sink_url) = bus_with_sink(&moto, "flash-sale").await;
    let db = TestDb::new().await;
    let server = server(&db, &moto, &[("EVENT_BUS_NAME", "no-such-bus")], false).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let (_, hold) = api.hold(product, 1).await;
    let (status, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
    assert_eq!(
        status, 201,
        "a publish failure never fails the order: {order}"
    );
    let recorded = outbox(&db).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(
        (recorded[0].1.as_str(), recorded[0].2),
        ("OrderCreated", None)
    );

    let bus = EventBridgePublisher::new(
        EventBridge::new(&moto.sdk_config().await),
        "flash-sale".into(),
    );
    let sweeper = db.sweeper(Arc::new(bus));
    let report = sweeper::handle(&sweeper).await.expect("sweep");
    assert_eq!(report.events_republished, 1);
    let events = delivered(&sqs, &sink_url, 1).await;
    assert_eq!(events[0].0, "OrderCreated");
    assert_eq!(
        events[0].1["event_id"], recorded[0].0,
        "the same id as recorded"
    );
    assert!(outbox(&db).await[0].2.is_some(), "now marked published");
    assert_eq!(
        sweeper::handle(&sweeper)
            .await
            .expect("sweep")
            .events_republished,
        0
    );
}

/// A scheduler that answers only after a minute: an AWS call hanging on a bad connection.
struct HangingScheduler;

#[async_trait::async_trait]
impl shared::ports::DeadlineScheduler for HangingScheduler {
    async fn schedule(
        &self,
        _deadline: &shared::domain::deadline::Deadline,
        _at: chrono::NaiveDateTime,
    ) -> Result<(), shared::Error> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }

    async fn cancel(
        &self,
        _deadline: &shared::domain::deadline::Deadline,
    ) -> Result<(), shared::Error> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
}

fn api_request(method: &str, path: &str, body: Value) -> lambda_http::Request {
    lambda_http::http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(lambda_http::Body::Text(body.to_string()))
        .expect("a request")
}

/// A hold or order that committed is answered as committed, however long the side effects after
/// the commit would take: they have a budget of their own, apart from the request's deadline
/// (a 503 for a committed hold would make a client without an Idempotency-Key reserve twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_hold_or_order_is_answered_when_the_scheduler_hangs() {
    let db = TestDb::new().await;
    let product = shared::store::products::create_product(
        &db.pool,
        &shared::store::products::NewProduct {
            name: "Slow side effects".into(),
            price: shared::domain::money::Cents(500),
            stock: 10,
            buckets: 1,
            sale: Default::default(),
            waiting_room: None,
        },
    )
    .await
    .expect("product");
    let scheduler: Arc<dyn shared::ports::DeadlineScheduler> = Arc::new(HangingScheduler);
    let holds = create_hold::Deps {
        buyer_auth: shared::config::BuyerAuth::None,
        admission_tokens: None,
        pool: db.pool.clone(),
        scheduler: scheduler.clone(),
        publisher: Arc::new(shared::adapters::local::NoPublisher),
        hold_ttl: Duration::from_secs(120),
        max_hold_qty: 10,
    };
    let started = std::time::Instant::now();
    let response = create_hold::handle(
        &holds,
        api_request(
            "POST",
            "/api/holds",
            json!({"product_id": product.id, "qty": 2}),
        ),
    )
    .await
    .expect("a response");
    let answered_in = started.elapsed();
    assert_eq!(response.status(), 201);
    assert!(
        answered_in < shared::http::REQUEST_DEADLINE,
        "answered in {answered_in:?}, not within the side effects' budget"
    );
    let hold: Value = serde_json::from_slice(response.body().as_ref()).expect("JSON");
    let reserved: i64 = sqlx::query_scalar(
        "SELECT CAST(SUM(reserved_stock) AS SIGNED) FROM stock_buckets WHERE product_id = ?",
    )
    .bind(product.id.0)
    .fetch_one(&db.pool)
    .await
    .expect("reserved");
    assert_eq!(reserved, 2, "exactly the one hold answered");

    let orders = create_order::Deps {
        buyer_auth: shared::config::BuyerAuth::None,
        pool: db.pool.clone(),
        scheduler,
        publisher: Arc::new(shared::adapters::local::NoPublisher),
        payment_window: shared::domain::model::PaymentWindow {
            ttl: Duration::from_secs(900),
            grace: Duration::from_secs(300),
        },
    };
    let started = std::time::Instant::now();
    let response = create_order::handle(
        &orders,
        api_request("POST", "/api/orders", json!({"hold_id": hold["hold_id"]})),
    )
    .await
    .expect("a response");
    assert_eq!(response.status(), 201);
    assert!(started.elapsed() < shared::http::REQUEST_DEADLINE);
}
