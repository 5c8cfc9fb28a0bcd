//! Every file in `events/` through its function's `handle`: the samples a developer invokes with
//! `cargo lambda invoke` are the ones tested here, so they cannot drift from the code. And the
//! sweeper's handler draining the outbox of domain events to a bus that records them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use flash_sale_e2e::testing::TestDb;
use lambda_http::Body;
use secrecy::SecretString;
use serde_json::Value;
use shared::adapters::local::{InboxQueue, NoPublisher, NoScheduler};
use shared::domain::events::DomainEvent;
use shared::ports::EventPublisher;
use shared::store::expiry::ExpiryOutcome;

/// The values of `[workspace.metadata.lambda.env]`, which the sample events are written for.
const DEV_ADMIN_TOKEN: &str = "dev-admin-token";
const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret";
const DEV_ADMISSION_TOKEN_SECRET: &str = "dev-admission-token-secret";

macro_rules! event {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/",
            $name,
            ".json"
        ))
    };
}

fn request(json: &str) -> lambda_http::Request {
    lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
}

fn answer(response: lambda_http::Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = serde_json::from_slice(response.body().as_ref()).expect("a JSON body");
    (status, body)
}

/// A database with the demo product, as the local server leaves it.
async fn seeded() -> TestDb {
    let db = TestDb::new().await;
    shared::store::products::seed_demo_product(&db.pool)
        .await
        .expect("seed");
    db
}

#[tokio::test]
async fn product_events() {
    let db = seeded().await;
    let deps = get_product::Deps {
        pool: db.pool.clone(),
    };
    let (status, product) = answer(
        get_product::handle(&deps, request(event!("get-product.found")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (
            status,
            product["id"].as_u64(),
            product["total_stock"].as_u64()
        ),
        (200, Some(1), Some(100))
    );
    let (status, error) = answer(
        get_product::handle(&deps, request(event!("get-product.not-found")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("product_not_found"))
    );
    let (status, _) = answer(
        get_product::handle(&deps, request(event!("get-product.malformed-id")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 400);

    let deps = create_product::Deps {
        pool: db.pool.clone(),
        admin_token: SecretString::from(DEV_ADMIN_TOKEN.to_owned()),
    };
    let (status, created) = answer(
        create_product::handle(&deps, request(event!("create-product.created")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (
            status,
            created["price"].as_str(),
            created["available_stock"].as_u64()
        ),
        (201, Some("79.90"), Some(250))
    );
    let (status, _) = answer(
        create_product::handle(&deps, request(event!("create-product.unauthorized")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 401);
    let update = update_product::Deps {
        pool: db.pool.clone(),
        admin_token: SecretString::from(DEV_ADMIN_TOKEN.to_owned()),
    };
    let (status, error) = answer(
        update_product::handle(&update, request(event!("update-product.unauthorized")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
}

#[tokio::test]
async fn hold_and_order_events() {
    let db = seeded().await;
    let deps = create_hold::Deps {
        buyer_auth: shared::config::BuyerAuth::Jwt,
        admission_tokens: None,
        pool: db.pool.clone(),
        scheduler: Arc::new(NoScheduler),
        publisher: Arc::new(NoPublisher),
        hold_ttl: Duration::from_secs(120),
        max_hold_qty: 10,
    };
    let (status, hold) = answer(
        create_hold::handle(&deps, request(event!("create-hold.created")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, hold["qty"].as_u64(), hold["status"].as_str()),
        (201, Some(2), Some("active"))
    );
    let first = answer(
        create_hold::handle(&deps, request(event!("create-hold.idempotent")))
            .await
            .expect("ok"),
    );
    let again = answer(
        create_hold::handle(&deps, request(event!("create-hold.idempotent")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (first.0, &first.1),
        (201, &again.1),
        "the same Idempotency-Key gives the same hold"
    );
    let (status, _) = answer(
        create_hold::handle(&deps, request(event!("create-hold.too-many")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 400);
    let (status, _) = answer(
        create_hold::handle(&deps, request(event!("create-hold.unknown-product")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 404);

    let get_hold = get_hold::Deps {
        buyer_auth: shared::config::BuyerAuth::Jwt,
        pool: db.pool.clone(),
    };
    let (status, _) = answer(
        get_hold::handle(&get_hold, request(event!("get-hold.not-found")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 404);
    let release = release_hold::Deps {
        pool: db.pool.clone(),
        publisher: Arc::new(NoPublisher),
        buyer_auth: shared::config::BuyerAuth::Jwt,
    };
    let (status, error) = answer(
        release_hold::handle(&release, request(event!("release-hold.not-found")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("hold_not_found"))
    );
    let create_order = create_order::Deps {
        buyer_auth: shared::config::BuyerAuth::Jwt,
        pool: db.pool.clone(),
        scheduler: Arc::new(NoScheduler),
        publisher: Arc::new(NoPublisher),
        payment_window: shared::domain::model::PaymentWindow {
            ttl: Duration::from_secs(900),
            grace: Duration::from_secs(300),
        },
    };
    let (status, error) = answer(
        create_order::handle(&create_order, request(event!("create-order.unknown-hold")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("hold_not_found"))
    );
    let (status, error) = answer(
        create_order::handle(&create_order, request(event!("create-order.malformed")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("malformed_json"))
    );
    let get_order = get_order::Deps {
        buyer_auth: shared::config::BuyerAuth::Jwt,
        pool: db.pool.clone(),
    };
    let (status, _) = answer(
        get_order::handle(&get_order, request(event!("get-order.not-found")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 404);
}

/// The waiting room's samples, in the order a developer would invoke them: product 1 gets a
/// waiting room (its sale started in the past, so whoever joins is admitted at once), buyer-1
/// joins and reads their entry, a buyer who never joined is told so, and the summary is read.
#[tokio::test]
async fn waiting_room_events() {
    let db = seeded().await;
    let tokens = || {
        shared::domain::admission::AdmissionTokens::new(vec![SecretString::from(
            DEV_ADMISSION_TOKEN_SECRET.to_owned(),
        )])
        .expect("a secret")
    };
    let update = update_product::Deps {
        pool: db.pool.clone(),
        admin_token: SecretString::from(DEV_ADMIN_TOKEN.to_owned()),
    };
    let (status, product) = answer(
        update_product::handle(&update, request(event!("update-product.waiting-room")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, product["waiting_room"]["admission_rate"].as_u64()),
        (200, Some(10)),
        "{product}"
    );
    let join = join_queue::Deps {
        pool: db.pool.clone(),
        buyer_auth: shared::config::BuyerAuth::Jwt,
        admission_tokens: tokens(),
    };
    let (status, joined) = answer(
        join_queue::handle(&join, request(event!("join-queue.joined")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (
            status,
            joined["buyer_id"].as_str(),
            joined["status"].as_str()
        ),
        (201, Some("buyer-1"), Some("admitted")),
        "{joined}"
    );
    let (status, error) = answer(
        join_queue::handle(&join, request(event!("join-queue.unauthorized")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let entry = get_queue_entry::Deps {
        pool: db.pool.clone(),
        buyer_auth: shared::config::BuyerAuth::Jwt,
        admission_tokens: tokens(),
    };
    let (status, found) = answer(
        get_queue_entry::handle(&entry, request(event!("get-queue-entry.found")))
            .await
            .expect("ok"),
    );
    assert_eq!((status, &found["position"]), (200, &joined["position"]));
    assert!(found["admission_token"].is_string(), "{found}");
    let (status, error) = answer(
        get_queue_entry::handle(&entry, request(event!("get-queue-entry.not-in-queue")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("not_in_queue"))
    );
    let summary = get_queue_summary::Deps {
        pool: db.pool.clone(),
    };
    let (status, figures) = answer(
        get_queue_summary::handle(&summary, request(event!("get-queue-summary.found")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (
            status,
            figures["queue_length"].as_u64(),
            figures["admission_rate"].as_u64()
        ),
        (200, Some(1), Some(10)),
        "{figures}"
    );
    let (status, _) = answer(
        get_queue_summary::handle(&summary, request(event!("get-queue-summary.malformed-id")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 400);
}

#[tokio::test]
async fn webhook_events() {
    let db = seeded().await;
    let deps = payment_webhook::Deps {
        secrets: vec![SecretString::from(DEV_WEBHOOK_SECRET.to_owned())],
        tolerance: Duration::from_secs(300),
        queue: Arc::new(InboxQueue::new(db.pool.clone())),
    };
    // As captured: its signature was made long ago, so it is a replay and refused.
    let (status, error) = answer(
        payment_webhook::handle(&deps, request(event!("payment-webhook.paid")))
            .await
            .expect("ok"),
    );
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (401, Some("invalid_signature"))
    );
    let (status, _) = answer(
        payment_webhook::handle(&deps, request(event!("payment-webhook.unsigned")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 401);

    // Signed now, as the provider would send it (what events/fresh.sh does).
    let mut event: Value = serde_json::from_str(event!("payment-webhook.paid")).expect("JSON");
    let body = event["body"].as_str().expect("body").to_owned();
    let now = chrono::Utc::now().timestamp();
    let signature = shared::domain::webhook::sign(
        &SecretString::from(DEV_WEBHOOK_SECRET.to_owned()),
        now,
        body.as_bytes(),
    );
    event["headers"]["x-signature"] = Value::String(signature);
    let (status, accepted) = answer(
        payment_webhook::handle(&deps, request(&event.to_string()))
            .await
            .expect("ok"),
    );
    assert_eq!((status, accepted["status"].as_str()), (202, Some("queued")));
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_inbox")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(queued, 1);
}

#[tokio::test]
async fn queue_and_trigger_events() {
    let db = seeded().await;
    let batch: SqsEvent =
        serde_json::from_str(event!("payment-processor.batch")).expect("an SQS event");
    let deps = db.payment_processor();
    let response = payment_processor::handle(&deps, batch)
        .await
        .expect("handled");
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    // No such orders in a fresh database: every message fails, the second because the first of
    // its group did, the last because it is not JSON.
    assert_eq!(
        failed,
        [
            "0f1e2d3c-4b5a-4968-8778-695a4b3c2d1e",
            "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "3c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f"
        ]
    );

    // The sample that succeeds, given a real order (what `events/fresh.sh <file> <order id>`
    // does): two units of the demo product, 100.00, paid.
    let hold = shared::store::holds::reserve(
        &db.pool,
        &shared::store::holds::HoldRequest {
            buyer: None,
            product_id: shared::domain::ids::ProductId(1),
            qty: 2,
            idempotency_key: None,
        },
        Duration::from_secs(120),
    )
    .await
    .expect("a hold")
    .value
    .hold;
    let window = shared::domain::model::PaymentWindow {
        ttl: Duration::from_secs(900),
        grace: Duration::from_secs(300),
    };
    let order = shared::store::orders::redeem(&db.pool, &hold.hold_id, None, window)
        .await
        .expect("an order")
        .value
        .order
        .order;
    let sample_order = "9d2f8a61-7c4b-4e1a-8f3d-2b6c5e4a1f70";
    let paid: SqsEvent = serde_json::from_str(
        &event!("payment-processor.paid").replace(sample_order, order.order_id.as_str()),
    )
    .expect("an SQS event");
    let response = payment_processor::handle(&deps, paid)
        .await
        .expect("handled");
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    let paid = shared::store::orders::get_order(&db.pool, &order.order_id, None)
        .await
        .expect("the order");
    assert_eq!(paid.order.status, shared::domain::model::OrderStatus::Paid);

    let deps = hold_expiry::Deps {
        pool: db.pool.clone(),
        publisher: Arc::new(NoPublisher),
    };
    let input = serde_json::from_str(event!("hold-expiry.unknown-hold")).expect("input");
    assert_eq!(
        hold_expiry::handle(&deps, input)
            .await
            .expect("handled")
            .outcome,
        ExpiryOutcome::NotFound
    );
    let input = serde_json::from_str(event!("hold-expiry.malformed")).expect("input");
    assert_eq!(
        hold_expiry::handle(&deps, input)
            .await
            .expect_err("refused")
            .code(),
        "invalid_request"
    );

    let deps = order_expiry::Deps {
        pool: db.pool.clone(),
        publisher: Arc::new(NoPublisher),
    };
    let input = serde_json::from_str(event!("order-expiry.unknown-order")).expect("input");
    assert_eq!(
        order_expiry::handle(&deps, input)
            .await
            .expect("handled")
            .outcome,
        ExpiryOutcome::NotFound
    );

    // The sweeper ignores what its schedule sends, but the sample must be a valid scheduled event.
    let _: aws_lambda_events::event::eventbridge::EventBridgeEvent<Value> =
        serde_json::from_str(event!("sweeper.scheduled")).expect("a scheduled event");
    let deps = db.sweeper(Arc::new(NoPublisher));
    let report = sweeper::handle(&deps).await.expect("swept");
    assert_eq!(report.settled.holds_expired, 0);
}

#[tokio::test]
async fn reconcile_events() {
    let db = seeded().await;
    let deps = reconcile::Deps {
        pool: db.pool.clone(),
    };
    for sample in [event!("reconcile.check"), event!("reconcile.repair")] {
        let input: reconcile::Request = serde_json::from_str(sample).expect("a reconcile request");
        let report = reconcile::handle(&deps, input).await.expect("reconciled");
        assert_eq!(report.buckets_checked, 1, "the demo product's one bucket");
        assert_eq!(report.unresolved(), 0);
    }
    let repair: reconcile::Request =
        serde_json::from_str(event!("reconcile.repair")).expect("a reconcile request");
    assert!(repair.repair);
}

/// The `$default` route's samples: an unknown path, and a route's path with a method it lacks.
#[tokio::test]
async fn unmatched_route_events() {
    let response = unmatched_route::handle(request(event!("unmatched-route.not-found")))
        .await
        .expect("ok");
    let (status, error) = answer(response);
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (404, Some("route_not_found"))
    );

    let response = unmatched_route::handle(request(event!("unmatched-route.method-not-allowed")))
        .await
        .expect("ok");
    assert_eq!(
        response
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok()),
        Some("GET, DELETE")
    );
    let (status, error) = answer(response);
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

/// An event bus that records every event offered to it and refuses the ids in `refused`.
#[derive(Default)]
struct RecordingBus {
    refused: HashSet<String>,
    offered: Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl EventPublisher for RecordingBus {
    async fn publish(&self, events: &[DomainEvent]) -> Result<Vec<String>, shared::Error> {
        let ids: Vec<String> = events.iter().map(|event| event.id.clone()).collect();
        self.offered
            .lock()
            .expect("not poisoned")
            .extend(ids.iter().cloned());
        Ok(ids
            .into_iter()
            .filter(|id| !self.refused.contains(id))
            .collect())
    }
}

impl RecordingBus {
    /// How many times each event was offered.
    fn offers(&self) -> HashMap<String, usize> {
        let mut offers = HashMap::new();
        for id in self.offered.lock().expect("not poisoned").iter() {
            *offers.entry(id.clone()).or_default() += 1;
        }
        offers
    }
}

/// `count` unpublished `HoldExpired` events, as create-hold's slow path leaves them in a
/// sold-out spike (its Lambda has no bus), written in one statement. They share timestamps in
/// runs of 300, so pages of 500 end inside a run of equal `created_at`.
async fn unpublished_events(db: &TestDb, count: usize) -> Vec<String> {
    let ids: Vec<String> = (0..count)
        .map(|_| uuid::Uuid::new_v4().hyphenated().to_string())
        .collect();
    let mut insert =
        sqlx::QueryBuilder::new("INSERT INTO outbox_events (id, event_type, detail, created_at) ");
    insert.push_values(ids.iter().enumerate(), |mut row, (n, id)| {
        let detail =
            serde_json::json!({"event_id": id, "hold_id": uuid::Uuid::new_v4().to_string()});
        row.push_bind(id)
            .push_bind("HoldExpired")
            .push_bind(detail.to_string())
            .push("UTC_TIMESTAMP(3) - INTERVAL ")
            .push_bind_unseparated((count / 300 - n / 300) as i64)
            .push_unseparated(" SECOND");
    });
    insert
        .build()
        .execute(&db.pool)
        .await
        .expect("write the outbox");
    ids
}

async fn unpublished(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events WHERE published_at IS NULL")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

/// A sold-out spike leaves thousands of events in the outbox: one sweep publishes them all,
/// each once, rather than 500 a minute.
#[tokio::test]
async fn one_sweep_drains_an_outbox_of_2000_events_publishing_each_once() {
    let db = TestDb::new().await;
    let ids = unpublished_events(&db, 2_000).await;
    let bus = Arc::new(RecordingBus::default());

    let report = sweeper::handle(&db.sweeper(bus.clone()))
        .await
        .expect("swept");

    assert_eq!(report.events_republished, 2_000);
    let offers = bus.offers();
    assert_eq!(offers.len(), 2_000, "every event was published");
    assert!(
        ids.iter().all(|id| offers.get(id) == Some(&1)),
        "each exactly once"
    );
    assert_eq!(unpublished(&db).await, 0, "nothing left in the outbox");
}

/// Events the bus refuses stay unpublished, and the drain goes past them (by `created_at`, `id`)
/// instead of reading them again and again; a bus refusing everything gets one page a run.
#[tokio::test]
async fn events_the_bus_refuses_stay_unpublished_without_stopping_the_drain() {
    let db = TestDb::new().await;
    let ids = unpublished_events(&db, 2_000).await;
    let refused: HashSet<String> = ids.iter().step_by(7).cloned().collect();
    let bus = Arc::new(RecordingBus {
        refused: refused.clone(),
        ..RecordingBus::default()
    });

    let report = sweeper::handle(&db.sweeper(bus.clone()))
        .await
        .expect("swept");

    assert_eq!(report.events_republished, 2_000 - refused.len());
    let offers = bus.offers();
    assert_eq!(offers.len(), 2_000, "every event was offered");
    assert!(offers.values().all(|&n| n == 1), "each once, in one run");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT id FROM outbox_events WHERE published_at IS NULL")
            .fetch_all(&db.pool)
            .await
            .expect("unpublished ids");
    assert_eq!(left.into_iter().collect::<HashSet<_>>(), refused);

    // The next run offers them again, and only them.
    let bus = Arc::new(RecordingBus {
        refused: refused.clone(),
        ..RecordingBus::default()
    });
    let report = sweeper::handle(&db.sweeper(bus.clone()))
        .await
        .expect("swept");
    assert_eq!(report.events_republished, 0);
    assert_eq!(bus.offers().into_keys().collect::<HashSet<_>>(), refused);

    // A bus that refuses every event (down, or none configured) gets one page, not the outbox.
    let all: HashSet<String> = ids.iter().cloned().collect();
    sqlx::query("UPDATE outbox_events SET published_at = NULL")
        .execute(&db.pool)
        .await
        .expect("unpublish");
    let bus = Arc::new(RecordingBus {
        refused: all,
        ..RecordingBus::default()
    });
    let report = sweeper::handle(&db.sweeper(bus.clone()))
        .await
        .expect("swept");
    assert_eq!(report.events_republished, 0);
    assert_eq!(bus.offers().len(), 500);
    assert_eq!(unpublished(&db).await, 2_000);
}
