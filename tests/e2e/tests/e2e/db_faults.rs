//! What production's database (Aurora MySQL 3 behind RDS Proxy) answers and MariaDB does not,
//! injected on the wire in front of the real MariaDB (`flash_sale_local::wire::faults`): one test
//! per row of `shared::server_errors::TABLE`, each a hold through the local server that meets the
//! error, then holds that must succeed; the client hears 503 with `Retry-After` (never 500), the
//! connection is not reused when the error ends its session, and the stock audit holds. Then the
//! pool's promise that no connection is lent inside a transaction, whatever was cancelled or
//! failed, and the session check behind the proxy.
//!
//! The MySQL behaviours injected, with their sources:
//! - 1317 ER_QUERY_INTERRUPTED, and on a killed stored program no handler runs: MySQL 8.0
//!   Reference Manual, 15.7.8.4 "KILL Statement" and 15.6.7.2 "DECLARE ... HANDLER Statement";
//! - 3024 ER_QUERY_TIMEOUT: max_execution_time (MySQL 8.0 Server System Variables);
//! - 1290 / 1836: a read-only server (`read_only`, `super_read_only`; Aurora's failover,
//!   "High availability for Amazon Aurora");
//! - 4031 ER_CLIENT_INTERACTION_TIMEOUT: MySQL 8.0.24+ closes an idle session with it;
//! - 9501: RDS Proxy's "Timed-out waiting to acquire database connection" (Troubleshooting for
//!   RDS Proxy, ConnectionBorrowTimeout).

use std::time::Duration;

use flash_sale_e2e::testing::{Api, TestDb, assert_stock_invariants, test_config};
use flash_sale_local::wire::faults::{Answer, ErrorPacket, Fault, FaultRelay, Trigger};
use flash_sale_local::{LocalServer, Options};
use futures::FutureExt;
use secrecy::ExposeSecret;
use shared::server_errors::{Handling, TABLE};
use shared::store::pool::Pool;
use sqlx::Row;

const ANONYMOUS: (&str, &str) = ("BUYER_AUTH", "none");
const STOCK: u32 = 1_000;

/// The local server on one connection, through a fault relay.
struct Relayed {
    db: TestDb,
    relay: FaultRelay,
    server: LocalServer,
    api: Api,
    product: u64,
}

impl Relayed {
    async fn start(vars: &[(&str, &str)], init_query: Option<&str>) -> Self {
        let db = TestDb::new().await;
        let relay = FaultRelay::in_front_of(db.url.expose_secret())
            .await
            .expect("a relay");
        if let Some(init_query) = init_query {
            relay.set_init_query(init_query);
        }
        let vars: Vec<(&str, &str)> = [ANONYMOUS, ("DATABASE_MAX_CONNECTIONS", "1")]
            .into_iter()
            .chain(vars.iter().copied())
            .collect();
        let config = test_config(&relay.url(db.url.expose_secret()), &vars);
        let server = LocalServer::start(&config, Options::default())
            .await
            .expect("the local server");
        let api = Api::new(&server).with_token(None);
        let product = shared::store::products::create_product(
            &db.pool,
            &shared::store::products::NewProduct {
                name: "Faulty".into(),
                price: shared::domain::money::Cents(500),
                stock: STOCK,
                buckets: 1,
                sale: Default::default(),
                waiting_room: None,
            },
        )
        .await
        .expect("a product")
        .id
        .0;
        Self {
            db,
            relay,
            server,
            api,
            product,
        }
    }

    /// A hold's status and `Retry-After`, with an Idempotency-Key of its own.
    async fn hold(&self) -> (u16, Option<String>, serde_json::Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/api/holds", self.server.url()))
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .json(&serde_json::json!({"product_id": self.product, "qty": 1}))
            .send()
            .await
            .expect("an answer");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|value| value.to_str().unwrap_or_default().to_owned());
        (
            status,
            retry_after,
            response.json().await.unwrap_or_default(),
        )
    }

    async fn held(&self) -> i64 {
        sqlx::query_scalar::<_, i64>(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM holds WHERE product_id = ? AND status = 'active'",
        )
        .bind(self.product)
        .fetch_one(&self.db.pool)
        .await
        .expect("a count")
    }

    async fn audit(&self) {
        let product = assert_stock_invariants(&self.db.pool, &self.api, self.product).await;
        assert_eq!(product["reserved_stock"].as_i64(), Some(self.held().await));
    }
}

fn error(number: u16) -> ErrorPacket {
    let row = TABLE
        .iter()
        .find(|row| row.number == number)
        .expect("a row of the table");
    let state = match number {
        1213 => "40001",
        1045 => "28000",
        _ => "HY000",
    };
    ErrorPacket::new(number, state, row.meaning)
}

/// Every error of the table that a statement can meet, answered on a hold: a 503 with
/// `Retry-After` (or, for a lock conflict, the hold itself: retried inside), the connection
/// closed when the session is gone or read-only and kept otherwise, and the next hold served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_database_error_a_statement_can_meet_answers_503_and_closes_only_what_it_must() {
    let relayed = Relayed::start(&[], None).await;
    let (status, ..) = relayed.hold().await;
    assert_eq!(status, 201, "a hold before any fault");
    let mut expected_holds = 1;
    for row in TABLE
        .iter()
        .filter(|row| !matches!(row.handling, Handling::Answered | Handling::AccessDenied))
    {
        let connections = relayed.relay.connections();
        relayed.relay.arm(Fault::on_query(
            "CALL reserve_hold",
            Answer::Error(error(row.number)),
        ));
        let (status, retry_after, body) = relayed.hold().await;
        let fired = relayed.relay.fired();
        match row.handling {
            Handling::Conflict => {
                assert_eq!(
                    status, 201,
                    "{} is retried inside the hold: {body}",
                    row.number
                );
                expected_holds += 1;
            }
            _ => {
                assert_eq!(status, 503, "{} {}: {body}", row.number, row.name);
                assert_eq!(retry_after.as_deref(), Some("1"), "{}", row.number);
                assert_eq!(
                    body["error"]["code"], "service_unavailable",
                    "{}",
                    row.number
                );
            }
        }
        let (status, _, body) = relayed.hold().await;
        assert_eq!(status, 201, "served again after {}: {body}", row.number);
        expected_holds += 1;
        let reconnected = relayed.relay.connections() > connections;
        let must_close = matches!(row.handling, Handling::EndsSession | Handling::ReadOnly);
        assert_eq!(
            reconnected, must_close,
            "{} {}: a new connection after it ({} fired)",
            row.number, row.name, fired
        );
    }
    assert_eq!(relayed.held().await, expected_holds);
    relayed.audit().await;
}

/// A connection cut in the middle of an answer, or closed after MySQL's 1317 to a killed
/// session: 503, a new connection for the next request, nothing half-done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_answer_or_closed_after_its_error_is_replaced() {
    let relayed = Relayed::start(&[], None).await;
    for answer in [Answer::CutMidAnswer, Answer::ErrorThenClose(error(1317))] {
        let connections = relayed.relay.connections();
        relayed
            .relay
            .arm(Fault::on_query("CALL reserve_hold", answer.clone()));
        let (status, retry_after, body) = relayed.hold().await;
        assert_eq!(
            (status, retry_after.as_deref()),
            (503, Some("1")),
            "{answer:?}: {body}"
        );
        let (status, _, body) = relayed.hold().await;
        assert_eq!(status, 201, "{answer:?}: {body}");
        assert!(relayed.relay.connections() > connections, "{answer:?}");
    }
    relayed.audit().await;
}

/// A login refused for its password (a rotated secret) or for too many connections: 503 while
/// refused, never 500; too many connections is tried again within the request. (On the pool
/// itself: the local server's background work would take the relay's refusals for itself.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_answers_503_and_too_many_connections_is_waited_out() {
    let db = TestDb::new().await;
    let relay = FaultRelay::in_front_of(db.url.expose_secret())
        .await
        .expect("a relay");
    let pool = one_connection(&relay.url(db.url.expose_secret()));
    let product = plain_product(&db).await;
    let hold = || async { shared::store::holds::reserve(&pool, &hold_request(product), TTL).await };

    relay.arm(Fault {
        on: Trigger::Login,
        answer: Answer::Error(error(1045)),
        times: 1,
    });
    let refused = hold().await.expect_err("the login is refused");
    assert_eq!(
        (refused.status(), refused.code()),
        (503, "service_unavailable"),
        "{refused}"
    );
    hold().await.expect("logged in on the next request");

    relay.arm(Fault::on_query(
        "CALL reserve_hold",
        Answer::ErrorThenClose(error(1927)),
    ));
    relay.arm(Fault {
        on: Trigger::Login,
        answer: Answer::Error(error(1040)),
        times: 2,
    });
    assert_eq!(hold().await.expect_err("killed").status(), 503);
    hold()
        .await
        .expect("connected on the third try, within the request");
    assert_eq!(relay.fired(), 4, "the refusals were met");
    let server = db.server(&[ANONYMOUS]).await;
    assert_stock_invariants(&db.pool, &Api::new(&server), product).await;
}

/// MySQL runs no handler when it kills a stored program, so `CALL reserve_hold` killed between
/// its START TRANSACTION and COMMIT leaves the transaction open on a session that lives on. The
/// relay leaves one open that way; the next user of the connection (an autocommit insert of a
/// payment event, acknowledged to the provider with a 202) must not land inside it, where the
/// connection's end would take it away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_procedures_open_transaction_is_rolled_back_before_the_connection_is_lent_again() {
    let db = TestDb::new().await;
    let relay = FaultRelay::in_front_of(db.url.expose_secret())
        .await
        .expect("a relay");
    let pool = one_connection(&relay.url(db.url.expose_secret()));
    let product = plain_product(&db).await;
    let order = an_order(&db.pool, product).await;

    relay.arm(Fault::on_query(
        "CALL reserve_hold",
        Answer::ErrorInsideOpenTransaction(error(1317)),
    ));
    let refused = shared::store::holds::reserve(&pool, &hold_request(product), TTL).await;
    let err = refused.expect_err("killed");
    assert_eq!(err.status(), 503, "{err}");

    let event = payment(&order, "evt_after_a_kill");
    shared::store::inbox::enqueue(&pool, &event)
        .await
        .expect("enqueued");
    // The connection ends (a Lambda container recycled, a proxy failover): what was
    // acknowledged must have been committed.
    kill_the_connection(&db, &pool).await;
    let queued: i64 = sqlx::query_scalar(
        "SELECT CAST(COUNT(*) AS SIGNED) FROM payment_inbox WHERE idempotency_key = ?",
    )
    .bind(&event.idempotency_key)
    .fetch_one(&db.pool)
    .await
    .expect("a count");
    assert_eq!(queued, 1, "the acknowledged payment event is durable");
}

/// A BEGIN whose answer was still due when its request was cancelled (the request deadline,
/// while the database stalls) has begun a transaction on the server that sqlx knows nothing of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_begin_cancelled_before_its_answer_leaves_no_transaction_on_the_next_lent_connection() {
    let db = TestDb::new().await;
    let pool = one_connection(db.url.expose_secret());
    assert_lent_outside_a_transaction(&pool).await;
    let mut cancelled = 0;
    for _ in 0..20 {
        let mut conn = pool.acquire().await.expect("a connection");
        // Polled once: BEGIN is sent, its answer not yet read.
        if conn.begin().now_or_never().is_none() {
            cancelled += 1;
        }
        drop(conn);
        assert_lent_outside_a_transaction(&pool).await;
    }
    assert!(cancelled > 0, "no BEGIN was cancelled in flight");
}

/// Every operation the service runs, cancelled at each of its await points in turn (the first,
/// the second, … until it runs to its end): afterwards no connection idles inside a transaction
/// and the stock adds up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_cancelled_at_each_await_point_leave_no_connection_in_a_transaction() {
    let db = TestDb::new().await;
    let pool = Pool::new(
        shared::store::db::connect_options(&db.url).expect("a URL"),
        2,
        shared::store::db::SessionSetup::OnConnect,
    );
    let product = plain_product(&db).await;
    let policy = db.config(&[]).payment_retry_policy();
    let publisher = shared::adapters::local::NoPublisher;

    let mut sites = 0;
    for operation in ["hold", "release", "order", "enqueue", "drain", "settle"] {
        for cancel_at in 1.. {
            // What the operation works on is made beforehand, on the test's own pool.
            let hold = reserve(&db.pool, product, TTL).await;
            let order = an_order(&db.pool, product).await;
            if operation == "settle" {
                reserve(&db.pool, product, Duration::from_millis(1)).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let event = payment(&order, &format!("evt_{operation}_{cancel_at}"));
            if operation == "drain" {
                shared::store::inbox::enqueue(&db.pool, &event)
                    .await
                    .expect("queued");
            }
            let work = async {
                let outcome = match operation {
                    "hold" => shared::store::holds::reserve(&pool, &hold_request(product), TTL)
                        .await
                        .map(drop),
                    "release" => shared::store::release::release_hold(&pool, &hold, None)
                        .await
                        .map(drop),
                    "order" => shared::store::orders::redeem(&pool, &hold, None, window())
                        .await
                        .map(drop),
                    "enqueue" => shared::store::inbox::enqueue(&pool, &event).await,
                    "drain" => shared::service::payments::drain_inbox(&pool, policy, &publisher)
                        .await
                        .map(drop),
                    _ => shared::store::settle::settle_lapsed(
                        &pool,
                        shared::domain::ids::ProductId(product),
                    )
                    .await
                    .map(drop),
                };
                // Run to its end, each operation succeeds.
                outcome.unwrap_or_else(|err| panic!("{operation}: {err}"));
            };
            let finished = poll_until_pending(work, cancel_at).await;
            wait_until_idle(&pool).await;
            assert_every_connection_outside_a_transaction(&pool).await;
            if finished {
                break;
            }
            sites += 1;
        }
    }
    println!("cancelled at {sites} await points");
    assert!(sites >= 12, "every operation waits at least twice: {sites}");
    let server = db.server(&[ANONYMOUS]).await;
    assert_stock_invariants(&db.pool, &Api::new(&server), product).await;
}

/// Behind RDS Proxy the session is the InitQuery's: without it (or with another isolation
/// level) a connection is refused, and the request answers 503, not a hold at REPEATABLE READ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_proxy_a_session_without_the_init_query_is_refused_with_503() {
    let db = TestDb::new().await;
    let product = plain_product(&db).await;
    let init = shared::store::session::Server::MariaDb.session_init();
    let repeatable = init.replace("READ COMMITTED", "REPEATABLE READ");
    for (init_query, expected) in [
        (None, 503),
        (Some(repeatable.as_str()), 503),
        (Some(init.as_str()), 201),
    ] {
        let relay = FaultRelay::in_front_of(db.url.expose_secret())
            .await
            .expect("a relay");
        if let Some(init_query) = init_query {
            relay.set_init_query(init_query);
        }
        let url = secrecy::SecretString::from(relay.url(db.url.expose_secret()));
        let pool = Pool::new(
            shared::store::db::connect_options(&url).expect("a URL"),
            1,
            shared::store::db::SessionSetup::ByProxy,
        );
        let status = match shared::store::holds::reserve(&pool, &hold_request(product), TTL).await {
            Ok(_) => 201,
            Err(err) => {
                assert_eq!(err.code(), "service_unavailable", "{err}");
                err.status()
            }
        };
        assert_eq!(status, expected, "InitQuery {init_query:?}");
    }
    let server = db.server(&[ANONYMOUS]).await;
    assert_stock_invariants(&db.pool, &Api::new(&server), product).await;
}

const TTL: Duration = Duration::from_secs(120);

fn one_connection(url: &str) -> Pool {
    let url = secrecy::SecretString::from(url.to_owned());
    Pool::new(
        shared::store::db::connect_options(&url).expect("a URL"),
        1,
        shared::store::db::SessionSetup::OnConnect,
    )
}

async fn plain_product(db: &TestDb) -> u64 {
    shared::store::products::create_product(
        &db.pool,
        &shared::store::products::NewProduct {
            name: "Cancelled".into(),
            price: shared::domain::money::Cents(500),
            stock: STOCK,
            buckets: 2,
            sale: Default::default(),
            waiting_room: None,
        },
    )
    .await
    .expect("a product")
    .id
    .0
}

fn hold_request(product: u64) -> shared::store::holds::HoldRequest {
    shared::store::holds::HoldRequest {
        product_id: shared::domain::ids::ProductId(product),
        buyer: None,
        qty: 1,
        idempotency_key: Some(uuid::Uuid::new_v4().to_string()),
    }
}

async fn reserve(pool: &Pool, product: u64, ttl: Duration) -> shared::domain::ids::HoldId {
    shared::store::holds::reserve(pool, &hold_request(product), ttl)
        .await
        .expect("a hold")
        .value
        .hold
        .hold_id
}

fn window() -> shared::domain::model::PaymentWindow {
    shared::domain::model::PaymentWindow {
        ttl: Duration::from_secs(600),
        grace: Duration::from_secs(60),
    }
}

async fn an_order(pool: &Pool, product: u64) -> shared::domain::ids::OrderId {
    let hold = reserve(pool, product, TTL).await;
    shared::store::orders::redeem(pool, &hold, None, window())
        .await
        .expect("an order")
        .value
        .order
        .order
        .order_id
}

fn payment(
    order: &shared::domain::ids::OrderId,
    key: &str,
) -> shared::domain::payment::PaymentEvent {
    shared::domain::payment::PaymentEvent {
        idempotency_key: key.to_owned(),
        order_id: order.clone(),
        status: shared::domain::model::PaymentStatus::Paid,
        amount: None,
        received_at: chrono::Utc::now().naive_utc(),
    }
}

/// Runs `work` until it has waited `pendings` times (then drops it: cancelled there) or ended.
/// True when it ended.
async fn poll_until_pending(work: impl Future<Output = ()>, pendings: usize) -> bool {
    let mut work = std::pin::pin!(work);
    let mut waited = 0;
    std::future::poll_fn(|cx| match work.as_mut().poll(cx) {
        std::task::Poll::Ready(()) => std::task::Poll::Ready(true),
        std::task::Poll::Pending => {
            waited += 1;
            if waited >= pendings {
                std::task::Poll::Ready(false)
            } else {
                std::task::Poll::Pending
            }
        }
    })
    .await
}

async fn wait_until_idle(pool: &Pool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !pool.is_idle() {
        assert!(tokio::time::Instant::now() < deadline, "the pool settles");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn in_transaction(conn: &mut shared::store::pool::Connection) -> (i64, i64) {
    let row = sqlx::query("SELECT CAST(@@autocommit AS SIGNED), CAST(@@in_transaction AS SIGNED)")
        .fetch_one(&mut **conn)
        .await
        .expect("the session's state");
    (row.get(0), row.get(1))
}

async fn assert_lent_outside_a_transaction(pool: &Pool) {
    wait_until_idle(pool).await;
    let mut conn = pool.acquire().await.expect("a connection");
    assert_eq!(
        in_transaction(&mut conn).await,
        (1, 0),
        "autocommit, no transaction"
    );
}

/// Takes every connection the pool has at once and asks each.
async fn assert_every_connection_outside_a_transaction(pool: &Pool) {
    let mut lent = Vec::new();
    for _ in 0..2 {
        lent.push(pool.acquire().await.expect("a connection"));
    }
    for conn in &mut lent {
        assert_eq!(
            in_transaction(conn).await,
            (1, 0),
            "autocommit, no transaction"
        );
    }
}

/// Kills the session of `pool`'s one connection, from the test's own pool.
async fn kill_the_connection(db: &TestDb, pool: &Pool) {
    let id: i64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
        .fetch_one(pool)
        .await
        .expect("its id");
    sqlx::query(&format!("KILL {id}"))
        .execute(&db.pool)
        .await
        .expect("killed");
}

/// A connection past its lifetime is replaced only by a successor that has logged in: while
/// logins are refused (a password mid-rotation) the old connection goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_past_its_lifetime_goes_on_until_a_successor_can_log_in() {
    let db = TestDb::new().await;
    let relay = FaultRelay::in_front_of(db.url.expose_secret())
        .await
        .expect("a relay");
    let url = secrecy::SecretString::from(relay.url(db.url.expose_secret()));
    let pool = Pool::with_max_lifetime(
        shared::store::db::connect_options(&url).expect("a URL"),
        1,
        shared::store::db::SessionSetup::OnConnect,
        Duration::from_millis(100),
    );
    let connection_id = || async {
        sqlx::query_scalar::<_, i64>("SELECT CAST(CONNECTION_ID() AS SIGNED)")
            .fetch_one(&pool)
            .await
    };
    let first = connection_id().await.expect("connected");
    tokio::time::sleep(Duration::from_millis(150)).await;
    relay.arm(Fault {
        on: Trigger::Login,
        answer: Answer::Error(error(1045)),
        times: 1,
    });
    assert_eq!(
        connection_id().await.expect("served by the old connection"),
        first,
        "the successor was refused: the old one goes on"
    );
    assert_eq!(relay.fired(), 1, "a successor was tried");
    let next = connection_id().await.expect("served by the successor");
    assert_ne!(next, first, "replaced once a successor logged in");
}

/// README.md's table of database faults names every error of `shared::server_errors::TABLE`
/// once, so what an operator reads is what the code does.
#[test]
fn the_readme_table_of_database_faults_names_every_error_of_the_code_once() {
    let readme = include_str!("../../../../README.md");
    let section = readme
        .split("## Database faults")
        .nth(1)
        .expect("README.md has a section on database faults");
    let section = section.split("\n## ").next().unwrap_or(section);
    let first_columns: Vec<&str> = section
        .lines()
        .filter_map(|line| line.strip_prefix("| "))
        .filter_map(|line| line.split(" |").next())
        .collect();
    for row in TABLE {
        let number = row.number.to_string();
        let rows = first_columns
            .iter()
            .filter(|cell| cell.split([',', ' ']).any(|word| word == number))
            .count();
        assert_eq!(rows, 1, "{} {} in README.md's table", row.number, row.name);
    }
}
