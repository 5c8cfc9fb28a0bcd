//! The connection pool (`shared::store::pool`), which checks a connection only when there is a
//! reason to doubt it: a connection the server killed is replaced after the one statement that
//! found it dead, whether that statement ran on the pool or began a transaction; a transaction
//! dropped while open gives its row locks back at once, not at the connection's next use; a
//! statement cancelled mid-flight does not hand its late answer to the next user; a healthy
//! connection is used again, without a ping.

use std::time::Duration;

use flash_sale_e2e::testing::TestDb;
use shared::store::db::{SessionSetup, connect_options};
use shared::store::pool::Pool;
use sqlx::Row;
use tokio::time::Instant;

/// A pool of one connection on the test's database, so "the next connection" is the same one
/// unless the pool replaced it.
fn one_connection(db: &TestDb) -> Pool {
    Pool::new(
        connect_options(&db.url).expect("a valid URL"),
        1,
        SessionSetup::OnConnect,
    )
}

async fn connection_id(pool: &Pool) -> Result<u64, sqlx::Error> {
    sqlx::raw_sql("SELECT CONNECTION_ID()")
        .fetch_one(pool)
        .await?
        .try_get(0)
}

async fn kill(db: &TestDb, id: u64) {
    sqlx::raw_sql(&format!("KILL {id}"))
        .execute(&db.pool)
        .await
        .expect("KILL");
}

#[tokio::test]
async fn a_healthy_connection_goes_back_and_is_used_again() {
    let db = TestDb::new().await;
    let pool = one_connection(&db);
    let first = connection_id(&pool).await.expect("a connection");
    for _ in 0..3 {
        assert_eq!(
            connection_id(&pool).await.expect("the same connection"),
            first
        );
    }
    let mut conn = pool.acquire().await.expect("a connection");
    let tx = conn.begin().await.expect("begin");
    tx.commit().await.expect("commit");
    drop(conn);
    assert_eq!(
        connection_id(&pool).await.expect("the same connection"),
        first
    );
}

#[tokio::test]
async fn a_connection_the_server_killed_fails_one_statement_then_is_replaced() {
    let db = TestDb::new().await;
    let pool = one_connection(&db);
    let killed = connection_id(&pool).await.expect("a connection");
    kill(&db, killed).await;

    let err = connection_id(&pool)
        .await
        .expect_err("the statement that finds the connection dead fails");
    let err = shared::Error::Database(err);
    assert_eq!(
        (err.status(), err.code()),
        (503, "service_unavailable"),
        "{err}"
    );

    let next = connection_id(&pool)
        .await
        .expect("served on a new connection");
    assert_ne!(next, killed);
}

#[tokio::test]
async fn a_killed_connection_that_fails_to_begin_a_transaction_is_replaced() {
    let db = TestDb::new().await;
    let pool = one_connection(&db);
    let killed = connection_id(&pool).await.expect("a connection");
    kill(&db, killed).await;

    let mut conn = pool.acquire().await.expect("the pooled connection");
    assert!(conn.begin().await.is_err(), "BEGIN on a killed connection");
    drop(conn);

    assert_ne!(
        connection_id(&pool).await.expect("a new connection"),
        killed
    );
}

/// A transaction dropped without commit or rollback (its future cancelled, say) must not keep
/// its row locks until some later request happens to take the same connection.
#[tokio::test]
async fn a_transaction_dropped_open_gives_its_row_locks_back_at_once() {
    let db = TestDb::new().await;
    sqlx::raw_sql(
        "CREATE TABLE pool_locks (id INT PRIMARY KEY); INSERT INTO pool_locks VALUES (1)",
    )
    .execute(&db.pool)
    .await
    .expect("a table");
    let pool = one_connection(&db);
    let first = connection_id(&pool).await.expect("a connection");

    let mut conn = pool.acquire().await.expect("a connection");
    let mut tx = conn.begin().await.expect("begin");
    sqlx::raw_sql("SELECT id FROM pool_locks WHERE id = 1 FOR UPDATE")
        .fetch_all(&mut **tx)
        .await
        .expect("the row locked");
    drop(tx);
    drop(conn);

    // Another session takes the row without waiting: the lock is gone.
    let started = Instant::now();
    let mut other = db.pool.acquire().await.expect("another connection");
    let mut other_tx = other.begin().await.expect("begin");
    sqlx::raw_sql("SELECT id FROM pool_locks WHERE id = 1 FOR UPDATE")
        .fetch_all(&mut **other_tx)
        .await
        .expect("the row, once the dropped transaction rolled back");
    other_tx.rollback().await.expect("rollback");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} for the dropped transaction's lock",
        started.elapsed()
    );

    // And the connection, rolled back, is the pool's again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !pool.is_idle() {
        assert!(Instant::now() < deadline, "the connection never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        connection_id(&pool).await.expect("the same connection"),
        first
    );
}

#[tokio::test]
async fn a_closed_pool_refuses_new_work() {
    let db = TestDb::new().await;
    let pool = one_connection(&db);
    connection_id(&pool).await.expect("a connection");
    pool.close().await;
    let err = pool.acquire().await.err().expect("refused");
    assert!(matches!(err, sqlx::Error::PoolClosed), "{err}");
}

/// A request cancelled at its deadline drops its statement mid-flight; the statement's answer
/// arrives later, and must not become the next user's: here the cancelled statement ends in an
/// error after 0.3 s, and the next statement on the pool's one connection still succeeds.
#[tokio::test]
async fn a_statement_cancelled_mid_flight_does_not_hand_its_answer_to_the_next_user() {
    let db = TestDb::new().await;
    let pool = one_connection(&db);
    let first = connection_id(&pool).await.expect("a connection");

    // Fails with "subquery returns more than 1 row" once the sleep is over.
    let failing_later = sqlx::raw_sql("SELECT IF(SLEEP(0.3) = 0, (SELECT 1 UNION SELECT 2), 0)");
    tokio::time::timeout(Duration::from_millis(50), failing_later.execute(&pool))
        .await
        .expect_err("cancelled while the server sleeps");
    let next = connection_id(&pool)
        .await
        .expect("the next statement is answered for itself");
    assert_ne!(
        next, first,
        "the connection whose answer was an error is replaced"
    );

    // A cancelled statement that succeeds leaves the connection fit to be used again.
    let succeeding_later = sqlx::raw_sql("SELECT SLEEP(0.3)");
    tokio::time::timeout(Duration::from_millis(50), succeeding_later.execute(&pool))
        .await
        .expect_err("cancelled while the server sleeps");
    assert_eq!(
        connection_id(&pool).await.expect("answered for itself"),
        next,
        "a connection whose late answer was fine goes back"
    );
    let mut conn = pool.acquire().await.expect("the connection");
    let tx = conn.begin().await.expect("begin after the drained answer");
    tx.commit().await.expect("commit");
}
