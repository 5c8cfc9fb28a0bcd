//! Every request path as the application user the migrate function provisions: each through its
//! own function's `handle`, on a pool logged in with that user's name and password, after migrate
//! ran as the master user (here the tests' root). The local server cannot run as that user: it
//! creates and migrates its database.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use flash_sale_e2e::testing::TestDb;
use lambda_http::Body;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::adapters::local::{InboxQueue, NoPublisher, NoScheduler};
use shared::config::BuyerAuth;
use shared::store::expiry::ExpiryOutcome;

use super::app_user::{Account, migrate_with};

/// The values of `[workspace.metadata.lambda.env]`, which the sample events are written for.
const DEV_ADMIN_TOKEN: &str = "dev-admin-token";
const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret";
/// The ids the samples name, replaced by real ones.
const SAMPLE_HOLD: &str = "5b0e7c4e-3f55-4b7e-9a57-0f9b6a1d2c3e";
const SAMPLE_ORDER: &str = "9d2f8a61-7c4b-4e1a-8f3d-2b6c5e4a1f70";

macro_rules! sample {
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

#[tokio::test]
async fn the_application_user_runs_every_request_path() {
    let db = TestDb::not_created();
    shared::store::db::create_database_if_missing(&db.url)
        .await
        .expect("an empty database");
    let account = Account::new(&db);
    migrate_with(&db, &account, account.with("Pw-1-app", false), "Create").await;
    shared::store::products::seed_demo_product(&db.pool)
        .await
        .expect("the demo product");
    let app = account.pool(&db, "Pw-1-app");

    let get_product = get_product::Deps { pool: app.clone() };
    let (status, _) = answer(
        get_product::handle(&get_product, request(sample!("get-product.found")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 200);
    let create_product = create_product::Deps {
        pool: app.clone(),
        admin_token: SecretString::from(DEV_ADMIN_TOKEN.to_owned()),
    };
    let (status, created) = answer(
        create_product::handle(&create_product, request(sample!("create-product.created")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 201, "{created}");

    let hold_deps = |ttl: Duration| create_hold::Deps {
        buyer_auth: BuyerAuth::Jwt,
        admission_tokens: None,
        pool: app.clone(),
        scheduler: Arc::new(NoScheduler),
        publisher: Arc::new(NoPublisher),
        hold_ttl: ttl,
        max_hold_qty: 10,
    };
    let hold = |deps: create_hold::Deps| async move {
        let (status, hold) = answer(
            create_hold::handle(&deps, request(sample!("create-hold.created")))
                .await
                .expect("ok"),
        );
        assert_eq!(status, 201, "{hold}");
        hold["hold_id"].as_str().expect("a hold id").to_owned()
    };
    // The hold goes through the reserve_hold procedure: EXECUTE is all the user has on it.
    let redeemed = hold(hold_deps(Duration::from_secs(120))).await;
    let get_hold = get_hold::Deps {
        buyer_auth: BuyerAuth::Jwt,
        pool: app.clone(),
    };
    let (status, _) = answer(
        get_hold::handle(
            &get_hold,
            request(&sample!("get-hold.not-found").replace(SAMPLE_HOLD, &redeemed)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 200);
    let create_order = create_order::Deps {
        buyer_auth: BuyerAuth::Jwt,
        pool: app.clone(),
        scheduler: Arc::new(NoScheduler),
        publisher: Arc::new(NoPublisher),
        payment_window: shared::domain::model::PaymentWindow {
            ttl: Duration::from_secs(900),
            grace: Duration::from_secs(300),
        },
    };
    let (status, order) = answer(
        create_order::handle(
            &create_order,
            request(&sample!("create-order.unknown-hold").replace(SAMPLE_HOLD, &redeemed)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("an order id").to_owned();
    let get_order = get_order::Deps {
        buyer_auth: BuyerAuth::Jwt,
        pool: app.clone(),
    };
    let (status, _) = answer(
        get_order::handle(
            &get_order,
            request(&sample!("get-order.not-found").replace(SAMPLE_ORDER, &order_id)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 200);
    let processor = payment_processor::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
        max_attempts: 10,
    };
    let paid: SqsEvent =
        serde_json::from_str(&sample!("payment-processor.paid").replace(SAMPLE_ORDER, &order_id))
            .expect("an SQS event");
    let response = payment_processor::handle(&processor, paid)
        .await
        .expect("handled");
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    let order_expiry = order_expiry::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
    };
    let input = serde_json::from_value(json!({"order_id": order_id})).expect("input");
    let outcome = order_expiry::handle(&order_expiry, input)
        .await
        .expect("handled")
        .outcome;
    assert_eq!(outcome, ExpiryOutcome::AlreadySettled, "the order is paid");

    let released = hold(hold_deps(Duration::from_secs(120))).await;
    let release = release_hold::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
        buyer_auth: BuyerAuth::Jwt,
    };
    let (status, body) = answer(
        release_hold::handle(
            &release,
            request(&sample!("release-hold.not-found").replace(SAMPLE_HOLD, &released)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 200, "{body}");

    let lapsed = hold(hold_deps(Duration::from_millis(1))).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let hold_expiry = hold_expiry::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
    };
    let input = serde_json::from_value(json!({"hold_id": lapsed})).expect("input");
    let outcome = hold_expiry::handle(&hold_expiry, input)
        .await
        .expect("handled")
        .outcome;
    assert_eq!(outcome, ExpiryOutcome::Expired);

    // The webhook's database inbox (no queue), drained by the sweeper.
    let webhook = payment_webhook::Deps {
        secrets: vec![SecretString::from(DEV_WEBHOOK_SECRET.to_owned())],
        tolerance: Duration::from_secs(300),
        queue: Arc::new(InboxQueue::new(app.clone())),
    };
    let mut signed: Value =
        serde_json::from_str(&sample!("payment-webhook.paid").replace(SAMPLE_ORDER, &order_id))
            .expect("JSON");
    let body = signed["body"].as_str().expect("a body").to_owned();
    signed["headers"]["x-signature"] = Value::String(shared::domain::webhook::sign(
        &SecretString::from(DEV_WEBHOOK_SECRET.to_owned()),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    ));
    let (status, _) = answer(
        payment_webhook::handle(&webhook, request(&signed.to_string()))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 202);
    let sweeper = sweeper::Deps {
        pool: app.clone(),
        ..db.sweeper(Arc::new(NoPublisher))
    };
    sweeper::handle(&sweeper).await.expect("swept");
    let reconcile = reconcile::Deps { pool: app.clone() };
    let repair: reconcile::Request =
        serde_json::from_str(sample!("reconcile.repair")).expect("a reconcile request");
    let report = reconcile::handle(&reconcile, repair)
        .await
        .expect("reconciled");
    assert_eq!(report.unresolved(), 0);

    let update_product = update_product::Deps {
        pool: app.clone(),
        admin_token: SecretString::from(DEV_ADMIN_TOKEN.to_owned()),
    };
    let mut update: Value =
        serde_json::from_str(sample!("update-product.unauthorized")).expect("JSON");
    update["headers"]["authorization"] = json!(format!("Bearer {DEV_ADMIN_TOKEN}"));
    let (status, body) = answer(
        update_product::handle(&update_product, request(&update.to_string()))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 200, "{body}");
}
