//! Times reach SQL in whole milliseconds, the columns' precision (`DATETIME(3)`), so that no
//! server has a fraction to drop: MySQL 8 rounds one a column cannot keep (unless `sql_mode` has
//! `TIME_TRUNCATE_FRACTIONAL`), MariaDB truncates it (unless it has `TIME_ROUND_FRACTIONAL`).
//! Each test runs its sessions as both servers would, whichever one it is on.

use chrono::{NaiveDate, NaiveDateTime, SubsecRound, TimeDelta};
use flash_sale_e2e::testing::{Api, TestDb};
use flash_sale_local::Options;
use serde_json::json;
use shared::adapters::local::NoPublisher;
use shared::domain::model::OrderStatus;
use shared::domain::payment::{PaymentEvent, PaymentOutcome};
use shared::store::db::SessionSetup;
use shared::store::pool::Pool;
use shared::store::session::Server;
use shared::store::sql::Sql;
use sqlx::Row;

/// What a server does with a fraction of a second a column cannot keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fractions {
    /// MySQL 8's default.
    Round,
    /// MariaDB's default.
    Truncate,
}

/// `current` (a `sql_mode`) changed so that `server` treats fractions as `fractions` says.
fn sql_mode(server: Server, current: &str, fractions: Fractions) -> String {
    let (mode, when_set) = match server {
        Server::MariaDb => ("TIME_ROUND_FRACTIONAL", Fractions::Round),
        Server::MySql => ("TIME_TRUNCATE_FRACTIONAL", Fractions::Truncate),
    };
    let mut modes: Vec<&str> = current
        .split(',')
        .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case(mode))
        .collect();
    if fractions == when_set {
        modes.push(mode);
    }
    modes.join(",")
}

/// A pool of one connection on `db` whose session treats fractions as `fractions` says, so every
/// store call made through it runs as that server would run it.
async fn pool_that(db: &TestDb, fractions: Fractions) -> Pool {
    let options = shared::store::db::connect_options(&db.url).expect("a valid URL");
    let pool = Pool::new(options, 1, SessionSetup::OnConnect);
    let mut conn = pool.acquire().await.expect("a connection");
    let server = Server::of(&mut conn).await.expect("the server");
    let current: String = sqlx::query_scalar("SELECT @@SESSION.sql_mode")
        .fetch_one(&mut *conn)
        .await
        .expect("the sql_mode");
    let mode = sql_mode(server, &current, fractions);
    sqlx::raw_sql(&format!("SET SESSION sql_mode = '{mode}'"))
        .execute(&mut *conn)
        .await
        .expect("set the sql_mode");
    // The session does as it was told: 0.6 ms kept to milliseconds is 1 ms rounded, 0 truncated.
    let kept: String = sqlx::query_scalar(
        "SELECT CAST(CAST(TIMESTAMP'2026-01-01 00:00:00.0006' AS DATETIME(3)) AS CHAR)",
    )
    .fetch_one(&mut *conn)
    .await
    .expect("a cast");
    let expected = match fractions {
        Fractions::Round => "2026-01-01 00:00:00.001",
        Fractions::Truncate => "2026-01-01 00:00:00.000",
    };
    assert_eq!(
        kept, expected,
        "a session that should {fractions:?} ({mode})"
    );
    drop(conn);
    pool
}

async fn ordered(api: &Api, product: u64) -> String {
    let (_, hold) = api.hold(product, 1).await;
    let (status, order) = api.order(hold["hold_id"].as_str().expect("hold id")).await;
    assert_eq!(status, 201, "{order}");
    order["order_id"].as_str().expect("order id").to_owned()
}

async fn payment_due_at(db: &TestDb, order_id: &str) -> NaiveDateTime {
    sqlx::query_scalar("SELECT payment_due_at FROM orders WHERE id = ?")
        .bind(order_id)
        .fetch_one(&db.pool)
        .await
        .expect("the order's deadline")
}

/// The `paid` event of `order_id` as the webhook makes it, received at `received_at`.
fn paid(key: &str, order_id: &str, received_at: NaiveDateTime) -> PaymentEvent {
    let body = json!({"idempotency_key": key, "order_id": order_id, "status": "paid"});
    PaymentEvent::from_webhook(body.to_string().as_bytes(), received_at).expect("a valid event")
}

/// The event of `key` as recorded: when it was received, and what it did.
async fn recorded(db: &TestDb, key: &str) -> (NaiveDateTime, String) {
    let row =
        sqlx::query("SELECT received_at, outcome FROM payment_events WHERE idempotency_key = ?")
            .bind(key.as_bytes())
            .fetch_one(&db.pool)
            .await
            .expect("the recorded event");
    (
        row.try_get("received_at").expect("received_at"),
        row.try_get("outcome").expect("outcome"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_received_0_4_ms_before_its_deadline_is_on_time_on_a_server_that_rounds() {
    let db = TestDb::new().await;
    let server = db
        .server_with(
            &[],
            Options {
                background_work: false,
                ..Options::default()
            },
        )
        .await;
    let api = Api::new(&server);
    let product = api.create_product(10, "20.00").await;
    let rounding = pool_that(&db, Fractions::Round).await;

    // Queued in the inbox (the local server's and an SQS-less deployment's queue), then applied
    // from what the inbox kept: the receipt time makes a round trip through a DATETIME(3) column.
    let queued = ordered(&api, product).await;
    let due = payment_due_at(&db, &queued).await;
    let event = paid("evt_queued", &queued, due - TimeDelta::microseconds(400));
    shared::store::inbox::enqueue(&rounding, &event)
        .await
        .expect("enqueue");
    let report = shared::service::payments::drain_inbox(
        &rounding,
        db.config(&[]).payment_retry_policy(),
        &NoPublisher,
    )
    .await
    .expect("drain");
    assert_eq!(report.processed, 1, "{report:?}");
    let (received, outcome) = recorded(&db, "evt_queued").await;
    assert!(received < due, "recorded at {received}, due {due}");
    assert_eq!(received, event.received_at.trunc_subsecs(3));
    assert_eq!(outcome, "paid", "applied as on time");
    let order = api.get(&format!("/api/orders/{queued}")).await.1;
    assert_eq!(order["status"], "paid", "{order}");

    // Applied at once (as the SQS processor does): on time, and recorded before the deadline.
    let direct = ordered(&api, product).await;
    let due = payment_due_at(&db, &direct).await;
    let event = paid("evt_direct", &direct, due - TimeDelta::microseconds(400));
    let outcome = shared::service::payments::process_payment(&rounding, &NoPublisher, &event).await;
    assert_eq!(
        outcome.expect("applied"),
        PaymentOutcome::Applied(OrderStatus::Paid)
    );
    let (received, outcome) = recorded(&db, "evt_direct").await;
    assert!(received < due, "recorded at {received}, due {due}");
    assert_eq!(outcome, "paid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_with_microseconds_is_stored_alike_whether_the_server_rounds_or_truncates() {
    let db = TestDb::new().await;
    Sql::new(
        "CREATE TABLE times (id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                             at DATETIME(3) NOT NULL) ENGINE = InnoDB",
    )
    .execute(&db.pool)
    .await
    .expect("create the table");
    let rounding = pool_that(&db, Fractions::Round).await;
    let truncating = pool_that(&db, Fractions::Truncate).await;
    let at = |y, mo, d, h, mi, s, micro| {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_micro_opt(h, mi, s, micro))
            .expect("a valid time")
    };
    for time in [
        at(2026, 12, 2, 9, 5, 7, 120_600),
        at(2026, 12, 2, 9, 5, 7, 120_400),
        at(2026, 12, 2, 9, 5, 7, 120_500),
        // Rounded, it would be the next year.
        at(2026, 12, 31, 23, 59, 59, 999_600),
        at(2026, 12, 2, 9, 5, 7, 1),
    ] {
        let mut stored = Vec::new();
        for pool in [&rounding, &truncating] {
            let id = Sql::new("INSERT INTO times (at) VALUES (?)")
                .bind(time)
                .execute(pool)
                .await
                .expect("insert")
                .last_insert_id();
            let kept: NaiveDateTime = Sql::new("SELECT at FROM times WHERE id = ?")
                .bind(id)
                .fetch_scalar(pool)
                .await
                .expect("read back");
            stored.push(kept);
        }
        assert_eq!(
            stored,
            [time.trunc_subsecs(3); 2],
            "{time} stored by a server that rounds, then by one that truncates"
        );
    }
}
