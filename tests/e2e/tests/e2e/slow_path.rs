//! The catch-up paths under trouble: a reservation's slow path at sell-out while holds lapse all
//! the time ends in a hold or a refusal, and the sweep settles every product it can when one
//! product's settlement fails.

use std::time::Duration;

use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants};
use flash_sale_local::Options;
use shared::domain::ids::ProductId;
use shared::store::holds::{HoldRequest, reserve};
use shared::store::products::{NewProduct, create_product};

fn no_background_work() -> Options {
    Options {
        background_work: false,
        ..Options::default()
    }
}

async fn product(db: &TestDb, stock: u32, buckets: u16) -> ProductId {
    let new = NewProduct {
        name: "Slow path".into(),
        price: shared::domain::money::Cents(500),
        stock,
        buckets,
        sale: Default::default(),
    };
    create_product(&db.pool, &new).await.expect("product").id
}

/// A few units over three buckets, holds of 1 to 3 units that lapse within tens of milliseconds,
/// and no sweeper or trigger: only the reservations themselves settle what lapsed. A reservation
/// that gathers units sees units lapse under it again and again; it must settle them as it
/// goes, and, losing round after round to other holds, still answer a hold or a refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reservations_at_sell_out_while_holds_lapse_end_in_a_hold_or_a_refusal() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], no_background_work()).await;
    let api = Api::new(&server);
    let product_id = product(&db, 6, 3).await;
    let pool = shared::store::db::connect(&db.url, 20)
        .await
        .expect("a pool for the clients");

    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let clients = (0..16u32).map(|client| {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            while tokio::time::Instant::now() < until {
                let request = HoldRequest {
                    product_id,
                    buyer: None,
                    qty: 1 + client % 3,
                    idempotency_key: None,
                };
                let ttl = Duration::from_millis(fastrand::u64(10..60));
                answers.push(match reserve(&pool, &request, ttl).await {
                    Ok(_) => (201, String::new()),
                    Err(err) => (err.status(), err.to_string()),
                });
            }
            answers
        })
    });
    let mut answers = Vec::new();
    for client in futures::future::join_all(clients).await {
        answers.extend(client.expect("a client ran"));
    }

    let count = |status: u16| answers.iter().filter(|(s, _)| *s == status).count();
    let others: Vec<&(u16, String)> = answers
        .iter()
        .filter(|(status, _)| *status != 201 && *status != 409)
        .collect();
    assert!(
        others.is_empty(),
        "every answer is a hold or a refusal ({} holds, {} refusals, {} others): {:?}",
        count(201),
        count(409),
        others.len(),
        others.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        count(201) > 0 && count(409) > 0,
        "sold out and lapsing: {} holds, {} refusals",
        count(201),
        count(409)
    );

    assert_stock_invariants(&db.pool, &api, product_id.0).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    shared::store::settle::settle_lapsed(&db.pool, product_id)
        .await
        .expect("settled");
    let stock = assert_stock_invariants(&db.pool, &api, product_id.0).await;
    assert_eq!(
        (
            stock["available_stock"].as_i64(),
            stock["total_stock"].as_i64()
        ),
        (Some(6), Some(6)),
        "every unit back once every hold lapsed: {stock}"
    );
}
