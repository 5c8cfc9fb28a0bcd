//! `flash-sale-local reconcile`, run as a person runs it: the real binary, on a database whose
//! counters were corrupted on purpose.

use flash_sale_e2e::drift::{leak_a_reservation, product_with_a_hold_and_an_order, quiet, stored};
use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants};
use secrecy::ExposeSecret;
use serde_json::Value;

/// `flash-sale-local reconcile`: the report on stdout, the drift as an error log line and a
/// `StockDrift` metric line, exit status 1 while drift remains; `--repair` fixes it and exits 0.
#[tokio::test]
async fn the_reconcile_command_reports_then_repairs() {
    let db = TestDb::new().await;
    let server = db.server_with(&[], quiet()).await;
    let api = Api::new(&server);
    let product = product_with_a_hold_and_an_order(&api).await;
    leak_a_reservation(&db, product).await;

    let run = |args: &'static [&'static str]| {
        let url = db.url.expose_secret().to_owned();
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_flash-sale-local"))
                .arg("reconcile")
                .args(args)
                .env("DATABASE_URL", url)
                .env("RUST_LOG", "info")
                .env_remove("AWS_LAMBDA_LOG_FORMAT")
                .output()
                .await
                .expect("run flash-sale-local reconcile")
        }
    };
    let checked = run(&[]).await;
    let stdout = String::from_utf8_lossy(&checked.stdout);
    assert_eq!(checked.status.code(), Some(1), "{stdout}");
    let lines: Vec<Value> = stdout
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["fields"]["product_id"] == product
            && l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("drifted"))),
        "an error log line names the product: {stdout}"
    );
    assert!(
        lines.iter().any(|l| l["StockDrift"] == 1
            && l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == "StockDrift"),
        "a StockDrift metric line: {stdout}"
    );
    let report = lines
        .iter()
        .find(|l| l.get("buckets_checked").is_some())
        .unwrap_or_else(|| panic!("a report line: {stdout}"));
    assert_eq!(report["drifted"][0]["product_id"], product, "{report}");
    assert_eq!(report["drifted"][0]["repaired"], false, "{report}");
    assert_eq!(stored(&db, product).await, (4, 3, 3));

    let repaired = run(&["--repair"]).await;
    let stdout = String::from_utf8_lossy(&repaired.stdout);
    assert_eq!(repaired.status.code(), Some(0), "{stdout}");
    assert_eq!(stored(&db, product).await, (5, 2, 3));
    assert_stock_invariants(&db.pool, &api, product).await;

    let bad = run(&["--product"]).await;
    assert_eq!(bad.status.code(), Some(2), "a usage error is not drift");
}
