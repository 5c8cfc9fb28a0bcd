//! The HTTP contract, route by route, over HTTP on the local server: every status code a client
//! can get, the JSON shapes, and bad input that must change nothing.

use flash_sale_e2e::testing::{
    ADMIN_TOKEN, Api, TestDb, assert_stock_invariants, webhook_signature,
};
use serde_json::{Value, json};

fn assert_error(answer: &(u16, Value), status: u16, code: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["error"]["code"], code, "{}", answer.1);
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.1
    );
}

#[tokio::test]
async fn the_demo_product_is_seeded_once_and_read_with_its_counters() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    // A second instance starting on the same database seeds nothing more.
    let _second = db.server(&[]).await;
    let api = Api::new(&server);
    let product = without_as_of(api.product(1).await);
    assert_eq!(
        product,
        json!({"id": 1, "name": "Demo product", "price": "50.00", "total_stock": 100,
               "available_stock": 100, "reserved_stock": 0, "sold_stock": 0, "stock_buckets": 1, "max_per_buyer": null, "sale_starts_at": null, "sale_ends_at": null, "waiting_room": null})
    );
    let products: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(products, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_on_a_missing_database_create_migrate_and_seed_it_once() {
    let db = TestDb::not_created();
    let (a, b, c) = tokio::join!(db.server(&[]), db.server(&[]), db.server(&[]));
    for server in [&a, &b, &c] {
        assert_eq!(Api::new(server).product(1).await["total_stock"], 100);
    }
    let products: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(products, 1);
    let migrations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .expect("migrations folder")
        .count();
    assert_eq!(migrations as usize, files, "each migration applied once");
}

#[tokio::test]
async fn products_are_created_by_admins_only() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let body = json!({"name": "Sneakers", "price": "79.9", "stock": 25}).to_string();

    assert_error(
        &api.post_raw("/api/admin/products", body.clone(), &[]).await,
        401,
        "unauthorized",
    );
    let wrong = [("authorization", "Bearer not-the-token")];
    assert_error(
        &api.post_raw("/api/admin/products", body.clone(), &wrong)
            .await,
        401,
        "unauthorized",
    );

    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let (status, created) = api
        .post_raw("/api/admin/products", body, &[("authorization", &bearer)])
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_u64().expect("id");
    let created = without_as_of(created);
    assert_eq!(
        created,
        json!({"id": id, "name": "Sneakers", "price": "79.90", "total_stock": 25,
               "available_stock": 25, "reserved_stock": 0, "sold_stock": 0, "stock_buckets": 1, "max_per_buyer": null, "sale_starts_at": null, "sale_ends_at": null, "waiting_room": null})
    );
    assert_eq!(without_as_of(api.product(id).await), created);
}

/// A product without the instant it was read at, which every read has (a timestamp).
fn without_as_of(mut product: Value) -> Value {
    let as_of = product
        .as_object_mut()
        .and_then(|fields| fields.remove("as_of"));
    assert!(
        as_of.as_ref().is_some_and(Value::is_string),
        "as_of: {as_of:?}"
    );
    product
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_not_found_or_bad_requests() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    assert_error(
        &api.get("/api/products/999999").await,
        404,
        "product_not_found",
    );
    assert_error(&api.get("/api/products/abc").await, 400, "invalid_request");
    assert_error(&api.get("/api/products/-1").await, 400, "invalid_request");
    let unknown = uuid::Uuid::new_v4();
    assert_error(
        &api.get(&format!("/api/holds/{unknown}")).await,
        404,
        "hold_not_found",
    );
    assert_error(
        &api.get("/api/holds/not-a-hold").await,
        404,
        "hold_not_found",
    );
    assert_error(
        &api.get(&format!("/api/orders/{unknown}")).await,
        404,
        "order_not_found",
    );
    assert_error(
        &api.order(&unknown.to_string()).await,
        404,
        "hold_not_found",
    );
    assert_error(&api.hold(999_999, 1).await, 404, "product_not_found");
    assert_error(&api.get("/api/nothing-here").await, 404, "route_not_found");
    assert_error(
        &api.post("/api/products/1", &json!({})).await,
        405,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn a_hold_reserves_and_an_order_sells_its_units() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;

    let (status, hold) = api
        .post("/api/holds", &json!({"product_id": product, "quantity": 2}))
        .await;
    assert_eq!(status, 201, "{hold}");
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_owned();
    assert!(hold_id.len() >= 16);
    assert_eq!(
        (
            hold["product_id"].as_u64(),
            hold["qty"].as_u64(),
            hold["status"].as_str()
        ),
        (Some(product), Some(2), Some("active"))
    );
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(hold["expires_at"].as_str().expect("expires_at"))
            .expect("RFC 3339");
    let ttl = expires_at
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!(
        (115..=120).contains(&ttl),
        "default TTL is two minutes, got {ttl}s"
    );
    assert_eq!(
        api.get(&format!("/api/holds/{hold_id}")).await,
        (200, hold.clone())
    );
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64()
        ),
        (Some(8), Some(2))
    );

    let (status, order) = api.order(&hold_id).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["hold_id"], hold_id);
    assert_eq!(
        (
            order["qty"].as_u64(),
            order["amount"].as_str(),
            order["status"].as_str()
        ),
        (Some(2), Some("100.00"), Some("pending_payment"))
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(order["created_at"].as_str().expect("created_at"))
            .is_ok()
    );
    let order_id = order["order_id"].as_str().expect("order id");
    assert_eq!(
        api.get(&format!("/api/orders/{order_id}")).await,
        (200, order.clone())
    );
    assert_eq!(
        api.get(&format!("/api/holds/{hold_id}")).await.1["status"],
        "redeemed"
    );
    assert_eq!(
        api.order(&hold_id).await,
        (200, order.clone()),
        "a repeat returns the same order"
    );
    let stock = assert_stock_invariants(&db.pool, &api, product).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["reserved_stock"].as_i64(),
            stock["sold_stock"].as_i64()
        ),
        (Some(8), Some(0), Some(2))
    );
}

#[tokio::test]
async fn holds_beyond_the_available_stock_are_refused_and_change_nothing() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(5, "50.00").await;
    assert_eq!(api.hold(product, 4).await.0, 201);
    let before = api.product(product).await;
    let refused = api.hold(product, 2).await;
    assert_error(&refused, 409, "insufficient_stock");
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("available 1")),
        "{}",
        refused.1
    );
    assert_eq!(api.product(product).await, before);
    assert_eq!(
        api.hold(product, 1).await.0,
        201,
        "the last unit can still be held"
    );
}

#[tokio::test]
async fn an_idempotency_key_replays_its_hold_and_refuses_another_body() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;
    let key = [("idempotency-key", "order-attempt-1")];
    let body = json!({"product_id": product, "qty": 3}).to_string();

    let first = api.post_raw("/api/holds", body.clone(), &key).await;
    let second = api.post_raw("/api/holds", body, &key).await;
    assert_eq!(first.0, 201);
    assert_eq!(second, first, "the repeat returns the same hold");
    assert_eq!(
        api.product(product).await["reserved_stock"],
        3,
        "and reserves nothing more"
    );

    let other = json!({"product_id": product, "qty": 4}).to_string();
    assert_error(
        &api.post_raw("/api/holds", other, &key).await,
        422,
        "idempotency_key_reused",
    );
    // Keys are case-sensitive: another key is another request.
    let other_key = [("idempotency-key", "ORDER-ATTEMPT-1")];
    let third = api
        .post_raw(
            "/api/holds",
            json!({"product_id": product, "qty": 3}).to_string(),
            &other_key,
        )
        .await;
    assert_eq!(third.0, 201);
    assert_ne!(third.1["hold_id"], first.1["hold_id"]);
    assert_eq!(api.product(product).await["reserved_stock"], 6);
}

/// Every kind of bad input answers 4xx with the error shape and leaves the stock as it was.
#[tokio::test]
async fn bad_input_is_refused_with_a_4xx_and_changes_nothing() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let product = api.create_product(10, "50.00").await;
    let (_, hold) = api.hold(product, 1).await;
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_owned();
    let before = api.product(product).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let huge = "x".repeat(70 * 1024);
    let p = product;

    // (path, body, headers, expected status, expected code)
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/api/holds", "{".into(), vec![], 400, "malformed_json"),
        ("/api/holds", "".into(), vec![], 400, "malformed_json"),
        ("/api/holds", "[]".into(), vec![], 400, "invalid_request"),
        (
            "/api/holds",
            json!({"product_id": p}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"qty": 1}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": 0}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": -1}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": 11}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": 1.5}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": "1"}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": 99999999999u64}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": "1", "qty": 1}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": 1, "quantity": 1}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": 1}).to_string(),
            vec![("idempotency-key", "")],
            400,
            "invalid_request",
        ),
        (
            "/api/holds",
            json!({"product_id": p, "qty": 1, "pad": huge}).to_string(),
            vec![],
            413,
            "payload_too_large",
        ),
        (
            "/api/orders",
            json!({}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        (
            "/api/orders",
            json!({"hold_id": 5}).to_string(),
            vec![],
            400,
            "invalid_request",
        ),
        ("/api/orders", "nope".into(), vec![], 400, "malformed_json"),
        (
            "/api/admin/products",
            json!({"name": "x", "price": "1.00", "stock": 1}).to_string(),
            vec![],
            401,
            "unauthorized",
        ),
        (
            "/api/admin/products",
            json!({"name": "", "price": "1.00", "stock": 1}).to_string(),
            vec![("authorization", &admin)],
            400,
            "invalid_request",
        ),
        (
            "/api/admin/products",
            json!({"name": "x", "price": 1, "stock": 1}).to_string(),
            vec![("authorization", &admin)],
            400,
            "invalid_request",
        ),
        (
            "/api/admin/products",
            json!({"name": "x", "price": "1.001", "stock": 1}).to_string(),
            vec![("authorization", &admin)],
            400,
            "invalid_request",
        ),
        (
            "/api/admin/products",
            json!({"name": "x", "price": "0.00", "stock": 1}).to_string(),
            vec![("authorization", &admin)],
            400,
            "invalid_request",
        ),
        (
            "/api/admin/products",
            json!({"name": "x", "price": "1.00", "stock": -5}).to_string(),
            vec![("authorization", &admin)],
            400,
            "invalid_request",
        ),
        (
            "/api/admin/products",
            json!({"name": "x", "price": "1.00", "stock": 2_000_000_000u32}).to_string(),
            vec![("authorization", &admin)],
            400,
            "invalid_request",
        ),
        (
            "/api/payments/webhook",
            json!({"idempotency_key": "e", "order_id": "x", "status": "paid"}).to_string(),
            vec![],
            401,
            "invalid_signature",
        ),
    ];
    for (path, body, headers, status, code) in &cases {
        let answer = api.post_raw(path, body.clone(), headers).await;
        assert_eq!(answer.0, *status, "{path} {body:.80}: {}", answer.1);
        assert_eq!(
            answer.1["error"]["code"], *code,
            "{path} {body:.80}: {}",
            answer.1
        );
    }
    let signed =
        json!({"idempotency_key": "evt", "order_id": "not-an-order", "status": "paid"}).to_string();
    let signature = webhook_signature(&signed);
    assert_error(
        &api.post_raw(
            "/api/payments/webhook",
            signed,
            &[("x-signature", &signature)],
        )
        .await,
        400,
        "invalid_request",
    );

    assert_eq!(
        api.product(product).await,
        before,
        "no bad request changed the stock"
    );
    assert_eq!(
        api.get(&format!("/api/holds/{hold_id}")).await.1["status"],
        "active"
    );
    let products: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(products, 2, "no bad request created a product");
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM payment_inbox")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(queued, 0, "no bad webhook was queued");
}

/// Rows of every table a body could add to.
async fn row_counts(db: &TestDb) -> [i64; 4] {
    let mut counts = [0; 4];
    for (count, table) in counts
        .iter_mut()
        .zip(["products", "holds", "orders", "payment_inbox"])
    {
        *count = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&db.pool)
            .await
            .expect("count");
    }
    counts
}

/// serde reads a JSON array into a struct field by field, so `[1, 2]` would be a hold of
/// product 1, qty 2: every body that is JSON but not an object is refused on every route that
/// takes one (the webhook's after its signature is checked), and changes nothing.
#[tokio::test]
async fn json_that_is_not_an_object_is_refused_on_every_route_and_changes_nothing() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let (status, hold) = api.hold(1, 1).await;
    assert_eq!(status, 201, "{hold}");
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_owned();
    let before = row_counts(&db).await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let order_id = uuid::Uuid::new_v4().to_string();

    // What each route's struct would read from an array, then the other non-objects.
    let arrays = [
        ("/api/holds", json!([1, 2]).to_string()),
        ("/api/orders", json!([hold_id]).to_string()),
        ("/api/admin/products", json!(["x", "1.00", 1]).to_string()),
        (
            "/api/payments/webhook",
            json!(["evt_array", order_id, "paid"]).to_string(),
        ),
    ];
    let mut cases: Vec<(&str, String)> = arrays.to_vec();
    for (path, _) in arrays {
        for body in [" \n[1, 2]", "\"x\"", "3", "null", "true", "[]"] {
            cases.push((path, body.to_owned()));
        }
    }
    for (path, body) in &cases {
        let signature = webhook_signature(body);
        // The admin route's own token; the buyer routes get the Api's buyer token.
        let mut headers = vec![("x-signature", signature.as_str())];
        if path.starts_with("/api/admin/") {
            headers.push(("authorization", admin.as_str()));
        }
        let answer = api.post_raw(path, body.clone(), &headers).await;
        assert_eq!(answer.0, 400, "{path} {body}: {}", answer.1);
        assert_eq!(
            answer.1["error"]["code"], "invalid_request",
            "{path} {body}: {}",
            answer.1
        );
    }
    // Not JSON at all stays malformed_json, whatever it starts with.
    for body in ["[1, 2", "nul", "\"x", "{\"qty\": 1"] {
        let answer = api.post_raw("/api/holds", body.to_owned(), &[]).await;
        assert_error(&answer, 400, "malformed_json");
    }

    assert_eq!(
        row_counts(&db).await,
        before,
        "no refused body changed a table"
    );
    assert_eq!(api.product(1).await["reserved_stock"], 1);
}

/// A present `Idempotency-Key` that is not a key we accept must not be read as no key (the
/// request would then create a second hold on a retry): bytes past ASCII, too long, or sent
/// twice are each refused, and change nothing.
#[tokio::test]
async fn an_idempotency_key_that_is_not_valid_is_refused_rather_than_ignored() {
    use reqwest::header::{HeaderMap, HeaderValue};

    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let body = json!({"product_id": 1, "qty": 1}).to_string();
    let before = row_counts(&db).await;
    let one = |value: HeaderValue| {
        let mut headers = HeaderMap::new();
        headers.insert("idempotency-key", value);
        headers
    };
    let mut twice = HeaderMap::new();
    twice.append("idempotency-key", HeaderValue::from_static("attempt-1"));
    twice.append("idempotency-key", HeaderValue::from_static("attempt-2"));
    let mut twice_the_same = HeaderMap::new();
    twice_the_same.append("idempotency-key", HeaderValue::from_static("attempt-1"));
    twice_the_same.append("idempotency-key", HeaderValue::from_static("attempt-1"));
    let cases = [
        (
            "a byte 0xFF",
            one(HeaderValue::from_bytes(b"attempt-\xff").expect("obs-text is a valid value")),
        ),
        (
            "UTF-8",
            one(HeaderValue::from_bytes("ключ".as_bytes()).expect("a valid value")),
        ),
        (
            "256 characters",
            one(HeaderValue::from_str(&"k".repeat(256)).expect("a valid value")),
        ),
        ("a space", one(HeaderValue::from_static("attempt 1"))),
        ("two headers", twice),
        ("the same key twice", twice_the_same),
    ];
    for (what, headers) in cases {
        let answer = api
            .post_with_headers("/api/holds", body.clone(), headers)
            .await;
        assert_eq!(answer.0, 400, "{what}: {}", answer.1);
        assert_eq!(
            answer.1["error"]["code"], "invalid_request",
            "{what}: {}",
            answer.1
        );
    }
    assert_eq!(row_counts(&db).await, before, "no refused key made a hold");

    // The longest key accepted still is.
    let longest = one(HeaderValue::from_str(&"k".repeat(255)).expect("a valid value"));
    let (status, hold) = api.post_with_headers("/api/holds", body, longest).await;
    assert_eq!(status, 201, "{hold}");
}
