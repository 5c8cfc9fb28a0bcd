//! Reconciliation: counters corrupted on purpose are found (by the on-demand check, the sweeper
//! and `flash-sale-local reconcile`, whose test runs the binary: tests/local/tests/cli), reported,
//! left alone unless repair is asked for, and then repaired to exactly what the holds and orders say.

use std::sync::Arc;
use std::time::Duration;

use flash_sale_e2e::drift::{leak_a_reservation, product_with_a_hold_and_an_order, quiet, stored};
use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants};
use shared::adapters::local::NoPublisher;
use shared::store::reconcile::Counters;

#[tokio::test]
async fn drift_is_reported_left_alone_and_repaired_only_when_asked() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], quiet()).await;
    let api = Api::new(&server);
    let product = product_with_a_hold_and_an_order(&api).await;
    let clean = shared::store::reconcile::reconcile(&db.pool, None, false)
        .await
        .expect("reconciled");
    assert!(clean.drifted.is_empty(), "{clean:?}");
    assert_eq!(
        clean.buckets_checked, 2,
        "the demo product's and this one's"
    );

    leak_a_reservation(&db, product).await;
    let report = shared::store::reconcile::reconcile(&db.pool, None, false)
        .await
        .expect("reconciled");
    assert_eq!(report.drifted.len(), 1, "{report:?}");
    let drift = &report.drifted[0];
    assert_eq!((drift.product_id, drift.bucket), (product, 0));
    assert_eq!(
        drift.stored,
        Counters {
            available_stock: 4,
            reserved_stock: 3,
            sold_stock: 3
        }
    );
    assert_eq!(
        drift.expected,
        Counters {
            available_stock: 5,
            reserved_stock: 2,
            sold_stock: 3
        }
    );
    assert!(!drift.repaired);
    assert_eq!(report.unresolved(), 1);
    assert_eq!(
        stored(&db, product).await,
        (4, 3, 3),
        "a check repairs nothing"
    );

    let repaired = shared::store::reconcile::reconcile(
        &db.pool,
        Some(shared::domain::ids::ProductId(product)),
        true,
    )
    .await
    .expect("repaired");
    assert!(repaired.drifted[0].repaired, "{repaired:?}");
    assert_eq!(repaired.unresolved(), 0);
    assert_eq!(stored(&db, product).await, (5, 2, 3));
    assert_stock_invariants(&db.pool, &api, product).await;
    let after = shared::store::reconcile::reconcile(&db.pool, None, false)
        .await
        .expect("reconciled");
    assert!(after.drifted.is_empty(), "{after:?}");
}

#[tokio::test]
async fn more_units_held_than_exist_is_reported_but_never_written() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], quiet()).await;
    let api = Api::new(&server);
    let product = product_with_a_hold_and_an_order(&api).await;
    // A hold whose quantity was edited past the product's total: no counters can express it.
    sqlx::query("UPDATE holds SET qty = 50 WHERE product_id = ? AND status = 'active'")
        .bind(product)
        .execute(&db.pool)
        .await
        .expect("corrupt a hold");
    let report = shared::store::reconcile::reconcile(&db.pool, None, true)
        .await
        .expect("reconciled");
    assert_eq!(report.drifted.len(), 1, "{report:?}");
    assert!(!report.drifted[0].repairable());
    assert!(!report.drifted[0].repaired);
    assert_eq!(report.unresolved(), 1);
    assert_eq!(stored(&db, product).await, (5, 2, 3), "left as it was");
}

/// Every bucket's counters of a product, in bucket order.
async fn buckets(db: &TestDb, product: u64) -> Vec<(i64, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT CAST(total_stock AS SIGNED), CAST(available_stock AS SIGNED), CAST(reserved_stock AS SIGNED), CAST(sold_stock AS SIGNED) FROM stock_buckets WHERE product_id = ? ORDER BY bucket",
    )
    .bind(product)
    .fetch_all(&db.pool)
    .await
    .expect("buckets")
}

/// A repair computes a bucket's counters from its total; when the product's total and its
/// buckets' disagree, nothing says which total is right, so the repair writes nothing of that
/// product and says so, and still repairs the other products.
#[tokio::test]
async fn a_product_whose_total_differs_from_its_buckets_is_not_repaired_and_is_reported() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], quiet()).await;
    let api = Api::new(&server);
    let split = api.create_split_product(10, 2, "5.00").await;
    leak_a_reservation(&db, split).await;
    sqlx::query("UPDATE products SET total_stock = total_stock + 1 WHERE id = ?")
        .bind(split)
        .execute(&db.pool)
        .await
        .expect("corrupt the product's total");
    let corrupted = buckets(&db, split).await;
    let other = product_with_a_hold_and_an_order(&api).await;
    leak_a_reservation(&db, other).await;

    let report = shared::store::reconcile::reconcile(&db.pool, None, true)
        .await
        .expect("reconciled");

    assert_eq!(
        buckets(&db, split).await,
        corrupted,
        "nothing of it written"
    );
    assert_eq!(report.totals_drifted.len(), 1, "{report:?}");
    let total = &report.totals_drifted[0];
    assert_eq!(
        (total.product_id, total.product_total, total.buckets_total),
        (split, 11, 10)
    );
    assert!(total.repair_refused, "{report:?}");
    let split_drift: Vec<_> = report
        .drifted
        .iter()
        .filter(|d| d.product_id == split)
        .collect();
    assert_eq!(split_drift.len(), 2, "both buckets leaked: {report:?}");
    assert!(split_drift.iter().all(|d| !d.repaired), "{report:?}");
    assert_eq!(
        report.unresolved(),
        3,
        "two buckets and the total: {report:?}"
    );
    assert_eq!(
        stored(&db, other).await,
        (5, 2, 3),
        "the other product is repaired"
    );

    // A check alone refuses nothing: it repairs nothing.
    let checked = shared::store::reconcile::reconcile(&db.pool, None, false)
        .await
        .expect("reconciled");
    assert!(!checked.totals_drifted[0].repair_refused, "{checked:?}");
}

#[tokio::test]
async fn the_sweeper_reports_drift_without_repairing_it() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], quiet()).await;
    let api = Api::new(&server);
    let product = product_with_a_hold_and_an_order(&api).await;
    leak_a_reservation(&db, product).await;
    let deps = db.sweeper(Arc::new(NoPublisher));
    let report = sweeper::handle(&deps).await.expect("swept");
    assert_eq!(report.stock_drift, 1);
    assert_eq!(stored(&db, product).await, (4, 3, 3));
}

/// The check takes no lock, so it must never see drift that is not there, and a repair (under
/// the bucket locks) must never write over live work: reconciliation runs in a loop while clients
/// hold, order and let holds lapse on a split product, and the sweeper settles them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconciling_under_load_never_reports_false_drift_nor_breaks_the_stock() {
    let db = TestDb::new().await;
    let server = db.server(&[("HOLD_TTL_SECONDS", "1")]).await;
    let api = Api::new(&server);
    let product = api.create_split_product(300, 4, "5.00").await;

    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    let clients: Vec<_> = (0..12)
        .map(|client| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut round = 0u32;
                while tokio::time::Instant::now() < until {
                    round += 1;
                    let (status, hold) = api.hold(product, 1 + round % 3).await;
                    // Every other hold is redeemed; the rest lapse and are settled.
                    if status == 201 && (client + round).is_multiple_of(2) {
                        let (status, order) =
                            api.order(hold["hold_id"].as_str().expect("hold id")).await;
                        assert!(status == 201 || status == 410, "{order}");
                    }
                }
            })
        })
        .collect();
    let mut checks = 0;
    while tokio::time::Instant::now() < until {
        // A repair now and then: with nothing drifted it must write nothing.
        let repair = checks % 5 == 4;
        let report = shared::store::reconcile::reconcile(
            &db.pool,
            Some(shared::domain::ids::ProductId(product)),
            repair,
        )
        .await
        .expect("reconciled");
        assert!(
            report.drifted.is_empty(),
            "false drift under load: {report:?}"
        );
        assert!(report.totals_drifted.is_empty(), "{report:?}");
        checks += 1;
    }
    for client in clients {
        client.await.expect("client");
    }
    assert!(checks > 10, "only {checks} checks ran");
    assert_stock_invariants(&db.pool, &api, product).await;
    let after = shared::store::reconcile::reconcile(&db.pool, None, false)
        .await
        .expect("reconciled");
    assert_eq!(after.unresolved(), 0, "{after:?}");
}
