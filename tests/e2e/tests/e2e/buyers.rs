//! Buyers: who a hold and an order belong to, the per-buyer limit under any concurrency, sale
//! windows, releasing a hold, and the tokens that say who the buyer is.

use std::collections::HashSet;
use std::time::Duration;

use flash_sale_e2e::testing::{Api, BUYER_JWT_SECRET, TestDb, assert_stock_invariants};
use futures::future::join_all;
use serde_json::{Value, json};

/// A product with these sale terms (`max_per_buyer`, `sale_starts_at`, `sale_ends_at`).
async fn product(api: &Api, stock: u32, terms: Value) -> u64 {
    let mut body = json!({"name": "Limited drop", "price": "10.00", "stock": stock});
    body.as_object_mut()
        .expect("an object")
        .extend(terms.as_object().expect("terms").clone());
    api.create_product_from(&body).await["id"]
        .as_u64()
        .expect("id")
}

fn code(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"]["code"].as_str().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_buyer_racing_across_two_instances_holds_exactly_the_limit() {
    let db = TestDb::new().await;
    let (first, second) = (db.server(&[]).await, db.server(&[]).await);
    let apis = [Api::new(&first), Api::new(&second)];
    let id = product(&apis[0], 100, json!({"max_per_buyer": 3})).await;
    let answers = join_all((0..64).map(|i| {
        let api = &apis[i % 2];
        async move { api.hold(id, 1).await }
    }))
    .await;
    let held = answers.iter().filter(|answer| answer.0 == 201).count();
    assert_eq!(held, 3, "exactly the limit");
    for answer in answers.iter().filter(|answer| answer.0 != 201) {
        assert_eq!(code(answer), (409, "buyer_limit_reached"), "{}", answer.1);
    }
    let stock = assert_stock_invariants(&db.pool, &apis[0], id).await;
    assert_eq!(stock["reserved_stock"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_buyers_racing_for_fifty_units_one_each_are_fifty_distinct_buyers() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let id = product(&api, 50, json!({"max_per_buyer": 1})).await;
    let answers = join_all((0..200).map(|i| {
        let buyer = api.as_buyer(&format!("racer-{i}"));
        async move { buyer.hold(id, 1).await }
    }))
    .await;
    let holders: HashSet<&str> = answers
        .iter()
        .filter(|answer| answer.0 == 201)
        .map(|answer| answer.1["buyer_id"].as_str().expect("a buyer"))
        .collect();
    assert_eq!(holders.len(), 50, "fifty distinct buyers");
    assert_eq!(answers.iter().filter(|a| a.0 == 201).count(), 50);
    for answer in answers.iter().filter(|answer| answer.0 != 201) {
        assert_eq!(code(answer), (409, "insufficient_stock"), "{}", answer.1);
    }
    assert_stock_invariants(&db.pool, &api, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn released_expired_and_cancelled_units_stop_counting_and_paid_ones_keep_counting() {
    let db = TestDb::new().await;
    let server = db.server(&[("HOLD_TTL_SECONDS", "1")]).await;
    let api = Api::new(&server);
    let id = product(&api, 100, json!({"max_per_buyer": 2})).await;

    // Released: may hold again.
    let (status, hold) = api.hold(id, 2).await;
    assert_eq!(status, 201, "{hold}");
    assert_eq!(code(&api.hold(id, 1).await), (409, "buyer_limit_reached"));
    let hold_id = hold["hold_id"].as_str().expect("id");
    let (status, released) = api.delete(&format!("/api/holds/{hold_id}")).await;
    assert_eq!(
        (status, released["status"].as_str()),
        (200, Some("released"))
    );
    assert_eq!(
        api.delete(&format!("/api/holds/{hold_id}")).await,
        (200, released)
    );
    assert_eq!(code(&api.order(hold_id).await), (409, "hold_released"));

    // Expired: may hold again.
    assert_eq!(api.hold(id, 2).await.0, 201);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, lapsing) = api.hold(id, 2).await;
    assert_eq!(status, 201, "the expired hold no longer counts: {lapsing}");

    // Ordered, then the payment failed: may hold again.
    let (status, order) = api.order(lapsing["hold_id"].as_str().expect("id")).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("id").to_owned();
    assert_eq!(
        code(&api.hold(id, 1).await),
        (409, "buyer_limit_reached"),
        "a pending order counts"
    );
    assert_eq!(api.pay("evt_failed", &order_id, "failed").await.0, 202);
    api.wait_for_order(&order_id, Duration::from_secs(10), |o| {
        o["status"] == "cancelled"
    })
    .await;
    let (status, hold) = api.hold(id, 2).await;
    assert_eq!(status, 201, "{hold}");

    // Paid: keeps counting.
    let (status, order) = api.order(hold["hold_id"].as_str().expect("id")).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("id").to_owned();
    assert_eq!(api.pay("evt_paid", &order_id, "paid").await.0, 202);
    api.wait_for_order(&order_id, Duration::from_secs(10), |o| {
        o["status"] == "paid"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        code(&api.hold(id, 1).await),
        (409, "buyer_limit_reached"),
        "paid units count"
    );
    assert_eq!(
        api.as_buyer("someone-else").hold(id, 2).await.0,
        201,
        "per buyer"
    );
    assert_stock_invariants(&db.pool, &api, id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_window_opens_and_closes_holds_and_moving_its_start_opens_it_at_once() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let an_hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let upcoming = product(&api, 10, json!({"sale_starts_at": in_an_hour})).await;
    let over = product(&api, 10, json!({"sale_ends_at": an_hour_ago})).await;

    let refused = reqwest::Client::new()
        .post(format!("{}/api/holds", api.base))
        .bearer_auth(flash_sale_e2e::testing::buyer_token("early-bird"))
        .body(json!({"product_id": upcoming, "qty": 1}).to_string())
        .send()
        .await
        .expect("an answer");
    assert_eq!(refused.status(), 409);
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ASCII")
        .parse()
        .expect("seconds");
    assert!((3590..=3600).contains(&retry_after), "{retry_after}");
    let body: Value = refused.json().await.expect("JSON");
    assert_eq!(body["error"]["code"], "sale_not_started");
    assert_eq!(
        code(&api.hold(upcoming, 1).await),
        (409, "sale_not_started")
    );
    assert_eq!(code(&api.hold(over, 1).await), (409, "sale_ended"));

    let now = chrono::Utc::now().to_rfc3339();
    let (status, changed) = api
        .patch_admin(
            &format!("/api/admin/products/{upcoming}"),
            &json!({"sale_starts_at": now}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(api.hold(upcoming, 1).await.0, 201, "open at once");
    let stock = assert_stock_invariants(&db.pool, &api, over).await;
    assert_eq!(
        stock["reserved_stock"], 0,
        "nothing reserved by the refusals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_orders_belong_to_their_buyer_and_keys_are_per_buyer() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let (alice, bob) = (
        Api::new(&server).as_buyer("alice"),
        Api::new(&server).as_buyer("bob"),
    );
    let id = product(&alice, 10, json!({})).await;
    let body = json!({"product_id": id, "qty": 1}).to_string();
    let key = [("idempotency-key", "checkout-1")];
    let (status, alices) = alice.post_raw("/api/holds", body.clone(), &key).await;
    assert_eq!((status, alices["buyer_id"].as_str()), (201, Some("alice")));
    let (status, bobs) = bob.post_raw("/api/holds", body, &key).await;
    assert_eq!((status, bobs["buyer_id"].as_str()), (201, Some("bob")));
    assert_ne!(
        alices["hold_id"], bobs["hold_id"],
        "the same key, two buyers, two holds"
    );

    let alices_hold = alices["hold_id"].as_str().expect("id");
    assert_eq!(
        code(&bob.get(&format!("/api/holds/{alices_hold}")).await),
        (404, "hold_not_found")
    );
    assert_eq!(code(&bob.order(alices_hold).await), (404, "hold_not_found"));
    assert_eq!(
        code(&bob.delete(&format!("/api/holds/{alices_hold}")).await),
        (404, "hold_not_found")
    );
    let (status, order) = alice.order(alices_hold).await;
    assert_eq!((status, order["buyer_id"].as_str()), (201, Some("alice")));
    let order_id = order["order_id"].as_str().expect("id");
    assert_eq!(
        code(&bob.get(&format!("/api/orders/{order_id}")).await),
        (404, "order_not_found")
    );
    assert_eq!(alice.get(&format!("/api/orders/{order_id}")).await.0, 200);
    assert_eq!(
        code(&alice.delete(&format!("/api/holds/{alices_hold}")).await),
        (409, "hold_redeemed")
    );
    assert_stock_invariants(&db.pool, &alice, id).await;
}

fn signed(secret: &str, claims: Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("a key");
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("a token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_token_is_401_and_changes_nothing() {
    let db = TestDb::new().await;
    let server = db.server(&[("BUYER_JWT_AUDIENCE", "flash-sale")]).await;
    let api = Api::new(&server);
    let id = product(&api, 10, json!({})).await;
    let now = chrono::Utc::now().timestamp();
    let good = signed(
        BUYER_JWT_SECRET,
        json!({"sub": "alice", "aud": "flash-sale", "exp": now + 60}),
    );
    let (status, hold) = api.with_token(Some(good)).hold(id, 1).await;
    assert_eq!(status, 201, "{hold}");
    let hold_id = hold["hold_id"].as_str().expect("id").to_owned();
    for token in [
        None,
        Some("garbage".to_owned()),
        Some(signed(
            "a-guess",
            json!({"sub": "alice", "aud": "flash-sale", "exp": now + 60}),
        )),
        Some(signed(
            BUYER_JWT_SECRET,
            json!({"sub": "alice", "aud": "flash-sale", "exp": now - 60}),
        )),
        Some(signed(
            BUYER_JWT_SECRET,
            json!({"sub": "alice", "aud": "elsewhere", "exp": now + 60}),
        )),
        Some(signed(
            BUYER_JWT_SECRET,
            json!({"sub": "alice", "aud": "flash-sale"}),
        )),
    ] {
        let api = api.with_token(token.clone());
        for answer in [
            api.hold(id, 1).await,
            api.get(&format!("/api/holds/{hold_id}")).await,
            api.delete(&format!("/api/holds/{hold_id}")).await,
            api.order(&hold_id).await,
        ] {
            assert_eq!(code(&answer), (401, "unauthorized"), "{token:?}");
        }
    }
    let stock = assert_stock_invariants(&db.pool, &api, id).await;
    assert_eq!(stock["reserved_stock"], 1, "only the one good hold");
    let orders: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM orders")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(orders, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_stock_rises_at_once_and_never_falls_below_what_is_held_and_sold() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let id = api.create_split_product(10, 2, "5.00").await;
    assert_eq!(api.hold(id, 8).await.0, 201);
    let path = format!("/api/admin/products/{id}");
    assert_eq!(
        code(&api.patch_admin(&path, &json!({"total_stock": 7})).await),
        (409, "insufficient_stock")
    );
    let (status, product) = api.patch_admin(&path, &json!({"total_stock": 8})).await;
    assert_eq!(
        (status, product["available_stock"].as_i64()),
        (200, Some(0)),
        "{product}"
    );
    let (status, product) = api
        .patch_admin(&path, &json!({"total_stock": 20, "max_per_buyer": 12}))
        .await;
    assert_eq!(status, 200, "{product}");
    assert_eq!(
        (
            product["available_stock"].as_i64(),
            product["max_per_buyer"].as_i64()
        ),
        (Some(12), Some(12))
    );
    assert_eq!(api.hold(id, 4).await.0, 201);
    assert_eq!(code(&api.hold(id, 1).await), (409, "buyer_limit_reached"));
    let (status, cleared) = api
        .patch_admin(&path, &json!({"max_per_buyer": null}))
        .await;
    assert_eq!(
        (status, cleared["max_per_buyer"].clone()),
        (200, Value::Null)
    );
    assert_eq!(api.hold(id, 1).await.0, 201);
    assert_stock_invariants(&db.pool, &api, id).await;
}

/// The reservation counts the buyer's units and finds its hold through the holds indexes,
/// whatever other buyers hold: `reserve_hold`'s parameters compare as the columns do (declared
/// with the database's default utf8mb4 they turned every such lookup into a scan of all holds).
#[tokio::test]
async fn a_limited_reservation_reads_only_its_buyers_rows() {
    use shared::store::sql::{Sql, literal};
    use sqlx::{Executor, Row};
    let db = TestDb::new().await;
    let setup = [
        "INSERT INTO products (id, name, price_cents, total_stock, stock_buckets, max_per_buyer, created_at) \
         VALUES (7, 'Indexed', 100, 1000, 2, 1000000, UTC_TIMESTAMP(3))",
        // Bucket 0 is empty, so a reservation starting there moves on to bucket 1 and rewrites its
        // hold's bucket by the hold's id.
        "INSERT INTO stock_buckets (product_id, bucket, total_stock, available_stock) \
         VALUES (7, 0, 0, 0), (7, 1, 1000, 1000)",
    ];
    for statement in setup {
        db.pool.execute(statement).await.expect("set up");
    }
    // 5,000 active holds of 50 other buyers, and 3 of the buyer's own.
    let holds: Vec<String> = (1..=5_000_u32)
        .map(|n| {
            let buyer = if n <= 3 {
                "buyer-me".to_owned()
            } else {
                format!("other-{}", n % 50)
            };
            format!(
                "({}, 7, {}, 1, 1, 'active', UTC_TIMESTAMP(3), UTC_TIMESTAMP(3) + INTERVAL 1 HOUR)",
                literal(format!("00000000-0000-4000-8000-{n:012}")),
                literal(buyer)
            )
        })
        .collect();
    Sql::new(format!(
        "INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at) VALUES {}",
        holds.join(", ")
    ))
    .execute(&db.pool)
    .await
    .expect("other buyers' holds");
    let mut conn = db.pool.acquire().await.expect("a connection");
    let reads = |rows: Vec<sqlx::mysql::MySqlRow>| -> i64 {
        rows.iter()
            .map(|row| {
                row.try_get::<String, _>(1)
                    .expect("a count")
                    .parse::<i64>()
                    .expect("a number")
            })
            .sum()
    };
    let counters =
        "SHOW SESSION STATUS WHERE Variable_name IN ('Handler_read_rnd_next', 'Handler_read_next')";
    let before = reads(conn.fetch_all(counters).await.expect("counters"));
    let answer = Sql::new("CALL reserve_hold(?, 7, ?, 1, NULL, 60000, 0)")
        .bind("11111111-1111-4111-8111-111111111111")
        .bind("buyer-me")
        .fetch_all(&mut *conn)
        .await
        .expect("reserved");
    let read = reads(conn.fetch_all(counters).await.expect("counters")) - before;
    assert_eq!(
        answer[0].try_get::<String, _>("outcome").expect("outcome"),
        "held"
    );
    assert_eq!(answer[0].try_get::<u16, _>("bucket").expect("bucket"), 1);
    assert_eq!(answer[0].try_get::<i64, _>("held").expect("held"), 3);
    // The buyer's 3 holds, their (no) orders and the counters' own rows: nothing near 5,000.
    assert!(read < 100, "the reservation read {read} rows");
}
