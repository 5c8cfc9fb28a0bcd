//! Waiting rooms (issue 22): the pre-queue's draw, first come first served after the start,
//! admission by the rate, admission tokens on holds, expiry and rejoining, sold out and
//! reopening, and two server instances on one database.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use flash_sale_e2e::testing::{ADMISSION_TOKEN_SECRET, Api, TestDb};
use futures::future::join_all;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::domain::admission::AdmissionTokens;
use shared::domain::ids::{BuyerId, ProductId};

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn instant(value: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(value.as_str().expect("an instant"))
        .expect("RFC 3339")
        .with_timezone(&Utc)
}

/// A product of `stock` units whose sale starts at `starts`, behind a waiting room.
async fn product(api: &Api, stock: u32, starts: DateTime<Utc>, rate: u32, ttl: u32) -> u64 {
    let body = json!({
        "name": "Queued drop", "price": "10.00", "stock": stock,
        "sale_starts_at": rfc3339(starts),
        "waiting_room": {"admission_rate": rate, "admission_ttl_seconds": ttl},
    });
    let product = api.create_product_from(&body).await;
    assert_eq!(
        product["waiting_room"],
        json!({"admission_rate": rate, "admission_ttl_seconds": ttl})
    );
    product["id"].as_u64().expect("id")
}

async fn join(api: &Api, id: u64) -> (u16, Value) {
    api.post_raw(&format!("/api/products/{id}/queue"), String::new(), &[])
        .await
}

async fn entry(api: &Api, id: u64) -> (u16, Value) {
    api.get(&format!("/api/products/{id}/queue")).await
}

/// Reads the entry until it has a position (the draw runs on the first request after the
/// start and a second).
async fn positioned(api: &Api, id: u64) -> Value {
    for _ in 0..100 {
        let (status, entry) = entry(api, id).await;
        assert_eq!(status, 200, "{entry}");
        if !entry["position"].is_null() {
            return entry;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no position after 10 s");
}

async fn until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

fn code(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"]["code"].as_str().unwrap_or(""))
}

fn tokens() -> AdmissionTokens {
    AdmissionTokens::new(vec![SecretString::from(ADMISSION_TOKEN_SECRET.to_owned())])
        .expect("a secret")
}

async fn hold_with(api: &Api, id: u64, token: Option<&str>) -> (u16, Value) {
    let body = json!({"product_id": id, "qty": 1}).to_string();
    match token {
        Some(token) => {
            api.post_raw("/api/holds", body, &[("admission-token", token)])
                .await
        }
        None => api.post_raw("/api/holds", body, &[]).await,
    }
}

/// Spearman's rank correlation of two rankings of the same items (1-based, no ties).
fn rank_correlation(pairs: &[(u64, u64)]) -> f64 {
    let n = pairs.len() as f64;
    let squares: f64 = pairs
        .iter()
        .map(|(a, b)| (*a as f64 - *b as f64).powi(2))
        .sum();
    1.0 - 6.0 * squares / (n * (n * n - 1.0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pre_queue_is_drawn_at_random_and_later_joins_queue_in_the_order_they_joined() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let starts = Utc::now() + chrono::Duration::seconds(6);
    let id = product(&api, 10, starts, 1000, 300).await;
    const EARLY: u64 = 200;
    // One after another, so the join order is known: 1..=200.
    for i in 1..=EARLY {
        let (status, entry) = join(&api.as_buyer(&format!("early-{i}")), id).await;
        assert_eq!(status, 201, "{entry}");
        assert_eq!(
            entry["position"],
            Value::Null,
            "no position before the start"
        );
        assert_eq!(entry["status"], "waiting");
        assert_eq!(entry["admission_token"], Value::Null);
    }
    assert!(Utc::now() < starts, "the pre-queue joined before the start");
    until(starts).await;
    let mut pairs = Vec::new();
    for i in 1..=EARLY {
        let entry = positioned(&api.as_buyer(&format!("early-{i}")), id).await;
        pairs.push((i, entry["position"].as_u64().expect("a position")));
    }
    let positions: HashSet<u64> = pairs.iter().map(|(_, position)| *position).collect();
    assert_eq!(positions, (1..=EARLY).collect(), "a permutation of 1..=200");
    // Joining first is no advantage: the positions do not follow the join order. For a uniform
    // permutation of 200 Spearman's rho has a standard deviation of 1/sqrt(199) = 0.071, so
    // |rho| >= 0.3 (4.2 of them) happens about once in 30,000 draws; the join order is rho = 1.
    let rho = rank_correlation(&pairs);
    assert!(
        rho.abs() < 0.3,
        "positions follow the join order: rho = {rho}"
    );
    let first_quarter_late = pairs
        .iter()
        .filter(|(joined, position)| *joined <= EARLY / 4 && *position > EARLY / 2)
        .count();
    assert!(
        first_quarter_late > 5,
        "the first quarter to join all drew front positions ({first_quarter_late} in the back half)"
    );
    // After the start: first come, first served, right behind the pre-queue.
    let mut later = Vec::new();
    for i in 1..=20 {
        let (status, entry) = join(&api.as_buyer(&format!("late-{i}")), id).await;
        assert_eq!(status, 201, "{entry}");
        later.push(entry["position"].as_u64().expect("a position at once"));
    }
    assert_eq!(later, (EARLY + 1..=EARLY + 20).collect::<Vec<_>>());
    let (status, summary) = api.get(&format!("/api/products/{id}/queue/summary")).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(summary["queue_length"], EARLY + 20);
    assert_eq!(summary["admission_rate"], 1000);
    assert_eq!(
        summary["serving_position"],
        EARLY + 20,
        "1000 a second: everyone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn positions_are_admitted_at_the_rate_and_a_rate_change_applies_from_the_next_tick() {
    let db = TestDb::new().await;
    let server = db.server(&[("PRODUCT_READ_MAX_AGE_MS", "0")]).await;
    let api = Api::new(&server);
    let starts = Utc::now() + chrono::Duration::seconds(3);
    let id = product(&api, 100, starts, 2, 300).await;
    for i in 1..=12 {
        assert_eq!(join(&api.as_buyer(&format!("b-{i}")), id).await.0, 201);
    }
    until(starts).await;
    let mut by_position = Vec::new();
    for i in 1..=12 {
        let entry = positioned(&api.as_buyer(&format!("b-{i}")), id).await;
        by_position.push((entry["position"].as_u64().expect("position"), i, entry));
    }
    by_position.sort_by_key(|(position, _, _)| *position);
    let start_ms = instant(&json!(rfc3339(starts)));
    for (position, _, entry) in &by_position {
        let eta = instant(&entry["estimated_admission_at"]);
        let expected = start_ms + chrono::Duration::seconds(((position - 1) / 2) as i64);
        assert_eq!(
            eta, expected,
            "position {position}: start + floor((p - 1) / 2) s"
        );
        let as_of = Utc::now();
        match entry["status"].as_str() {
            Some("admitted") => {
                assert!(eta <= as_of);
                assert_eq!(entry["admitted_at"], entry["estimated_admission_at"]);
                let expires = instant(&entry["admission_expires_at"]);
                assert_eq!(expires, eta + chrono::Duration::seconds(300));
                assert!(entry["admission_token"].is_string());
            }
            Some("waiting") => {
                assert_eq!(entry["admission_token"], Value::Null);
                assert_eq!(entry["admitted_at"], Value::Null);
            }
            other => panic!("position {position}: {other:?}"),
        }
    }
    // Mid-sale, the rate goes from 2 to 10 a second.
    let (status, changed) = api
        .patch_admin(
            &format!("/api/admin/products/{id}"),
            &json!({"waiting_room": {"admission_rate": 10, "admission_ttl_seconds": 300}}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    assert_eq!(changed["waiting_room"]["admission_rate"], 10);
    let changed_at = Utc::now();
    let (_, summary) = api.get(&format!("/api/products/{id}/queue/summary")).await;
    let serving = summary["serving_position"].as_u64().expect("serving");
    for (position, i, before) in &by_position {
        let entry = entry(&api.as_buyer(&format!("b-{i}")), id).await.1;
        let eta = instant(&entry["estimated_admission_at"]);
        if *position <= serving {
            assert_eq!(
                entry["estimated_admission_at"], before["estimated_admission_at"],
                "position {position}, admitted before the change, stays as it was"
            );
            assert_eq!(entry["status"], "admitted", "no one is un-admitted");
        } else {
            assert!(
                eta > changed_at && eta <= changed_at + chrono::Duration::seconds(2),
                "position {position}: from the next tick at 10 a second, not {eta}"
            );
        }
    }
    // Everyone is in by the next tick or the one after.
    until(changed_at + chrono::Duration::seconds(2)).await;
    for i in 1..=12 {
        let entry = entry(&api.as_buyer(&format!("b-{i}")), id).await.1;
        assert_eq!(entry["status"], "admitted", "{entry}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hold_of_a_waiting_room_product_needs_the_buyers_own_valid_admission_token() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let starts = Utc::now() - chrono::Duration::seconds(30);
    let id = product(&api, 10, starts, 100, 300).await;
    let other = product(&api, 10, starts, 100, 300).await;
    let alice = api.as_buyer("alice");
    let (status, joined) = join(&alice, id).await;
    assert_eq!(status, 201, "{joined}");
    // Its position (and so its admission) once the draw (due at once: the start has passed,
    // and no one joined before it) has counted the pre-queue, by this join or by the sweeper.
    let admitted = positioned(&alice, id).await;
    assert_eq!(
        admitted["status"], "admitted",
        "its turn passed: admitted as it joins"
    );
    let token = admitted["admission_token"]
        .as_str()
        .expect("a token")
        .to_owned();

    assert_eq!(
        code(&hold_with(&alice, id, None).await),
        (403, "admission_required")
    );
    let forged = format!("{}0", &token[..token.len() - 1]);
    let forged = if forged == token {
        format!("{}1", &token[..token.len() - 1])
    } else {
        forged
    };
    assert_eq!(
        code(&hold_with(&alice, id, Some(&forged)).await),
        (403, "admission_invalid")
    );
    assert_eq!(
        code(&hold_with(&alice, id, Some("nonsense")).await),
        (403, "admission_invalid")
    );
    let bob = api.as_buyer("bob");
    assert_eq!(
        code(&hold_with(&bob, id, Some(&token)).await),
        (403, "admission_invalid"),
        "another buyer's token"
    );
    assert_eq!(
        code(&hold_with(&alice, other, Some(&token)).await),
        (403, "admission_invalid"),
        "another product's token"
    );
    let alice_id = BuyerId::parse("alice").expect("a buyer");
    let ended = tokens().issue(
        ProductId(id),
        &alice_id,
        (Utc::now() - chrono::Duration::seconds(1)).naive_utc(),
    );
    assert_eq!(
        code(&hold_with(&alice, id, Some(&ended)).await),
        (403, "admission_invalid"),
        "a token of ours whose admission ended"
    );
    let stock = api.product(id).await;
    assert_eq!(stock["reserved_stock"], 0, "no refusal held anything");

    let (status, hold) = hold_with(&alice, id, Some(&token)).await;
    assert_eq!(status, 201, "{hold}");
    let plain = api.create_product(5, "1.00").await;
    assert_eq!(
        hold_with(&bob, plain, None).await.0,
        201,
        "no waiting room, no token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admission_ends_after_its_ttl_and_the_buyer_may_join_again_at_the_back() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let starts = Utc::now() - chrono::Duration::seconds(60);
    let id = product(&api, 10, starts, 1, 10).await;
    // Carol joined 30 s ago (position 1, admitted then): her admission ended 20 s ago.
    sqlx::query(
        "INSERT INTO queue_entries (product_id, buyer_id, joined_at) \
         VALUES (?, 'carol', UTC_TIMESTAMP(3) - INTERVAL 30 SECOND)",
    )
    .bind(id)
    .execute(&db.pool)
    .await
    .expect("an old entry");
    let carol = api.as_buyer("carol");
    assert_eq!(join(&api.as_buyer("dave"), id).await.0, 201);
    let expired = positioned(&carol, id).await;
    assert_eq!(expired["status"], "expired");
    assert_eq!(expired["position"], 1);
    assert_eq!(expired["admission_token"], Value::Null);
    let ended = instant(&expired["admitted_at"]) + chrono::Duration::seconds(10);
    let old_token = tokens().issue(
        ProductId(id),
        &BuyerId::parse("carol").expect("a buyer"),
        ended.naive_utc(),
    );
    assert_eq!(
        code(&hold_with(&carol, id, Some(&old_token)).await),
        (403, "admission_invalid")
    );
    let (status, again) = join(&carol, id).await;
    assert_eq!(status, 201, "a new place: {again}");
    assert!(
        again["position"].as_u64() > Some(2),
        "at the back, behind dave: {again}"
    );
    assert_eq!(
        again["status"], "admitted",
        "the rate admitted that position long ago"
    );
    let (status, same) = join(&carol, id).await;
    assert_eq!((status, &same["position"]), (200, &again["position"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sold_out_product_takes_no_one_and_units_that_come_back_reopen_it() {
    let db = TestDb::new().await;
    let server = db.server(&[("PRODUCT_READ_MAX_AGE_MS", "0")]).await;
    let api = Api::new(&server);
    let starts = Utc::now() - chrono::Duration::seconds(30);
    let id = product(&api, 1, starts, 100, 300).await;
    let erin = api.as_buyer("erin");
    assert_eq!(join(&erin, id).await.0, 201);
    let token = positioned(&erin, id).await["admission_token"]
        .as_str()
        .expect("admitted")
        .to_owned();
    let (status, hold) = hold_with(&erin, id, Some(&token)).await;
    assert_eq!(status, 201, "{hold}");
    assert_eq!(
        join(&api.as_buyer("frank"), id).await.0,
        201,
        "a unit is only held"
    );
    let (status, order) = erin.order(hold["hold_id"].as_str().expect("hold")).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("order");
    let (status, paid) = erin.pay("evt-sold-out-1", order_id, "paid").await;
    assert!(matches!(status, 200 | 202), "{paid}");
    erin.wait_for_order(order_id, Duration::from_secs(10), |order| {
        order["status"] == "paid"
    })
    .await;

    assert_eq!(
        code(&join(&api.as_buyer("gina"), id).await),
        (409, "sold_out")
    );
    assert_eq!(entry(&erin, id).await.1["status"], "sold_out");
    let frank = entry(&api.as_buyer("frank"), id).await.1;
    assert_eq!(frank["status"], "sold_out");
    assert_eq!(frank["admission_token"], Value::Null);

    let (status, _) = api
        .patch_admin(
            &format!("/api/admin/products/{id}"),
            &json!({"total_stock": 2}),
        )
        .await;
    assert_eq!(status, 200);
    let frank = entry(&api.as_buyer("frank"), id).await.1;
    assert_eq!(
        frank["status"], "admitted",
        "the unit that came back reopens: {frank}"
    );
    let token = frank["admission_token"].as_str().expect("a token");
    assert_eq!(
        hold_with(&api.as_buyer("frank"), id, Some(token)).await.0,
        201
    );
    assert_eq!(
        join(&api.as_buyer("gina"), id).await.0,
        201,
        "a unit held is not sold out: the queue takes buyers again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_agree_on_positions_and_admissions_and_a_buyer_racing_both_gets_one_place() {
    let db = TestDb::new().await;
    let (first, second) = (db.server(&[]).await, db.server(&[]).await);
    let apis = [Api::new(&first), Api::new(&second)];
    let starts = Utc::now() + chrono::Duration::seconds(4);
    let id = product(&apis[0], 100, starts, 3, 300).await;
    // One buyer joining ten times at once through both instances: one place.
    let racer = [apis[0].as_buyer("racer"), apis[1].as_buyer("racer")];
    let answers = join_all((0..10).map(|i| join(&racer[i % 2], id))).await;
    let created = answers.iter().filter(|answer| answer.0 == 201).count();
    assert_eq!(created, 1, "one join made the place: {answers:?}");
    for answer in &answers {
        assert!(matches!(answer.0, 200 | 201), "{answer:?}");
        assert_eq!(
            answer.1["joined_at"], answers[0].1["joined_at"],
            "the same place"
        );
    }
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM queue_entries WHERE product_id = ? AND buyer_id = 'racer'",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .expect("a count");
    assert_eq!(rows, 1);
    for i in 0..30 {
        let status = join(&apis[i % 2].as_buyer(&format!("pair-{i}")), id)
            .await
            .0;
        assert_eq!(status, 201);
    }
    until(starts).await;
    // Both instances read every entry alike: position, admission and its token.
    let mut positions = HashSet::new();
    for i in 0..30 {
        let buyer = format!("pair-{i}");
        let one = positioned(&apis[0].as_buyer(&buyer), id).await;
        let other = entry(&apis[1].as_buyer(&buyer), id).await.1;
        for field in [
            "position",
            "estimated_admission_at",
            "admission_expires_at",
            "admission_token",
        ] {
            if one["status"] == other["status"] {
                assert_eq!(one[field], other[field], "{buyer} {field}");
            }
        }
        assert_eq!(one["position"], other["position"], "{buyer}");
        positions.insert(one["position"].as_u64().expect("a position"));
    }
    assert_eq!(positions.len(), 30, "distinct positions");
    assert!(positions.iter().all(|position| (1..=31).contains(position)));
    let draws: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue_draws WHERE product_id = ?")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .expect("a count");
    assert_eq!(draws, 1, "drawn once");
    let (_, one) = apis[0]
        .get(&format!("/api/products/{id}/queue/summary"))
        .await;
    let (_, other) = apis[1]
        .get(&format!("/api/products/{id}/queue/summary"))
        .await;
    assert_eq!(one["queue_length"], 31);
    assert_eq!(one["queue_length"], other["queue_length"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_routes_answer_products_without_a_waiting_room_and_buyers_not_in_it() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);
    let plain = api.create_product(5, "1.00").await;
    assert_eq!(code(&join(&api, plain).await), (409, "no_waiting_room"));
    assert_eq!(code(&entry(&api, plain).await), (409, "no_waiting_room"));
    assert_eq!(
        code(
            &api.get(&format!("/api/products/{plain}/queue/summary"))
                .await
        ),
        (409, "no_waiting_room")
    );
    assert_eq!(code(&join(&api, 999_999).await), (404, "product_not_found"));
    let id = product(&api, 5, Utc::now() + chrono::Duration::seconds(60), 10, 300).await;
    assert_eq!(code(&entry(&api, id).await), (404, "not_in_queue"));
    assert_eq!(
        code(&join(&api.with_token(None), id).await),
        (401, "unauthorized")
    );
    let (status, summary) = api.get(&format!("/api/products/{id}/queue/summary")).await;
    assert_eq!(status, 200, "{summary}");
    assert_eq!(
        (
            summary["serving_position"].as_u64(),
            summary["queue_length"].as_u64()
        ),
        (Some(0), Some(0))
    );
    // A waiting room needs a start; null removes it.
    let (status, refused) = api
        .patch_admin(
            &format!("/api/admin/products/{plain}"),
            &json!({"waiting_room": {"admission_rate": 5}}),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_request"))
    );
    for bad in [
        json!({"admission_rate": 0}),
        json!({"admission_rate": 100_001}),
        json!({"admission_rate": 5, "admission_ttl_seconds": 9}),
        json!({"rate": 5}),
    ] {
        let (status, _) = api
            .patch_admin(
                &format!("/api/admin/products/{id}"),
                &json!({"waiting_room": bad}),
            )
            .await;
        assert_eq!(status, 400, "{bad}");
    }
    let (status, removed) = api
        .patch_admin(
            &format!("/api/admin/products/{id}"),
            &json!({"waiting_room": null}),
        )
        .await;
    assert_eq!((status, &removed["waiting_room"]), (200, &Value::Null));
    assert_eq!(
        hold_with(&api, id, None).await.1["error"]["code"],
        "sale_not_started"
    );
}
