//! Secret hygiene and observability, read off the real `flash-sale-local` binary's stdout and
//! stderr across the main flows (and the failures most likely to echo configuration): no line
//! holds the webhook secrets, the admin token or the database password; every line is JSON;
//! requests log their request id, holds and orders their ids; the metrics arrive as EMF lines.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flash_sale_e2e::testing::{ADMIN_TOKEN, Api, PasswordUser, TestDb, WEBHOOK_SECRET};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A second, retired webhook secret: rotation lists must stay out of the logs too.
const OLD_WEBHOOK_SECRET: &str = "retired-webhook-secret-4f1c";

/// Every line a child process writes, stdout and stderr alike.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn capture(&self, child: &mut Child) -> Vec<tokio::task::JoinHandle<()>> {
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        vec![self.collect(stdout), self.collect(stderr)]
    }

    fn collect(
        &self,
        stream: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let lines = self.0.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stream).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                lines.lock().expect("lines").push(line);
            }
        })
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().expect("lines").clone()
    }
}

fn local_server(url: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flash-sale-local"));
    command
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "debug")
        .env_remove("AWS_LAMBDA_LOG_FORMAT")
        .env_remove("WEBHOOK_QUEUE_URL")
        .env_remove("HOLD_SCHEDULE_GROUP")
        .env_remove("EVENT_BUS_NAME")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_ever_reaches_the_logs_and_every_line_is_structured() {
    let db = TestDb::new().await;
    let user = PasswordUser::create(&db).await;
    let url = user.url(&db, &user.password);
    let output = Output::default();

    let mut server = local_server(&url)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("ADMIN_TOKEN", ADMIN_TOKEN)
        .env(
            "BUYER_JWT_SECRET",
            flash_sale_e2e::testing::BUYER_JWT_SECRET,
        )
        .env(
            "WEBHOOK_SECRET",
            format!("{OLD_WEBHOOK_SECRET},{WEBHOOK_SECRET}"),
        )
        .env(
            "ADMISSION_TOKEN_SECRET",
            flash_sale_e2e::testing::ADMISSION_TOKEN_SECRET,
        )
        // Holds lapse quickly, so the expiry trigger's work shows; the sweeper runs once, at
        // start, so it cannot settle that hold before its trigger does.
        .env("HOLD_TTL_SECONDS", "2")
        .env("SWEEP_INTERVAL_SECONDS", "3600")
        .spawn()
        .expect("start flash-sale-local");
    let mut readers = output.capture(&mut server);
    let base = wait_for_listening(&output).await;
    let api = Api::at(base.clone());

    // The main flows: a product, a hold (and its replay), an order, a payment.
    let product = api.create_product(20, "12.50").await;
    let idempotent = [("idempotency-key", "checkout-logs-1")];
    let hold_body = json!({"product_id": product, "qty": 2}).to_string();
    let (status, hold) = api
        .post_raw("/api/holds", hold_body.clone(), &idempotent)
        .await;
    assert_eq!(status, 201, "{hold}");
    let (status, _) = api.post_raw("/api/holds", hold_body, &idempotent).await;
    assert_eq!(status, 201);
    let hold_id = hold["hold_id"].as_str().expect("hold id").to_owned();
    let (status, order) = api.order(&hold_id).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("order id").to_owned();
    let (status, _) = api.pay("evt_logs_paid", &order_id, "paid").await;
    assert_eq!(status, 202);
    api.wait_for_order(&order_id, Duration::from_secs(10), |o| {
        o["status"] == "paid"
    })
    .await;
    // Money to give back or look at: a second payment, and one of another amount.
    let (status, _) = api.pay("evt_logs_twice", &order_id, "paid").await;
    assert_eq!(status, 202);
    let other_amount = json!({"idempotency_key": "evt_logs_amount", "order_id": order_id,
                              "status": "paid", "amount": "1.00"});
    assert_eq!(api.pay_event(&other_amount).await.0, 202);
    api.wait_for_order(&order_id, Duration::from_secs(10), |o| {
        o["payments"]
            .as_array()
            .is_some_and(|payments| payments.len() == 3)
    })
    .await;
    // A hold left to expire: its trigger settles it two seconds later.
    let (status, lapsing) = api.hold(product, 1).await;
    assert_eq!(status, 201, "{lapsing}");
    // Refusals and bad input, the paths that echo what they were sent.
    let scarce = api.create_product(1, "3.00").await;
    let (status, _) = api.hold(scarce, 2).await;
    assert_eq!(status, 409);
    let (status, _) = api
        .post_raw(
            "/api/admin/products",
            json!({"name": "x", "price": "1.00", "stock": 1}).to_string(),
            &[("authorization", "Bearer test-admin-token-but-wrong")],
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = api
        .post_raw(
            "/api/payments/webhook",
            json!({"idempotency_key": "evt_forged", "order_id": order_id, "status": "failed"})
                .to_string(),
            &[("x-signature", "t=1,v1=00")],
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = api
        .post_raw("/api/holds", "{not json".to_owned(), &[])
        .await;
    assert_eq!(status, 400);
    let traced = reqwest::Client::new()
        .get(format!("{base}/api/holds/{hold_id}"))
        .bearer_auth(flash_sale_e2e::testing::buyer_token(
            flash_sale_e2e::testing::DEFAULT_BUYER,
        ))
        .header("x-request-id", "trace-me-7")
        .send()
        .await
        .expect("answer");
    assert_eq!(traced.headers()["x-request-id"], "trace-me-7");
    let expired_id = lapsing["hold_id"].as_str().expect("hold id").to_owned();
    wait_for_line(&output, |line| {
        line["fields"]["message"] == "hold expired" && line["fields"]["hold_id"] == expired_id
    })
    .await;

    // Commands that read the same configuration: reconcile, and a start with a wrong password.
    let mut reconcile = local_server(&url)
        .arg("reconcile")
        .spawn()
        .expect("run reconcile");
    readers.extend(output.capture(&mut reconcile));
    assert!(reconcile.wait().await.expect("reconcile ran").success());
    let wrong_password = "wrong-password-9d2e";
    let mut refused = local_server(&user.url(&db, wrong_password))
        .arg("migrate")
        .spawn()
        .expect("run migrate");
    readers.extend(output.capture(&mut refused));
    assert!(!refused.wait().await.expect("migrate ran").success());

    server.kill().await.expect("stop the server");
    for reader in readers {
        reader.await.expect("reader");
    }

    let lines = output.lines();
    let all = lines.join("\n");
    for secret in [
        ADMIN_TOKEN,
        WEBHOOK_SECRET,
        OLD_WEBHOOK_SECRET,
        flash_sale_e2e::testing::BUYER_JWT_SECRET,
        flash_sale_e2e::testing::ADMISSION_TOKEN_SECRET,
        &user.password,
        wrong_password,
    ] {
        assert!(
            !all.contains(secret),
            "a secret ({} chars) appears in the logs",
            secret.len()
        );
    }
    let parsed: Vec<Value> = lines
        .iter()
        .filter(|line| !line.trim().is_empty() && !is_human_banner(line))
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|_| panic!("a log line is not JSON: {line}"))
        })
        .collect();
    let logged = |predicate: &dyn Fn(&Value) -> bool, what: &str| {
        assert!(parsed.iter().any(predicate), "no log line {what}:\n{all}");
    };
    logged(
        &|l| l["fields"]["message"] == "hold created" && l["fields"]["hold_id"] == hold_id.as_str(),
        "for the created hold",
    );
    logged(
        &|l| {
            l["fields"]["message"] == "order created"
                && l["fields"]["order_id"] == order_id.as_str()
                && l["fields"]["hold_id"] == hold_id.as_str()
        },
        "for the created order",
    );
    logged(
        &|l| l["fields"]["message"] == "payment event applied" && l["fields"]["outcome"] == "paid",
        "for the applied payment",
    );
    logged(
        &|l| {
            l["level"] == "WARN"
                && l["fields"]["message"] == "payment taken that must be refunded"
                && l["fields"]["outcome"] == "double_charge"
                && l["fields"]["idempotency_key"] == "evt_logs_twice"
        },
        "at warn for the double charge",
    );
    logged(
        &|l| {
            l["level"] == "WARN"
                && l["fields"]["idempotency_key"] == "evt_logs_amount"
                && l["fields"]["reported_amount"] == "1.00"
        },
        "at warn for the payment of another amount",
    );
    let about_the_payment = parsed
        .iter()
        .filter(|l| l["fields"]["idempotency_key"] == "evt_logs_paid")
        .count();
    assert_eq!(about_the_payment, 1, "one line per payment outcome:\n{all}");
    logged(
        &|l| {
            l["span"]["request_id"] == "trace-me-7"
                && l["fields"]["message"] == "request done"
                && l["fields"]["status"] == 200
        },
        "with the client's request id",
    );
    logged(
        &|l| {
            l["fields"]["message"] == "hold created"
                && l["span"]["request_id"]
                    .as_str()
                    .is_some_and(|id| id.len() == 36)
        },
        "naming its generated request id",
    );
    for metric in [
        "HoldsCreated",
        "HoldsRefused",
        "OrdersCreated",
        "PaymentsApplied",
        "RefundsRequired",
        "PaymentAmountMismatches",
        "ExpiryLag",
    ] {
        logged(
            &|l| {
                l[metric].is_u64()
                    && l["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Name"] == metric
            },
            &format!("with the EMF metric {metric}"),
        );
    }
    // Counts of zero print nothing: the one sweep (at start) settled nothing, and neither it nor
    // the reconcile command found drift.
    for metric in ["SweeperSettled", "StockDrift"] {
        assert!(
            !parsed.iter().any(|l| l.get(metric).is_some()),
            "a {metric} line for a count of zero:\n{all}"
        );
    }
}

/// The one line meant for a person at a terminal (it is logged as JSON too).
fn is_human_banner(line: &str) -> bool {
    line.starts_with("flash-sale local server listening on")
}

async fn wait_for_listening(output: &Output) -> String {
    for _ in 0..600 {
        if let Some(url) = output.lines().iter().find_map(|line| {
            line.strip_prefix("flash-sale local server listening on ")
                .map(str::to_owned)
        }) {
            return url;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the server never said where it listens:\n{}",
        output.lines().join("\n")
    );
}

async fn wait_for_line(output: &Output, predicate: impl Fn(&Value) -> bool) {
    for _ in 0..200 {
        if output
            .lines()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .any(|line| predicate(&line))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "expected log line never came:\n{}",
        output.lines().join("\n")
    );
}
