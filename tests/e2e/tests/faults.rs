//! Database faults under load: clients keep holding and ordering while the server's database
//! connections are killed, or while the database is stopped and started again. During a fault
//! a request answers 503 `service_unavailable` with `Retry-After`, within a bounded time; after it
//! the same server serves again; every hold and order a client was told about exists exactly once
//! and the stock invariants hold.
//!
//! Clients behave as a careful client would: a hold carries an `Idempotency-Key` of its own and a
//! 503 is retried with the same key (and an order with the same hold), so a hold committed just
//! before its connection died comes back as the same hold rather than as a second one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flash_sale_e2e::mariadb::PrivateMariaDb;
use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants, test_config};

/// The faults here are the database's: buyers are anonymous (`BUYER_AUTH=none`), so the clients
/// need no tokens and every answer is about the database.
const BUYERS_ANONYMOUS: &[(&str, &str)] = &[("BUYER_AUTH", "none")];
use flash_sale_local::{LocalServer, Options};
use futures::future::join_all;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::store::pool::Pool;
use shared::store::session::Server;
use sqlx::mysql::MySqlConnection;
use sqlx::{ConnectOptions, Row};
use tokio::time::Instant;

const CLIENTS: u64 = 24;
/// Plenty: no hold is refused for lack of stock, so the only refusal a client may see is a 503.
const STOCK: u32 = 10_000_000;
/// No answer may take longer, fault or not: every HTTP request is answered within
/// `shared::http::REQUEST_DEADLINE` (9 s), most outage answers within the pool's 3 s wait.
const LATENCY_BOUND: Duration = Duration::from_secs(10);
/// The clients' own timeout: a request that hangs fails the test instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts of one hold (one Idempotency-Key) or one order before the client gives up on it.
const ATTEMPTS: usize = 6;
/// How long a client waits before retrying a 503 (less than its `Retry-After`, to keep the load
/// on during the fault).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_database_connections_answer_503_and_lose_no_acknowledged_hold_or_order() {
    let db = TestDb::new().await;
    let server = db.server(BUYERS_ANONYMOUS).await;
    let api = Api::new(&server);
    let product = api.create_product(STOCK, "5.00").await;
    let mut admin = admin_connection(&db.url).await;

    let run = Load::start(&server, product);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fault_started = Instant::now();
    let killed =
        kill_connections(&mut admin, &db.name, fault_started + Duration::from_secs(5)).await;
    let fault_ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = run.finish().await;

    let stats = log.stats(fault_started, fault_ended);
    println!(
        "KILL: {killed} connections killed over {:?}",
        fault_ended - fault_started
    );
    stats.print("KILL");
    assert_recovered(&stats, &db.pool, &api, product, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stopped_and_restarted_database_answers_503_then_serves_again_without_a_restart() {
    let mut mariadb = PrivateMariaDb::start().await;
    let (server, api, product, pool) = serve_on(&mariadb).await;

    let run = Load::start(&server, product);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let outage_started = Instant::now();
    mariadb.stop().await;
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    mariadb.start_again().await;
    let outage_ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let log = run.finish().await;

    let stats = log.stats(outage_started, outage_ended);
    println!(
        "STOP/START: shutdown took {:?}, database away for {:?}",
        stopped - outage_started,
        outage_ended - outage_started
    );
    stats.print("STOP/START");
    assert_recovered(&stats, &pool, &api, product, &log).await;
}

/// A database that stops answering on open connections (SIGSTOP): no server-side timeout can
/// act, so the requests' own deadline (`shared::http::REQUEST_DEADLINE`) answers them, and new
/// ones hear 503 once the wait for a connection runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_database_answers_503_within_the_request_deadline_then_serves_again() {
    let mariadb = PrivateMariaDb::start().await;
    let (server, api, product, pool) = serve_on(&mariadb).await;

    let run = Load::start(&server, product);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let freeze_started = Instant::now();
    mariadb.freeze();
    // Longer than the request deadline, so requests caught mid-statement meet it.
    tokio::time::sleep(shared::http::REQUEST_DEADLINE + Duration::from_secs(2)).await;
    mariadb.thaw();
    let freeze_ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = run.finish().await;

    let stats = log.stats(freeze_started, freeze_ended);
    println!(
        "FREEZE: database frozen for {:?}",
        freeze_ended - freeze_started
    );
    stats.print("FREEZE");
    assert_recovered(&stats, &pool, &api, product, &log).await;
}

/// A local server on the private MariaDB, a product with plenty of stock, and an audit pool.
async fn serve_on(mariadb: &PrivateMariaDb) -> (LocalServer, Api, u64, Pool) {
    let url = mariadb.url("flash_sale_fault_test");
    let server = LocalServer::start(&test_config(&url, BUYERS_ANONYMOUS), Options::default())
        .await
        .expect("start the local server on the private MariaDB");
    let api = Api::new(&server);
    let product = api.create_product(STOCK, "5.00").await;
    let pool = Pool::new(
        shared::store::db::connect_options(&SecretString::from(url)).expect("a valid URL"),
        2,
        shared::store::db::SessionSetup::OnConnect,
    );
    (server, api, product, pool)
}

/// What every fault must leave: answers in time, every acknowledged hold and order exactly
/// once, a server that serves again with its background work, and the stock audit.
async fn assert_recovered(stats: &Stats, pool: &Pool, api: &Api, product: u64, log: &Log) {
    stats.assert_all_answered_in_time();
    assert_acknowledged_exactly_once(pool, product, log).await;
    assert_served_again(api, product).await;
    assert_every_event_published(pool).await;
    assert_stock_invariants(pool, api, product).await;
}

/// Every pooled connection carries the statement timeout, and a statement stopped by it is a 503.
#[tokio::test]
async fn a_statement_past_the_servers_time_limit_is_stopped_and_answers_503() {
    let db = TestDb::new().await;
    let mut conn = db.pool.acquire().await.expect("a connection");
    let server = Server::of(&mut conn).await.expect("the server's kind");
    let (limit, short) = match server {
        Server::MariaDb => (
            "CAST(@@SESSION.max_statement_time * 1000 AS SIGNED)",
            "SET SESSION max_statement_time = 0.2",
        ),
        Server::MySql => (
            "CAST(@@SESSION.max_execution_time AS SIGNED)",
            "SET SESSION max_execution_time = 200",
        ),
    };
    let limit_ms: i64 = sqlx::query_scalar(&format!("SELECT {limit}"))
        .fetch_one(&mut *conn)
        .await
        .expect("the limit");
    assert_eq!(
        limit_ms, 10_000,
        "the pool's statement timeout ({server:?})"
    );

    sqlx::query(short)
        .execute(&mut *conn)
        .await
        .expect("shorten");
    let started = Instant::now();
    // Two rows: MySQL turns an interrupted SLEEP that is a query's only row into a result.
    let err = sqlx::query("SELECT SLEEP(2) FROM (SELECT 1 UNION ALL SELECT 2) AS two")
        .fetch_all(&mut *conn)
        .await
        .expect_err("stopped by the statement timeout");
    assert!(started.elapsed() < Duration::from_secs(2), "{err}");
    let err = shared::Error::Database(err);
    assert_eq!(
        (err.status(), err.code()),
        (503, "service_unavailable"),
        "{err}"
    );
    conn.close().await.expect("close");
}

/// A connection of the test's own, outside the test database so it never kills itself.
async fn admin_connection(url: &SecretString) -> MySqlConnection {
    shared::store::db::connect_options(url)
        .expect("a valid URL")
        .database("information_schema")
        .connect()
        .await
        .expect("an admin connection")
}

/// KILLs every connection to `database` at random short intervals until `until`; returns how
/// many it killed.
async fn kill_connections(admin: &mut MySqlConnection, database: &str, until: Instant) -> usize {
    let mut killed = 0;
    while Instant::now() < until {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
             WHERE DB = ? AND ID <> CONNECTION_ID()",
        )
        .bind(database)
        .fetch_all(&mut *admin)
        .await
        .expect("list the server's connections");
        for id in ids {
            // A connection may be gone already: "unknown thread id".
            if sqlx::query(&format!("KILL {id}"))
                .execute(&mut *admin)
                .await
                .is_ok()
            {
                killed += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(20..=250))).await;
    }
    killed
}

/// One HTTP answer as a client saw it.
#[derive(Debug)]
struct Answer {
    route: &'static str,
    started: Instant,
    latency: Duration,
    /// `Err`: no HTTP answer at all (refused, reset, timed out).
    status: Result<u16, String>,
    retry_after: Option<String>,
    /// `Idempotent-Replayed: true`: a repeat found the hold its earlier attempt committed.
    replayed: bool,
    body: Value,
}

impl Answer {
    fn describe(&self) -> String {
        format!(
            "{} after {:?}: {:?} (Retry-After {:?}) {}",
            self.route, self.latency, self.status, self.retry_after, self.body
        )
    }
}

#[derive(Debug)]
struct AckedHold {
    hold_id: String,
    key: String,
    qty: u32,
}

#[derive(Debug)]
struct AckedOrder {
    order_id: String,
    hold_id: String,
    qty: u32,
}

#[derive(Debug, Default)]
struct Log {
    answers: Vec<Answer>,
    holds: Vec<AckedHold>,
    orders: Vec<AckedOrder>,
}

/// `CLIENTS` clients doing hold → order in a loop until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    clients: Vec<tokio::task::JoinHandle<Log>>,
}

impl Load {
    fn start(server: &LocalServer, product: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .expect("an HTTP client");
        let clients = (0..CLIENTS)
            .map(|seed| {
                let client = Client {
                    http: http.clone(),
                    base: server.url(),
                    log: Log::default(),
                };
                tokio::spawn(client.run(product, seed, stop.clone()))
            })
            .collect();
        Self { stop, clients }
    }

    async fn finish(self) -> Log {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Log::default();
        for log in join_all(self.clients).await {
            let log = log.expect("a client panicked");
            all.answers.extend(log.answers);
            all.holds.extend(log.holds);
            all.orders.extend(log.orders);
        }
        all
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
    log: Log,
}

impl Client {
    async fn run(mut self, product: u64, seed: u64, stop: Arc<AtomicBool>) -> Log {
        let mut rng = fastrand::Rng::with_seed(seed);
        while !stop.load(Ordering::Relaxed) {
            let key = format!("fault-{}", uuid::Uuid::new_v4().simple());
            let qty = rng.u32(1..=3);
            let body = json!({"product_id": product, "qty": qty});
            let Some(hold) = self.until_answered("hold", &body, Some(&key)).await else {
                continue;
            };
            assert_eq!(
                (hold["product_id"].as_u64(), hold["qty"].as_u64()),
                (Some(product), Some(u64::from(qty))),
                "{hold}"
            );
            let hold_id = hold["hold_id"].as_str().expect("hold id").to_owned();
            self.log.holds.push(AckedHold {
                hold_id: hold_id.clone(),
                key,
                qty,
            });
            let body = json!({"hold_id": hold_id});
            if let Some(order) = self.until_answered("order", &body, None).await {
                assert_eq!(order["hold_id"].as_str(), Some(hold_id.as_str()), "{order}");
                self.log.orders.push(AckedOrder {
                    order_id: order["order_id"].as_str().expect("order id").to_owned(),
                    hold_id,
                    qty,
                });
            }
        }
        self.log
    }

    /// Posts until a 2xx (its body) or anything but a 503 (`None`), at most `ATTEMPTS` times.
    async fn until_answered(
        &mut self,
        route: &'static str,
        body: &Value,
        key: Option<&str>,
    ) -> Option<Value> {
        for _ in 0..ATTEMPTS {
            let answer = self.post(route, body, key).await;
            let status = answer.status.clone();
            let body = answer.body.clone();
            self.log.answers.push(answer);
            match status {
                Ok(200..=299) => return Some(body),
                Ok(503) => tokio::time::sleep(RETRY_PAUSE).await,
                _ => return None,
            }
        }
        None
    }

    async fn post(&self, route: &'static str, body: &Value, key: Option<&str>) -> Answer {
        let path = if route == "hold" {
            "/api/holds"
        } else {
            "/api/orders"
        };
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .body(body.to_string());
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let started = Instant::now();
        let answered = async {
            let response = request.send().await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned);
            let replayed = response.headers().contains_key("idempotent-replayed");
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, retry_after, replayed, text))
        }
        .await;
        let latency = started.elapsed();
        match answered {
            Ok((status, retry_after, replayed, text)) => Answer {
                route,
                started,
                latency,
                status: Ok(status),
                retry_after,
                replayed,
                body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            },
            Err(err) => Answer {
                route,
                started,
                latency,
                status: Err(err.to_string()),
                retry_after: None,
                replayed: false,
                body: Value::Null,
            },
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    requests: usize,
    ok: usize,
    unavailable: usize,
    in_window: usize,
    unavailable_in_window: usize,
    max_latency: Duration,
    max_latency_in_window: Duration,
    /// 2xx answers to a repeat after a 503 that had committed after all: a replayed hold, or 200
    /// with the order an earlier attempt made.
    committed_despite_503: usize,
    holds: usize,
    orders: usize,
    /// Neither 2xx nor a well-formed 503.
    wrong: Vec<String>,
    /// Slower than `LATENCY_BOUND`.
    slow: Vec<String>,
}

impl Stats {
    fn print(&self, name: &str) {
        println!(
            "{name}: {} requests, {} 2xx, {} 503, {} other, {} over {LATENCY_BOUND:?}; during the \
             fault {} requests, {} 503, \
             max latency {:?} (overall {:?}); {} retries found their 503'd attempt committed; \
             acknowledged {} holds, {} orders",
            self.requests,
            self.ok,
            self.unavailable,
            self.wrong.len(),
            self.slow.len(),
            self.in_window,
            self.unavailable_in_window,
            self.max_latency_in_window,
            self.max_latency,
            self.committed_despite_503,
            self.holds,
            self.orders
        );
    }

    /// Every answer was a 2xx or a well-formed 503, and none took longer than the bound.
    fn assert_all_answered_in_time(&self) {
        assert!(
            self.wrong.is_empty(),
            "{} answers were neither 2xx nor a 503 with Retry-After, e.g. {:#?}",
            self.wrong.len(),
            &self.wrong[..self.wrong.len().min(5)]
        );
        assert!(
            self.slow.is_empty(),
            "{} answers took over {LATENCY_BOUND:?}, e.g. {:#?}",
            self.slow.len(),
            &self.slow[..self.slow.len().min(5)]
        );
        assert!(self.ok > 0, "nothing succeeded");
        assert!(self.unavailable_in_window > 0, "no request saw the fault");
    }
}

impl Log {
    /// Counts the answers, those overlapping the fault window apart.
    fn stats(&self, window_start: Instant, window_end: Instant) -> Stats {
        let mut stats = Stats {
            requests: self.answers.len(),
            holds: self.holds.len(),
            orders: self.orders.len(),
            ..Stats::default()
        };
        for answer in &self.answers {
            let in_window =
                answer.started + answer.latency >= window_start && answer.started <= window_end;
            stats.max_latency = stats.max_latency.max(answer.latency);
            if answer.latency > LATENCY_BOUND {
                stats.slow.push(answer.describe());
            }
            if in_window {
                stats.in_window += 1;
                stats.max_latency_in_window = stats.max_latency_in_window.max(answer.latency);
            }
            match answer.status {
                Ok(200..=299) => {
                    stats.ok += 1;
                    stats.committed_despite_503 += usize::from(
                        answer.replayed || (answer.route == "order" && answer.status == Ok(200)),
                    );
                }
                Ok(503)
                    if answer.body["error"]["code"] == "service_unavailable"
                        && answer.body["error"]["message"].is_string()
                        && answer
                            .retry_after
                            .as_deref()
                            .is_some_and(|s| s.parse::<u32>().is_ok()) =>
                {
                    stats.unavailable += 1;
                    stats.unavailable_in_window += usize::from(in_window);
                }
                _ => stats.wrong.push(answer.describe()),
            }
        }
        stats
    }
}

/// After the fault, without a restart: a fresh hold and order succeed, and a payment is applied
/// by the payment queue workers (the background work came back too).
async fn assert_served_again(api: &Api, product: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let hold = loop {
        let (status, hold) = api.hold(product, 1).await;
        match status {
            201 => break hold,
            503 if Instant::now() < deadline => tokio::time::sleep(RETRY_PAUSE).await,
            _ => panic!("the server did not serve again: {status} {hold}"),
        }
    };
    let (status, order) = api.order(hold["hold_id"].as_str().expect("hold id")).await;
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("order id");
    let (status, body) = api.pay("fault-recovered", order_id, "paid").await;
    assert_eq!(status, 202, "{body}");
    api.wait_for_order(order_id, Duration::from_secs(20), |order| {
        order["status"] == "paid"
    })
    .await;
}

/// Every hold and order a client got a 2xx for is in the database, once, as it was told. Also
/// prints how many committed without any client hearing so (a 503 and no successful retry).
async fn assert_acknowledged_exactly_once(pool: &Pool, product: u64, log: &Log) {
    let holds = sqlx::query(
        "SELECT id, CAST(qty AS SIGNED) AS qty, CAST(idempotency_key AS CHAR) AS idempotency_key, CAST(status AS CHAR) AS status \
         FROM holds WHERE product_id = ?",
    )
    .bind(product)
    .fetch_all(pool)
    .await
    .expect("holds");
    let mut stored_holds: HashMap<String, (i64, Option<String>, String)> = HashMap::new();
    let mut hold_rows: HashMap<String, usize> = HashMap::new();
    for row in &holds {
        let id: String = row.get("id");
        *hold_rows.entry(id.clone()).or_default() += 1;
        stored_holds.insert(
            id,
            (
                row.get("qty"),
                row.get("idempotency_key"),
                row.get("status"),
            ),
        );
    }
    let orders = sqlx::query(
        "SELECT id, hold_id, CAST(qty AS SIGNED) AS qty FROM orders WHERE product_id = ?",
    )
    .bind(product)
    .fetch_all(pool)
    .await
    .expect("orders");
    let mut stored_orders: HashMap<String, (String, i64)> = HashMap::new();
    let mut orders_per_hold: HashMap<String, usize> = HashMap::new();
    for row in &orders {
        let hold_id: String = row.get("hold_id");
        *orders_per_hold.entry(hold_id.clone()).or_default() += 1;
        stored_orders.insert(row.get("id"), (hold_id, row.get("qty")));
    }

    let mut missing = Vec::new();
    let acked_holds: HashSet<&str> = log.holds.iter().map(|h| h.hold_id.as_str()).collect();
    assert_eq!(
        acked_holds.len(),
        log.holds.len(),
        "two holds were told the same id"
    );
    for hold in &log.holds {
        match stored_holds.get(&hold.hold_id) {
            None => missing.push(format!("hold {}", hold.hold_id)),
            Some((qty, key, _)) => {
                assert_eq!(
                    hold_rows[&hold.hold_id], 1,
                    "hold {} stored once",
                    hold.hold_id
                );
                assert_eq!(
                    (*qty, key.as_deref()),
                    (i64::from(hold.qty), Some(hold.key.as_str())),
                    "hold {} as acknowledged",
                    hold.hold_id
                );
            }
        }
    }
    for order in &log.orders {
        match stored_orders.get(&order.order_id) {
            None => missing.push(format!("order {}", order.order_id)),
            Some((hold_id, qty)) => {
                assert_eq!(
                    (hold_id.as_str(), *qty),
                    (order.hold_id.as_str(), i64::from(order.qty)),
                    "order {} as acknowledged",
                    order.order_id
                );
                assert_eq!(orders_per_hold[hold_id], 1, "one order for hold {hold_id}");
                assert_eq!(
                    stored_holds
                        .get(hold_id)
                        .map(|(_, _, status)| status.as_str()),
                    Some("redeemed"),
                    "the redeemed hold {hold_id}"
                );
            }
        }
    }
    let acked_orders: HashSet<&str> = log.orders.iter().map(|o| o.order_id.as_str()).collect();
    println!(
        "acknowledged but missing: {}; committed but never acknowledged: {} holds, {} orders",
        missing.len(),
        stored_holds
            .keys()
            .filter(|id| !acked_holds.contains(id.as_str()))
            .count(),
        stored_orders
            .keys()
            .filter(|id| !acked_orders.contains(id.as_str()))
            .count(),
    );
    assert!(missing.is_empty(), "acknowledged but missing: {missing:?}");
}

/// Events whose publication failed with the database are published by the sweeper once it is
/// back: none stays in the outbox.
async fn assert_every_event_published(pool: &Pool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let unpublished: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM outbox_events WHERE published_at IS NULL")
                .fetch_one(pool)
                .await
                .expect("outbox");
        if unpublished == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{unpublished} events still unpublished"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
