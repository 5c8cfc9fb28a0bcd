//! The request paths' database traffic, counted on the wire (`flash_sale_local::wire`) as Lambda
//! containers make it: each function's handler on a pool of one connection of its own through
//! the counting proxy, the scheduler and the bus outside the database (as on AWS), warmed up by
//! one of each operation, then measured one operation at a time against issue 13's targets. A
//! hold on the fast path is one command and nothing else; no request path prepares a
//! statement, none sends a statement that pins a client connection behind RDS Proxy, and none
//! sends more commands than before issue 13; a container's connection is set up without pinning
//! it. Each test measures on a database of its own and prints what it measured.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use flash_sale_e2e::testing::{TestDb, WEBHOOK_SECRET, test_config, webhook_signature};
use flash_sale_local::wire::faults::FaultRelay;
use flash_sale_local::wire::{WireCounter, WireCounts, pinning, untracked_settings};
use lambda_http::Body;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use shared::adapters::local::{InboxQueue, LogPublisher, NoPublisher, NoScheduler};
use shared::config::BuyerAuth;
use shared::domain::payment::PaymentEvent;
use shared::store::pool::Pool;
use sqlx::Connection;

const BUYER: &str = "wire-buyer";

/// The functions on the request paths, each as its Lambda builds it, on a pool of its own
/// through one counting proxy.
struct Containers {
    wire: WireCounter,
    /// Behind the counter, RDS Proxy's part: the InitQuery on each connection it opens.
    _proxy: FaultRelay,
    /// Beside the proxy: what the tests read to check an outcome is not counted.
    admin: Pool,
    get_product: get_product::Deps,
    create_hold: create_hold::Deps,
    get_hold: get_hold::Deps,
    create_order: create_order::Deps,
    get_order: get_order::Deps,
    /// Without a queue service: the event is queued in the database and applied at once.
    payment_webhook: payment_webhook::Deps,
    webhook_pool: Pool,
    /// Behind SQS: the webhook touches no database, the processor applies the message.
    payment_processor: payment_processor::Deps,
}

impl Containers {
    async fn new(db: &TestDb) -> Self {
        let proxy = FaultRelay::in_front_of(db.url.expose_secret())
            .await
            .expect("a relay");
        proxy.set_init_query(&shared::store::session::Server::MariaDb.session_init());
        let behind_the_proxy = proxy.url(db.url.expose_secret());
        let wire = WireCounter::in_front_of(&behind_the_proxy)
            .await
            .expect("a wire counter");
        // As the template deploys them: behind RDS Proxy, whose InitQuery sets the session.
        let config = test_config(
            &wire.url(&behind_the_proxy),
            &[("DATABASE_SESSION_SETUP", "proxy")],
        );
        assert_eq!(config.database.max_connections, None);
        let pool = || {
            let options =
                shared::store::db::connect_options(&config.database.url).expect("a valid URL");
            shared::store::db::lazy_pool(&config, options)
        };
        let webhook_pool = pool();
        Self {
            get_product: get_product::Deps { pool: pool() },
            create_hold: create_hold::Deps {
                pool: pool(),
                scheduler: Arc::new(NoScheduler),
                publisher: Arc::new(NoPublisher),
                hold_ttl: config.holds.ttl,
                max_hold_qty: config.holds.max_qty,
                buyer_auth: BuyerAuth::Jwt,
                admission_tokens: None,
            },
            get_hold: get_hold::Deps {
                pool: pool(),
                buyer_auth: BuyerAuth::Jwt,
            },
            // EventBridge takes every event: each is marked published, as on AWS.
            create_order: create_order::Deps {
                pool: pool(),
                scheduler: Arc::new(NoScheduler),
                publisher: Arc::new(LogPublisher),
                payment_window: config.payment_window(),
                buyer_auth: BuyerAuth::Jwt,
            },
            get_order: get_order::Deps {
                pool: pool(),
                buyer_auth: BuyerAuth::Jwt,
            },
            payment_webhook: payment_webhook::Deps {
                secrets: vec![SecretString::from(WEBHOOK_SECRET.to_owned())],
                tolerance: config.webhook.tolerance,
                queue: Arc::new(InboxQueue::draining_on_enqueue(
                    webhook_pool.clone(),
                    config.payment_retry_policy(),
                    Arc::new(NoPublisher),
                )),
            },
            webhook_pool,
            payment_processor: payment_processor::Deps {
                pool: pool(),
                publisher: Arc::new(LogPublisher),
                max_attempts: config.webhook.max_attempts,
            },
            wire,
            _proxy: proxy,
            admin: db.pool.clone(),
        }
    }

    /// What `operation` sent, once its connection is back in its pool (a connection given back
    /// with work queued is finished in the background, after the handler has answered).
    async fn measure<T>(&self, pool: &Pool, operation: impl Future<Output = T>) -> (T, WireCounts) {
        let before = self.wire.take();
        assert_eq!(
            before.commands, 0,
            "nothing was on the wire between operations: {before:?}"
        );
        let output = operation.await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !pool.is_idle() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the connection never came back"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (output, self.wire.take())
    }

    /// Every request-path operation, in a buyer's order, on fresh holds and orders (a second hold
    /// and order for the payment through the queue): what each sent.
    async fn walk(&self, product_id: u64) -> Vec<(&'static str, WireCounts)> {
        let mut measured = Vec::new();

        let path = format!("/api/products/{product_id}");
        let request = gateway(
            "GET",
            &path,
            Some(("product_id", &product_id.to_string())),
            None,
        );
        let (product, counts) = self
            .measure(
                &self.get_product.pool,
                get_product::handle(&self.get_product, request),
            )
            .await;
        assert_eq!(answer(product).0, 200);
        measured.push(("get-product", counts));

        let (hold_id, counts) = self.hold(product_id).await;
        measured.push(("create-hold", counts));

        let path = format!("/api/holds/{hold_id}");
        let request = gateway("GET", &path, Some(("hold_id", &hold_id)), None);
        let (hold, counts) = self
            .measure(
                &self.get_hold.pool,
                get_hold::handle(&self.get_hold, request),
            )
            .await;
        assert_eq!(answer(hold).0, 200);
        measured.push(("get-hold", counts));

        let (order_id, counts) = self.order(&hold_id).await;
        measured.push(("create-order", counts));

        let path = format!("/api/orders/{order_id}");
        let request = gateway("GET", &path, Some(("order_id", &order_id)), None);
        let (order, counts) = self
            .measure(
                &self.get_order.pool,
                get_order::handle(&self.get_order, request),
            )
            .await;
        assert_eq!(answer(order).0, 200);
        measured.push(("get-order", counts));

        let body = payment(&order_id).to_string();
        let signature = webhook_signature(&body);
        let mut request = gateway("POST", "/api/payments/webhook", None, None);
        *request.body_mut() = Body::Text(body);
        request
            .headers_mut()
            .insert("x-signature", signature.parse().expect("a header value"));
        let (accepted, counts) = self
            .measure(
                &self.webhook_pool,
                payment_webhook::handle(&self.payment_webhook, request),
            )
            .await;
        assert_eq!(answer(accepted).0, 202);
        self.assert_paid(&order_id).await;
        measured.push(("payment-webhook + inbox", counts));

        // A second order, paid through the queue.
        let (hold_id, counts) = self.hold(product_id).await;
        measured.push(("create-hold", counts));
        let (order_id, counts) = self.order(&hold_id).await;
        measured.push(("create-order", counts));
        let (report, counts) = self
            .measure(
                &self.payment_processor.pool,
                payment_processor::handle(&self.payment_processor, sqs_message(&order_id)),
            )
            .await;
        let report = report.expect("handled");
        assert!(report.batch_item_failures.is_empty(), "{report:?}");
        self.assert_paid(&order_id).await;
        measured.push(("payment-processor", counts));

        measured
    }

    async fn hold(&self, product_id: u64) -> (String, WireCounts) {
        let body = json!({"product_id": product_id, "qty": 1});
        let request = gateway("POST", "/api/holds", None, Some(&body));
        let (hold, counts) = self
            .measure(
                &self.create_hold.pool,
                create_hold::handle(&self.create_hold, request),
            )
            .await;
        let (status, hold) = answer(hold);
        assert_eq!(status, 201, "{hold}");
        let hold_id = hold["hold_id"].as_str().expect("a hold id").to_owned();
        (hold_id, counts)
    }

    async fn order(&self, hold_id: &str) -> (String, WireCounts) {
        let request = gateway(
            "POST",
            "/api/orders",
            None,
            Some(&json!({"hold_id": hold_id})),
        );
        let (order, counts) = self
            .measure(
                &self.create_order.pool,
                create_order::handle(&self.create_order, request),
            )
            .await;
        let (status, order) = answer(order);
        assert_eq!(status, 201, "{order}");
        let order_id = order["order_id"].as_str().expect("an order id").to_owned();
        (order_id, counts)
    }

    /// Read beside the proxy, so it adds nothing to the counts.
    async fn assert_paid(&self, order_id: &str) {
        let status: String = sqlx::query_scalar("SELECT status FROM orders WHERE id = ?")
            .bind(order_id)
            .fetch_one(&self.admin)
            .await
            .expect("the order");
        assert_eq!(status, "paid");
    }
}

/// An API Gateway HTTP API request from `BUYER`, as the JWT authorizer passes it on.
fn gateway(
    method: &str,
    path: &str,
    parameter: Option<(&str, &str)>,
    body: Option<&Value>,
) -> lambda_http::Request {
    gateway_as(BUYER, method, path, parameter, body)
}

/// The same from `buyer`.
pub(super) fn gateway_as(
    buyer: &str,
    method: &str,
    path: &str,
    parameter: Option<(&str, &str)>,
    body: Option<&Value>,
) -> lambda_http::Request {
    let route = format!("{method} {path}");
    let event = json!({
        "version": "2.0",
        "routeKey": route,
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json"},
        "pathParameters": parameter.map(|(name, value)| json!({name: value})),
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "wire",
            "domainName": "wire.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "wire",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "wire"
            },
            "requestId": "wire",
            "routeKey": route,
            "stage": "$default",
            "time": "21/Nov/2026:12:00:00 +0000",
            "timeEpoch": 1_795_262_400_000_u64,
            "authorizer": {"jwt": {"claims": {"sub": buyer}, "scopes": null}}
        },
        "isBase64Encoded": false,
        "body": body.map(Value::to_string)
    });
    lambda_http::request::from_str(&event.to_string()).expect("an API Gateway HTTP API request")
}

pub(super) fn answer(
    response: Result<lambda_http::Response<Body>, lambda_http::Error>,
) -> (u16, Value) {
    let response = response.expect("answered");
    let status = response.status().as_u16();
    let body = serde_json::from_slice(response.body().as_ref()).expect("a JSON body");
    (status, body)
}

fn payment(order_id: &str) -> Value {
    json!({
        "idempotency_key": format!("wire-{}", uuid::Uuid::new_v4().simple()),
        "order_id": order_id,
        "status": "paid"
    })
}

/// The message the webhook would have sent SQS for a `paid` event of `order_id`.
fn sqs_message(order_id: &str) -> SqsEvent {
    let received_at = chrono::Utc::now().naive_utc();
    let event = PaymentEvent::from_webhook(payment(order_id).to_string().as_bytes(), received_at)
        .expect("a payment event");
    serde_json::from_value(json!({
        "Records": [{
            "messageId": uuid::Uuid::new_v4().to_string(),
            "body": event.to_queue_message(),
            "attributes": {
                "ApproximateReceiveCount": "1",
                "SentTimestamp": received_at.and_utc().timestamp_millis().to_string(),
                "MessageGroupId": order_id
            },
            "messageAttributes": {},
            "eventSource": "aws:sqs"
        }]
    }))
    .expect("an SQS event")
}

/// Each request-path operation once, twice over: as a fresh container serves its first request
/// (connecting, preparing its statements), then warmed up, as it serves all the others.
struct Measured {
    first: Vec<(&'static str, WireCounts)>,
    warm: Vec<(&'static str, WireCounts)>,
}

async fn measure_the_request_paths() -> Measured {
    let db = TestDb::new().await;
    // Made beside the proxy: not counted.
    let product = db.product(100, 1).await.0;
    let containers = Containers::new(&db).await;
    let first = containers.walk(product).await;
    let warm = containers.walk(product).await;
    let measured = Measured { first, warm };
    println!("{}", measured.report());
    measured
}

impl Measured {
    fn report(&self) -> String {
        let mut report =
            String::from("first walk (each container's first request opens its connection):\n");
        for (operation, counts) in &self.first {
            report += &format!("  {}\n", line(operation, counts));
        }
        report += "warmed up:\n";
        for (operation, counts) in &self.warm {
            report += &format!("  {}\n", line(operation, counts));
        }
        report
    }

    /// What `check` finds wrong with each warmed-up operation named in `operations`; panics with
    /// all of it and the report, if anything.
    fn assert_warm(&self, operations: &[&str], check: impl Fn(&str, &WireCounts) -> Vec<String>) {
        self.assert(&self.warm, operations, check);
    }

    /// As [`Measured::assert_warm`], for each container's first request.
    fn assert_first(&self, operations: &[&str], check: impl Fn(&str, &WireCounts) -> Vec<String>) {
        self.assert(&self.first, operations, check);
    }

    fn assert(
        &self,
        walk: &[(&'static str, WireCounts)],
        operations: &[&str],
        check: impl Fn(&str, &WireCounts) -> Vec<String>,
    ) {
        let wrong: Vec<String> = walk
            .iter()
            .filter(|(operation, _)| operations.contains(operation))
            .flat_map(|(operation, counts)| {
                check(operation, counts)
                    .into_iter()
                    .map(move |what| format!("{operation}: {what}"))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "{}\n\n{}",
            wrong.join("\n"),
            self.report()
        );
    }
}

fn line(operation: &str, counts: &WireCounts) -> String {
    let queries: Vec<String> = counts
        .query_texts
        .iter()
        .map(|text| opening(text))
        .collect();
    format!(
        "{operation:<24} {:>2} commands: {} queries, {} prepares, {} executes, {} pings, {} others; \
         {} connections; queries: [{}]",
        counts.commands,
        counts.queries,
        counts.prepares,
        counts.executes,
        counts.pings,
        counts.others,
        counts.connections,
        queries.join(" | ")
    )
}

/// The first words of a query, enough to tell it apart.
fn opening(query: &str) -> String {
    const WORDS: usize = 4;
    const SHOWN: usize = 48;
    let words = query
        .split_whitespace()
        .take(WORDS)
        .collect::<Vec<_>>()
        .join(" ");
    let opening: String = words.chars().take(SHOWN).collect();
    if query.split_whitespace().count() > WORDS || words.chars().count() > SHOWN {
        format!("{opening} …")
    } else {
        opening
    }
}

/// Every function a buyer's or the payment provider's request runs.
const REQUEST_PATHS: [&str; 7] = [
    "get-product",
    "create-hold",
    "get-hold",
    "create-order",
    "get-order",
    "payment-webhook + inbox",
    "payment-processor",
];

/// The hold is one command, `CALL reserve_hold_v2(…)`, and the pool adds none: no ping on taking
/// a connection used moments ago, none on giving it back (`shared::store::pool`).
#[tokio::test]
async fn a_hold_on_the_fast_path_is_one_call_on_the_wire_and_nothing_else() {
    let measured = measure_the_request_paths().await;
    measured.assert_warm(&["create-hold"], |_, counts| {
        let mut wrong = Vec::new();
        let calls: Vec<&String> = counts.query_texts.iter().collect();
        if counts.queries != 1 || !calls[0].starts_with("CALL reserve_hold_v2(") {
            wrong.push(format!("queries {calls:?}, not one CALL reserve_hold_v2"));
        }
        if counts.prepares != 0 || counts.executes != 0 {
            wrong.push(format!(
                "{} prepares and {} executes, not 0",
                counts.prepares, counts.executes
            ));
        }
        if counts.commands != 1 {
            wrong.push(format!(
                "{} commands ({} pings), not the CALL alone",
                counts.commands, counts.pings
            ));
        }
        wrong
    });
}

/// A refusal at sell-out is one command: the first time, the `CALL`, whose procedure finds the
/// product short of units itself after its reservation found no bucket with them; then, the
/// container having seen it short, one plain `SELECT` of the stock before anything is written
/// (no stored program) — with an Idempotency-Key too (the same read looks the key up). Neither
/// the slow path nor a second statement follows. The refusals change nothing: no hold row, the
/// stock as it was.
#[tokio::test]
async fn a_refusal_at_sell_out_is_one_command_on_the_wire_and_nothing_else() {
    let db = TestDb::new().await;
    let product = db.product(2, 2).await.0;
    let containers = Containers::new(&db).await;
    let keyed = |key: &str| {
        let body = json!({"product_id": product, "qty": 1});
        let mut request = gateway("POST", "/api/holds", None, Some(&body));
        request
            .headers_mut()
            .insert("idempotency-key", key.parse().expect("a header value"));
        containers.measure(
            &containers.create_hold.pool,
            create_hold::handle(&containers.create_hold, request),
        )
    };
    let (made, _) = keyed("made-1").await;
    let (status, made) = answer(made);
    assert_eq!(status, 201, "{made}");
    containers.hold(product).await;
    let holds_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM holds")
        .fetch_one(&containers.admin)
        .await
        .expect("holds");
    let mut wrong = Vec::new();
    let mut seen_short = false;
    for key in [None, Some("refused-1"), Some("refused-1")] {
        let (refused, counts) = match key {
            Some(key) => keyed(key).await,
            None => {
                let body = json!({"product_id": product, "qty": 1});
                let request = gateway("POST", "/api/holds", None, Some(&body));
                containers
                    .measure(
                        &containers.create_hold.pool,
                        create_hold::handle(&containers.create_hold, request),
                    )
                    .await
            }
        };
        let (status, refused) = answer(refused);
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (409, Some("insufficient_stock")),
            "{refused}"
        );
        let calls: Vec<&String> = counts.query_texts.iter().collect();
        let expected = if seen_short {
            "SELECT "
        } else {
            "CALL reserve_hold_v2("
        };
        if counts.commands != 1 || !calls[0].starts_with(expected) {
            wrong.push(format!(
                "key {key:?}: {} commands {calls:?}, not one {expected}…",
                counts.commands
            ));
        }
        seen_short = true;
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The repeat of a request that made its hold, refused now, is answered with that hold.
    let (replayed, counts) = keyed("made-1").await;
    let (status, replayed) = answer(replayed);
    assert_eq!(
        (status, &replayed["hold_id"]),
        (201, &made["hold_id"]),
        "{replayed}"
    );
    assert_eq!(
        counts.commands, 2,
        "the stock and key's SELECT, then the hold's: {counts:?}"
    );
    let holds_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM holds")
        .fetch_one(&containers.admin)
        .await
        .expect("holds");
    assert_eq!(holds_after, holds_before, "a refusal leaves no hold");
    let stock: (i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(available_stock) AS SIGNED), CAST(SUM(reserved_stock) AS SIGNED) \
         FROM stock_buckets WHERE product_id = ?",
    )
    .bind(product)
    .fetch_one(&containers.admin)
    .await
    .expect("the stock");
    assert_eq!(
        stock,
        (0, 2),
        "available and reserved as the two holds left them"
    );
}

#[tokio::test]
async fn the_request_paths_use_no_prepared_statement() {
    let measured = measure_the_request_paths().await;
    measured.assert_warm(&REQUEST_PATHS, |_, counts| {
        let mut wrong = Vec::new();
        if counts.prepares != 0 || counts.executes != 0 {
            wrong.push(format!(
                "{} prepares and {} executes of prepared statements, not 0",
                counts.prepares, counts.executes
            ));
        }
        wrong
    });
}

#[tokio::test]
async fn the_request_paths_send_no_statement_that_pins_a_proxy_connection() {
    let measured = measure_the_request_paths().await;
    measured.assert_warm(&REQUEST_PATHS, |_, counts| {
        counts
            .query_texts
            .iter()
            .filter_map(|query| pinning(query).map(|why| format!("{why}: {query}")))
            .collect()
    });
}

/// The most commands each request path may send, warmed up. Before issue 13 (eda8174) they were
/// 3, 7, 3, 13, 4, 25 and 11, with prepared statements and two pings per use of sqlx's pool;
/// now each is its text statements alone. A path may shrink, never grow: lower a bound when its
/// path gets shorter.
const MOST_COMMANDS: [(&str, u64); 7] = [
    ("get-product", 1),
    ("create-hold", 1),
    ("get-hold", 1),
    ("create-order", 9),
    ("get-order", 2),
    ("payment-webhook + inbox", 15),
    ("payment-processor", 7),
];

#[tokio::test]
async fn no_request_path_sends_more_commands_than_it_does_now() {
    let measured = measure_the_request_paths().await;
    measured.assert_warm(&REQUEST_PATHS, |operation, counts| {
        let bound = MOST_COMMANDS
            .iter()
            .find(|(name, _)| *name == operation)
            .map(|(_, bound)| *bound)
            .expect("a bound for every request path");
        if counts.commands > bound {
            vec![format!("{} commands, over {bound}", counts.commands)]
        } else {
            Vec::new()
        }
    });
}

/// A Lambda container's first request opens its connection, which lives as long as the
/// container: a session variable set then pins it behind RDS Proxy for good, unless the proxy
/// tracks the variable (sqlx's own `sql_mode`, `time_zone` and `NAMES`, and the isolation level,
/// are tracked; lock waits and statement time limits are not, and belong in the target group's
/// `InitQuery` or the parameter group).
#[tokio::test]
async fn a_containers_connection_sets_no_session_variable_the_proxy_does_not_track() {
    let measured = measure_the_request_paths().await;
    measured.assert_first(&REQUEST_PATHS, |_, counts| {
        counts
            .query_texts
            .iter()
            .flat_map(|query| match pinning(query) {
                Some("a SET statement") => untracked_settings(query)
                    .into_iter()
                    .map(|setting| {
                        format!("sets {setting}, which the proxy does not track: {query}")
                    })
                    .collect(),
                Some(why) => vec![format!("{why}: {query}")],
                None => Vec::new(),
            })
            .collect()
    });
}

/// The counter reads what sqlx really sends: the login is not counted, the connection's setup
/// is, and each protocol shows as what it is.
#[tokio::test]
async fn the_wire_counter_sees_each_command_sqlx_sends() {
    let db = TestDb::new().await;
    let wire = WireCounter::in_front_of(db.url.expose_secret())
        .await
        .expect("a wire counter");
    let url = wire.url(db.url.expose_secret());
    let mut conn = sqlx::MySqlConnection::connect(&url)
        .await
        .expect("connected");
    let setup = wire.take();
    assert_eq!(
        (setup.connections, setup.commands, setup.queries),
        (1, 1, 1),
        "{setup:?}"
    );
    assert!(setup.query_texts[0].starts_with("SET "), "{setup:?}");

    conn.ping().await.expect("pong");
    let one: i64 = sqlx::query_scalar("SELECT ?")
        .bind(1_i64)
        .fetch_one(&mut conn)
        .await
        .expect("one");
    assert_eq!(one, 1);
    sqlx::raw_sql("SELECT 1; SELECT 2")
        .execute(&mut conn)
        .await
        .expect("two statements");
    assert_eq!(
        wire.take(),
        WireCounts {
            // Ping, prepare, execute, the two statements in one query.
            commands: 4,
            queries: 1,
            prepares: 1,
            executes: 1,
            pings: 1,
            query_texts: vec!["SELECT 1; SELECT 2".into()],
            ..WireCounts::default()
        }
    );
    // COM_QUIT has no answer: close returns before the proxy has necessarily read it.
    conn.close().await.expect("closed");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while wire.snapshot().others == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            wire.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!((wire.snapshot().commands, wire.snapshot().others), (1, 1));
}
