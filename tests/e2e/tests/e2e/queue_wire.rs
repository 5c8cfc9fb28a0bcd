//! What a waiting room costs the database, counted on the wire: a join is one command, an entry
//! read one, a hold of a waiting-room product without a valid token none at all (once the
//! function knows the product has a waiting room), and one with a token the hold's own `CALL`.

use std::sync::Arc;

use flash_sale_e2e::testing::{TestDb, test_config};
use flash_sale_local::wire::{WireCounter, WireCounts};
use secrecy::ExposeSecret;
use serde_json::json;
use shared::adapters::local::{NoPublisher, NoScheduler};
use shared::config::BuyerAuth;
use shared::domain::ids::BuyerId;
use shared::domain::model::SaleTerms;
use shared::domain::money::Cents;
use shared::domain::waiting_room::WaitingRoom;
use shared::store::pool::Pool;
use shared::store::products::NewProduct;
use sqlx::Connection as _;

use super::wire::{answer, gateway_as};

/// A product of 100 units whose sale starts at `starts`, behind a waiting room admitting `rate` a
/// second for 5 minutes each.
async fn queued_product(
    db: &TestDb,
    starts: chrono::NaiveDateTime,
    rate: u32,
) -> shared::domain::model::Product {
    let new = NewProduct {
        name: "Queued".into(),
        price: Cents(1000),
        stock: 100,
        buckets: 1,
        sale: SaleTerms {
            sale_starts_at: Some(starts),
            ..Default::default()
        },
        waiting_room: Some(WaitingRoom {
            admission_rate: rate,
            admission_ttl_seconds: 300,
        }),
    };
    shared::store::products::create_product(&db.pool, &new)
        .await
        .expect("a product")
}

/// What `operation` sent once its connection is back in its pool.
async fn sent<T>(
    wire: &WireCounter,
    pool: &Pool,
    operation: impl Future<Output = T>,
) -> (T, WireCounts) {
    wire.take();
    let output = operation.await;
    while !pool.is_idle() {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    (output, wire.take())
}

#[tokio::test]
async fn a_join_and_an_entry_read_are_one_command_and_a_hold_without_a_valid_token_none() {
    let db = TestDb::new().await;
    let product = queued_product(
        &db,
        chrono::Utc::now().naive_utc() - chrono::Duration::seconds(60),
        1000,
    )
    .await;
    let id = product.id.0;
    let wire = WireCounter::in_front_of(db.url.expose_secret())
        .await
        .expect("a wire counter");
    // A product read is kept a minute: the counts below do not depend on how fast this runs.
    let config = test_config(
        &wire.url(db.url.expose_secret()),
        &[("PRODUCT_READ_MAX_AGE_MS", "60000")],
    );
    let pool = || {
        let options = shared::store::db::connect_options(&config.database.url).expect("a URL");
        shared::store::db::lazy_pool(&config, options)
    };
    let tokens = config.require_admission_tokens().expect("a secret");
    let join = join_queue::Deps {
        pool: pool(),
        buyer_auth: BuyerAuth::Jwt,
        admission_tokens: tokens.clone(),
    };
    let entry = get_queue_entry::Deps {
        pool: pool(),
        buyer_auth: BuyerAuth::Jwt,
        admission_tokens: tokens.clone(),
    };
    let holds = create_hold::Deps {
        pool: pool(),
        scheduler: Arc::new(NoScheduler),
        publisher: Arc::new(NoPublisher),
        hold_ttl: config.holds.ttl,
        max_hold_qty: config.holds.max_qty,
        buyer_auth: BuyerAuth::Jwt,
        admission_tokens: Some(tokens),
    };
    let queue = format!("/api/products/{id}/queue");
    let parameter = Some(("id", &*id.to_string()));
    let joining = |buyer: &str| gateway_as(buyer, "POST", &queue, parameter, None);
    let reading = |buyer: &str| gateway_as(buyer, "GET", &queue, parameter, None);
    let holding = |buyer: &str, token: Option<&str>| {
        let mut request = gateway_as(
            buyer,
            "POST",
            "/api/holds",
            None,
            Some(&json!({"product_id": id, "qty": 1})),
        );
        if let Some(token) = token {
            request
                .headers_mut()
                .insert("admission-token", token.parse().expect("a header value"));
        }
        request
    };

    // Warm: each function's connection open, the product read, the pre-queue (empty) drawn.
    let (warm, _) = sent(
        &wire,
        &join.pool,
        join_queue::handle(&join, joining("warm")),
    )
    .await;
    assert_eq!(answer(warm).0, 201);
    let (warm, _) = sent(
        &wire,
        &entry.pool,
        get_queue_entry::handle(&entry, reading("warm")),
    )
    .await;
    assert_eq!(answer(warm).0, 200);

    let (joined, counts) = sent(
        &wire,
        &join.pool,
        join_queue::handle(&join, joining("wire-1")),
    )
    .await;
    let (status, joined) = answer(joined);
    assert_eq!(
        (status, joined["status"].as_str()),
        (201, Some("admitted")),
        "{joined}"
    );
    assert_eq!(counts.commands, 1, "a join: {:?}", counts.query_texts);
    assert!(
        counts.query_texts[0].starts_with("CALL join_queue("),
        "{:?}",
        counts.query_texts
    );
    let (again, counts) = sent(
        &wire,
        &join.pool,
        join_queue::handle(&join, joining("wire-1")),
    )
    .await;
    assert_eq!(answer(again).0, 200);
    assert_eq!(
        counts.commands, 1,
        "a repeated join: {:?}",
        counts.query_texts
    );

    let (read, counts) = sent(
        &wire,
        &entry.pool,
        get_queue_entry::handle(&entry, reading("wire-1")),
    )
    .await;
    let (status, read) = answer(read);
    assert_eq!(status, 200);
    assert_eq!(
        counts.commands, 1,
        "an entry read: {:?}",
        counts.query_texts
    );
    let token = read["admission_token"]
        .as_str()
        .expect("a token")
        .to_owned();

    // create-hold's connection, warmed by a hold of a product without a waiting room.
    let plain = db.product(10, 1).await.0;
    let warm = gateway_as(
        "warm",
        "POST",
        "/api/holds",
        None,
        Some(&json!({"product_id": plain, "qty": 1})),
    );
    let (warm, _) = sent(&wire, &holds.pool, create_hold::handle(&holds, warm)).await;
    assert_eq!(answer(warm).0, 201);
    // The first hold asks whether the product has a waiting room; the next ones know.
    let (refused, counts) = sent(
        &wire,
        &holds.pool,
        create_hold::handle(&holds, holding("wire-1", None)),
    )
    .await;
    assert_eq!(answer(refused).1["error"]["code"], "admission_required");
    assert_eq!(
        counts.commands, 1,
        "the product's terms: {:?}",
        counts.query_texts
    );
    for (buyer, token, code) in [
        ("wire-1", None, "admission_required"),
        ("wire-1", Some("v1.1.00"), "admission_invalid"),
        ("wire-2", Some(token.as_str()), "admission_invalid"),
    ] {
        let (refused, counts) = sent(
            &wire,
            &holds.pool,
            create_hold::handle(&holds, holding(buyer, token)),
        )
        .await;
        assert_eq!(answer(refused).1["error"]["code"], code);
        assert_eq!(counts.commands, 0, "{code}: {:?}", counts.query_texts);
    }
    let (held, counts) = sent(
        &wire,
        &holds.pool,
        create_hold::handle(&holds, holding("wire-1", Some(&token))),
    )
    .await;
    assert_eq!(answer(held).0, 201);
    assert_eq!(
        counts.commands, 1,
        "the hold alone: {:?}",
        counts.query_texts
    );
    assert!(counts.query_texts[0].starts_with("CALL reserve_hold_v2("));
}

/// A Lambda container has one connection: the request that draws a pre-queue does it all on
/// that one (a second acquire would wait for the first and time out as a 503).
#[tokio::test]
async fn a_container_with_one_connection_draws_the_pre_queue_on_its_first_request_after_the_start()
{
    let db = TestDb::new().await;
    let starts = chrono::Utc::now().naive_utc() + chrono::Duration::hours(1);
    let product = queued_product(&db, starts, 1).await;
    let id = product.id.0;
    let config = test_config(db.url.expose_secret(), &[]);
    let options = shared::store::db::connect_options(&config.database.url).expect("a URL");
    let join = join_queue::Deps {
        pool: shared::store::db::lazy_pool(&config, options),
        buyer_auth: BuyerAuth::Jwt,
        admission_tokens: config.require_admission_tokens().expect("a secret"),
    };
    let queue = format!("/api/products/{id}/queue");
    let parameter = Some(("id", &*id.to_string()));
    // Enough for several statements of positions, so the draw writes in more than one.
    for i in 0..1500 {
        let request = gateway_as(&format!("early-{i}"), "POST", &queue, parameter, None);
        assert_eq!(answer(join_queue::handle(&join, request).await).0, 201);
    }
    // The sale starts now: after every join (the clock keeps milliseconds).
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let change = shared::store::products::ProductChange {
        sale_starts_at: Some(Some(chrono::Utc::now().naive_utc())),
        ..Default::default()
    };
    shared::store::products::change_product(&db.pool, product.id, &change)
        .await
        .expect("started");
    tokio::time::sleep(
        shared::domain::queue::DRAW_AFTER_START
            .to_std()
            .expect("a duration"),
    )
    .await;
    let request = gateway_as("late", "POST", &queue, parameter, None);
    let (status, late) = answer(join_queue::handle(&join, request).await);
    assert_eq!(
        (status, late["position"].as_u64()),
        (201, Some(1501)),
        "{late}"
    );
    let positions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_positions")
        .fetch_one(&db.pool)
        .await
        .expect("a count");
    assert_eq!(positions, 1500, "every pre-queue entry drawn");
}

/// Everyone asks at the start: one request claims the draw and reads the pre-queue; the others
/// find the draw claimed and read nothing more than their entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_after_the_start_read_the_pre_queue_once() {
    let db = TestDb::new().await;
    let product = queued_product(
        &db,
        chrono::Utc::now().naive_utc() + chrono::Duration::hours(1),
        10,
    )
    .await;
    let id = product.id.0;
    for i in 0..200 {
        let buyer = BuyerId::parse(&format!("early-{i}")).expect("a buyer");
        shared::store::queue::join(&db.pool, product.id, &buyer)
            .await
            .expect("joined");
    }
    let change = shared::store::products::ProductChange {
        sale_starts_at: Some(Some(chrono::Utc::now().naive_utc())),
        ..Default::default()
    };
    shared::store::products::change_product(&db.pool, product.id, &change)
        .await
        .expect("started");
    let wire = WireCounter::in_front_of(db.url.expose_secret())
        .await
        .expect("a wire counter");
    let config = test_config(
        &wire.url(db.url.expose_secret()),
        &[("DATABASE_MAX_CONNECTIONS", "16")],
    );
    let entry = get_queue_entry::Deps {
        pool: shared::store::db::connect(&config.database.url, 16)
            .await
            .expect("a pool"),
        buyer_auth: BuyerAuth::Jwt,
        admission_tokens: config.require_admission_tokens().expect("a secret"),
    };
    tokio::time::sleep(
        shared::domain::queue::DRAW_AFTER_START
            .to_std()
            .expect("a duration"),
    )
    .await;
    // A pre-queue entry locked elsewhere holds the drawer's locking read up for a moment, so
    // the other requests come while the draw is being claimed.
    let mut holder_connection = sqlx::MySqlConnection::connect(db.url.expose_secret())
        .await
        .expect("a connection");
    let mut holder = holder_connection.begin().await.expect("a transaction");
    sqlx::query("SELECT id FROM queue_entries WHERE buyer_id = 'early-0' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .expect("locked");
    wire.take();
    let queue = format!("/api/products/{id}/queue");
    let parameter = Some(("id", &*id.to_string()));
    let requests = futures::future::join_all((0..64).map(|i| {
        let request = gateway_as(&format!("early-{i}"), "GET", &queue, parameter, None);
        get_queue_entry::handle(&entry, request)
    }));
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        holder.commit().await.expect("released");
    };
    let (answers, ()) = tokio::join!(requests, release);
    for answered in answers {
        assert_eq!(answer(answered).0, 200);
    }
    let sent = wire.take().query_texts;
    let pre_queue_reads = sent
        .iter()
        .filter(|text| text.contains("LOCK IN SHARE MODE"))
        .count();
    assert_eq!(pre_queue_reads, 1, "one drawer read the pre-queue");
    let claims = sent
        .iter()
        .filter(|text| text.starts_with("INSERT INTO queue_draws"))
        .count();
    assert!(
        claims <= 16,
        "{claims} tried to claim: at most one per connection"
    );
}
