//! Product reads bounded in staleness, coalesced and cacheable (`shared::store::product_reads`,
//! get-product): a read storm costs one query per product per max age per process, counted on
//! the wire; this process's writes show at once, another's within the max age, an expiry the
//! moment it passes; the answers carry `as_of`, `Cache-Control` and a validator that gets 304.

use std::time::Duration;

use flash_sale_e2e::testing::{Api, TestDb};
use flash_sale_local::wire::WireCounter;
use lambda_http::Body;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use shared::domain::ids::{BuyerId, HoldId, ProductId};
use shared::store::holds::{HoldRequest, reserve};
use shared::store::pool::Pool;
use shared::store::products::{NewProduct, create_product};
use shared::store::release::release_hold;

const SECOND: Duration = Duration::from_secs(1);

/// A get-product container behind a wire counter, its connection open (a read of a product of
/// its own), the counts taken: what follows is counted alone.
async fn counted_container(db: &TestDb, max_age: Duration) -> (WireCounter, get_product::Deps) {
    let wire = WireCounter::in_front_of(db.url.expose_secret())
        .await
        .expect("a wire counter");
    let deps = container(&wire.url(db.url.expose_secret()), max_age);
    read(&deps, db.product(1, 1).await).await;
    wire.take();
    (wire, deps)
}

/// A get-product container: its own pool, reading at most `max_age` old.
fn container(url: &str, max_age: Duration) -> get_product::Deps {
    let options = shared::store::db::connect_options(&SecretString::from(url.to_owned()))
        .expect("a valid URL");
    get_product::Deps {
        pool: Pool::new(options, 8, shared::config::SessionSetup::OnConnect)
            .with_product_read_max_age(max_age),
    }
}

async fn read(deps: &get_product::Deps, id: ProductId) -> Value {
    let request = lambda_http::http::Request::builder()
        .uri(format!("/api/products/{}", id.0))
        .body(Body::Empty)
        .expect("a request");
    let response = get_product::handle(deps, request).await.expect("an answer");
    assert_eq!(response.status(), 200);
    serde_json::from_slice(response.body().as_ref()).expect("JSON")
}

/// A hold made by another process (its own pool): this one's reads are not told of it.
async fn hold_elsewhere(db: &TestDb, id: ProductId, ttl: Duration) -> HoldId {
    let request = HoldRequest {
        product_id: id,
        buyer: BuyerId::parse(ELSEWHERE),
        qty: 1,
        idempotency_key: None,
    };
    reserve(&db.pool, &request, ttl)
        .await
        .expect("a hold")
        .value
        .hold
        .hold_id
}

const ELSEWHERE: &str = "elsewhere";

fn available(product: &Value) -> i64 {
    product["available_stock"]
        .as_i64()
        .expect("available_stock")
}

#[tokio::test]
async fn a_read_storm_on_one_product_is_one_query_per_max_age() {
    let db = TestDb::new().await;
    let id = db.product(10, 1).await;
    let (wire, deps) = counted_container(&db, SECOND).await;

    let readers: Vec<_> = (0..64).map(|_| read(&deps, id)).collect();
    let answers = futures::future::join_all(readers).await;
    let counts = wire.take();
    assert_eq!(
        counts.queries, 1,
        "64 concurrent reads shared one query: {:?}",
        counts.query_texts
    );
    assert!(answers.iter().all(|answer| answer == &answers[0]));
    for _ in 0..10 {
        assert_eq!(read(&deps, id).await, answers[0]);
    }
    assert_eq!(
        wire.take().queries,
        0,
        "later reads within the max age query nothing"
    );

    tokio::time::sleep(SECOND + Duration::from_millis(50)).await;
    let fresh = read(&deps, id).await;
    assert_eq!(wire.take().queries, 1, "past the max age, one read queries");
    assert!(
        fresh["as_of"].as_str() > answers[0]["as_of"].as_str(),
        "{fresh}"
    );
}

/// A read of a product that does not exist is kept as long as any other: a storm of reads of
/// a missing id is one query per max age; a product this process creates shows at once.
#[tokio::test]
async fn a_missing_product_is_one_query_per_max_age_until_this_process_creates_it() {
    let db = TestDb::new().await;
    let (wire, deps) = counted_container(&db, 60 * SECOND).await;
    let missing = |id: ProductId| {
        let request = lambda_http::http::Request::builder()
            .uri(format!("/api/products/{}", id.0))
            .body(Body::Empty)
            .expect("a request");
        get_product::handle(&deps, request)
    };
    let next_id = ProductId(db.product(1, 1).await.0 + 1);
    wire.take();
    let answers = futures::future::join_all((0..32).map(|_| missing(next_id))).await;
    for answer in answers {
        assert_eq!(answer.expect("an answer").status(), 404);
    }
    for _ in 0..5 {
        assert_eq!(missing(next_id).await.expect("an answer").status(), 404);
    }
    assert_eq!(
        wire.take().queries,
        1,
        "37 reads of a missing product, one query"
    );

    let created = create_product(
        &deps.pool,
        &NewProduct {
            name: "Made here".into(),
            price: shared::domain::money::Cents(100),
            stock: 3,
            buckets: 1,
            sale: Default::default(),
            waiting_room: None,
        },
    )
    .await
    .expect("a product");
    assert_eq!(created.id, next_id, "the next id");
    assert_eq!(
        available(&read(&deps, next_id).await),
        3,
        "created here: shown at once"
    );
}

#[tokio::test]
async fn with_a_max_age_of_zero_every_read_queries() {
    let db = TestDb::new().await;
    let id = db.product(10, 1).await;
    let (wire, deps) = counted_container(&db, Duration::ZERO).await;
    for _ in 0..5 {
        read(&deps, id).await;
    }
    assert_eq!(wire.take().queries, 5);
    let before = read(&deps, id).await;
    hold_elsewhere(&db, id, 120 * SECOND).await;
    assert_eq!(
        available(&read(&deps, id).await),
        available(&before) - 1,
        "another process's hold shows at once"
    );
}

#[tokio::test]
async fn another_process_s_hold_and_release_show_within_the_max_age() {
    let db = TestDb::new().await;
    let id = db.product(10, 1).await;
    let deps = container(db.url.expose_secret(), SECOND);
    let before = read(&deps, id).await;
    let hold_id = hold_elsewhere(&db, id, 120 * SECOND).await;
    // Within the max age this process still answers its last read: nothing told it.
    assert_eq!(read(&deps, id).await, before);
    tokio::time::sleep(SECOND + Duration::from_millis(50)).await;
    let held = read(&deps, id).await;
    assert_eq!(available(&held), available(&before) - 1, "{held}");
    assert_eq!(held["reserved_stock"], 1, "{held}");

    let buyer = BuyerId::parse(ELSEWHERE);
    release_hold(&db.pool, &hold_id, buyer.as_ref())
        .await
        .expect("released");
    assert_eq!(read(&deps, id).await, held, "within the max age");
    tokio::time::sleep(SECOND + Duration::from_millis(50)).await;
    let released = read(&deps, id).await;
    assert_eq!(available(&released), available(&before), "{released}");
    assert_eq!(released["reserved_stock"], 0, "{released}");
}

/// An expiry needs no write to show: a read is never served past the next instant a hold of the
/// product lapses, so even with a long max age the units are available the moment it passes.
#[tokio::test]
async fn an_expiry_shows_the_moment_it_passes_whatever_the_max_age() {
    let db = TestDb::new().await;
    let id = db.product(10, 1).await;
    let deps = container(db.url.expose_secret(), 60 * SECOND);
    hold_elsewhere(&db, id, SECOND).await;
    let held = read(&deps, id).await;
    assert_eq!(available(&held), 9, "{held}");
    assert_eq!(
        read(&deps, id).await,
        held,
        "served from the last read meanwhile"
    );
    tokio::time::sleep(SECOND + Duration::from_millis(50)).await;
    let lapsed = read(&deps, id).await;
    assert_eq!(
        (available(&lapsed), lapsed["reserved_stock"].as_i64()),
        (10, Some(0)),
        "{lapsed}"
    );
}

/// In one process (the local server), its own hold, release, order and change of terms show in
/// the very next read, however long the max age.
#[tokio::test]
async fn this_process_s_writes_show_in_its_next_read() {
    let db = TestDb::new().await;
    let server = db.server(&[("PRODUCT_READ_MAX_AGE_MS", "60000")]).await;
    let api = Api::new(&server);
    let id = api.create_product(10, "5.00").await;
    let counters = |product: &Value| {
        [
            "available_stock",
            "reserved_stock",
            "sold_stock",
            "total_stock",
        ]
        .map(|name| product[name].as_i64().expect("a counter"))
    };
    assert_eq!(counters(&api.product(id).await), [10, 0, 0, 10]);

    let (status, hold) = api.hold(id, 2).await;
    assert_eq!(status, 201, "{hold}");
    assert_eq!(
        counters(&api.product(id).await),
        [8, 2, 0, 10],
        "after a hold"
    );
    let hold_id = hold["hold_id"].as_str().expect("a hold id");
    let (status, _) = api.delete(&format!("/api/holds/{hold_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(
        counters(&api.product(id).await),
        [10, 0, 0, 10],
        "after a release"
    );

    let (_, hold) = api.hold(id, 3).await;
    let (status, order) = api
        .order(hold["hold_id"].as_str().expect("a hold id"))
        .await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(
        counters(&api.product(id).await),
        [7, 0, 3, 10],
        "after an order"
    );

    let (status, changed) = api
        .patch_admin(
            &format!("/api/admin/products/{id}"),
            &serde_json::json!({"total_stock": 12, "max_per_buyer": 5}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let product = api.product(id).await;
    assert_eq!(counters(&product), [9, 0, 3, 12], "after a change of stock");
    assert_eq!(product["max_per_buyer"], 5, "after a change of terms");
}

/// The answer's headers: a product read is cacheable for the max age (whole seconds, at most
/// one), validated by a weak ETag of its figures and terms, 304 while they hold; every other
/// answer is `no-store`.
#[tokio::test]
async fn a_product_read_is_cacheable_and_answers_304_while_its_figures_hold() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let id = api.create_product(10, "5.00").await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/products/{id}", server.url());
    let get = |etag: Option<String>| {
        let mut request = http.get(&url);
        if let Some(etag) = etag {
            request = request.header("if-none-match", etag);
        }
        request.send()
    };

    let first = get(None).await.expect("an answer");
    assert_eq!(first.status(), 200);
    let headers = first.headers().clone();
    assert_eq!(
        headers["cache-control"],
        "public, max-age=1, stale-while-revalidate=2"
    );
    let etag = headers["etag"].to_str().expect("ASCII").to_owned();
    assert!(etag.starts_with("W/\"") && etag.ends_with('"'), "{etag}");
    let body: Value = first.json().await.expect("JSON");
    assert!(body["as_of"].is_string(), "{body}");

    let unchanged = get(Some(etag.clone())).await.expect("an answer");
    assert_eq!(unchanged.status(), 304);
    assert_eq!(unchanged.headers()["etag"], etag.as_str());
    assert_eq!(
        unchanged.headers()["cache-control"],
        "public, max-age=1, stale-while-revalidate=2"
    );
    assert!(unchanged.bytes().await.expect("a body").is_empty());

    // Later reads of the same figures, as of a later instant, keep the tag.
    tokio::time::sleep(SECOND + Duration::from_millis(50)).await;
    let later = get(Some(etag.clone())).await.expect("an answer");
    assert_eq!(later.status(), 304, "the same figures, read again");

    let (status, _) = api.hold(id, 1).await;
    assert_eq!(status, 201);
    let changed = get(Some(etag.clone())).await.expect("an answer");
    assert_eq!(changed.status(), 200, "a hold changed the figures");
    assert_ne!(changed.headers()["etag"], etag.as_str());

    let missing = http
        .get(format!("{}/api/products/{}", server.url(), id + 1_000))
        .send()
        .await
        .expect("an answer");
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.headers()["cache-control"], "no-store");
    let unauthorized = http
        .post(format!("{}/api/holds", server.url()))
        .json(&serde_json::json!({"product_id": id, "qty": 1}))
        .send()
        .await
        .expect("an answer");
    assert_eq!(unauthorized.status(), 401);
    assert_eq!(unauthorized.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn with_a_max_age_of_zero_nothing_may_be_stored() {
    let db = TestDb::new().await;
    let server = db.server(&[("PRODUCT_READ_MAX_AGE_MS", "0")]).await;
    let api = Api::new(&server);
    let id = api.create_product(10, "5.00").await;
    let answer = reqwest::get(format!("{}/api/products/{id}", server.url()))
        .await
        .expect("an answer");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    assert!(answer.headers().contains_key("etag"));
}

/// A reservation refused here makes this process ask the database to check the stock first next
/// time; that note never refuses units that came back meanwhile, unbeknown to this process: a
/// release made by another one, or a hold of another that lapsed (settled by this reservation).
#[tokio::test]
async fn a_noted_refusal_never_refuses_units_that_came_back_elsewhere() {
    let db = TestDb::new().await;
    let id = db.product(2, 2).await;
    let here = container(db.url.expose_secret(), SECOND).pool;
    let request = |buyer: &str| HoldRequest {
        product_id: id,
        buyer: BuyerId::parse(buyer),
        qty: 1,
        idempotency_key: None,
    };
    let released = hold_elsewhere(&db, id, 120 * SECOND).await;
    // Two seconds: what follows until the second refusal takes milliseconds.
    hold_elsewhere(&db, id, 2 * SECOND).await;
    for _ in 0..2 {
        let refused = reserve(&here, &request("here"), 120 * SECOND).await;
        assert!(
            matches!(refused, Err(shared::Error::InsufficientStock { .. })),
            "{refused:?}"
        );
        assert!(here.product_reads().expects_too_few(id));
    }

    let buyer = BuyerId::parse(ELSEWHERE);
    release_hold(&db.pool, &released, buyer.as_ref())
        .await
        .expect("released");
    let held = reserve(&here, &request("here"), 120 * SECOND).await;
    assert!(held.is_ok(), "a released unit is held: {held:?}");
    assert!(!here.product_reads().expects_too_few(id), "the note went");

    let refused = reserve(&here, &request("here"), 120 * SECOND).await;
    assert!(refused.is_err(), "sold out again: {refused:?}");
    tokio::time::sleep(2 * SECOND + Duration::from_millis(50)).await;
    let held = reserve(&here, &request("here"), 120 * SECOND).await;
    assert!(held.is_ok(), "a lapsed hold's unit is held: {held:?}");
    let (reserved, available): (i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(reserved_stock) AS SIGNED), CAST(SUM(available_stock) AS SIGNED) \
         FROM stock_buckets WHERE product_id = ?",
    )
    .bind(id.0)
    .fetch_one(&db.pool)
    .await
    .expect("the stock");
    assert_eq!(
        (reserved, available),
        (2, 0),
        "the lapsed hold was settled, two held"
    );
}

/// A product of one unit, held by another process, and a process (`here`, a get-product
/// container's pool) whose reservation of it with `key` was refused, so it now reads the stock
/// first: that process, its request, and the other's hold.
async fn noted_short(db: &TestDb, key: Option<&str>) -> (Pool, HoldRequest, HoldId) {
    let id = db.product(1, 1).await;
    let here = container(db.url.expose_secret(), SECOND).pool;
    let request = HoldRequest {
        product_id: id,
        buyer: BuyerId::parse("here"),
        qty: 1,
        idempotency_key: key.map(str::to_owned),
    };
    let elsewhere = hold_elsewhere(db, id, 120 * SECOND).await;
    let refused = reserve(&here, &request, 120 * SECOND).await;
    assert!(
        matches!(refused, Err(shared::Error::InsufficientStock { .. })),
        "{refused:?}"
    );
    assert!(here.product_reads().expects_too_few(id));
    (here, request, elsewhere)
}

/// A process that found the product short reads the stock and the request's Idempotency-Key in
/// one snapshot before anything else. A first request with the same key whose hold is not
/// committed yet has not taken its units in that snapshot either, so the repeat goes on to the
/// reservation, waits there for the first and is answered with its hold — never refused for
/// want of the units that very hold took.
#[tokio::test]
async fn a_noted_refusal_is_not_the_answer_to_a_repeat_of_a_request_still_in_flight() {
    use sqlx::{Connection, Executor};
    let db = TestDb::new().await;
    let (here, request, elsewhere) = noted_short(&db, Some("checkout-1")).await;
    let id = request.product_id;
    release_hold(&db.pool, &elsewhere, BuyerId::parse(ELSEWHERE).as_ref())
        .await
        .expect("released");

    // The first request with the key, in flight: its hold inserted and its unit reserved, not
    // committed (what reserve_hold_v2 does between its INSERT and its COMMIT).
    let mut first = sqlx::MySqlConnection::connect(db.url.expose_secret())
        .await
        .expect("a session");
    let first_hold = HoldId::generate();
    first.execute("BEGIN").await.expect("BEGIN");
    sqlx::query(
        "INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, idempotency_key, \
                            created_at, expires_at) \
         VALUES (?, ?, 'here', 0, 1, 'active', 'checkout-1', UTC_TIMESTAMP(3), \
                 UTC_TIMESTAMP(3) + INTERVAL 2 MINUTE)",
    )
    .bind(first_hold.as_str())
    .bind(id.0)
    .execute(&mut first)
    .await
    .expect("the first request's hold");
    sqlx::query(
        "UPDATE stock_buckets SET available_stock = available_stock - 1, \
                reserved_stock = reserved_stock + 1 WHERE product_id = ?",
    )
    .bind(id.0)
    .execute(&mut first)
    .await
    .expect("its unit");

    let repeat = tokio::spawn(async move { reserve(&here, &request, 120 * SECOND).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !repeat.is_finished(),
        "the repeat waits for the first request: {:?}",
        repeat.await
    );
    first.execute("COMMIT").await.expect("COMMIT");
    let repeat = repeat.await.expect("the repeat's task").expect("a hold");
    assert!(repeat.value.replayed, "{:?}", repeat.value);
    assert_eq!(repeat.value.hold.hold_id, first_hold);
}

/// The read that refuses a noted product also judges its sale window and its existence, as the
/// reservation itself would.
#[tokio::test]
async fn a_noted_product_whose_sale_ended_or_that_is_gone_is_refused_for_that() {
    let db = TestDb::new().await;
    let (here, request, _) = noted_short(&db, None).await;
    let id = request.product_id;
    sqlx::query(
        "UPDATE products SET sale_ends_at = UTC_TIMESTAMP(3) - INTERVAL 1 SECOND WHERE id = ?",
    )
    .bind(id.0)
    .execute(&db.pool)
    .await
    .expect("the sale ended");
    let refused = reserve(&here, &request, 120 * SECOND).await;
    assert!(
        matches!(refused, Err(shared::Error::SaleEnded)),
        "{refused:?}"
    );
    for table in ["holds", "stock_buckets", "products"] {
        sqlx::query(&format!("DELETE FROM {table}"))
            .execute(&db.pool)
            .await
            .expect("the product gone");
    }
    let refused = reserve(&here, &request, 120 * SECOND).await;
    assert!(
        matches!(refused, Err(shared::Error::ProductNotFound(gone)) if gone == id),
        "{refused:?}"
    );
}
