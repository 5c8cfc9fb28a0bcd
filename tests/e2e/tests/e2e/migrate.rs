//! The migrate function as CloudFormation drives it: events/migrate.create.json (and its Update
//! and Delete forms) through `migrate::handle`, against a database of its own, with a loopback
//! listener standing in for the pre-signed S3 ResponseURL. The application user it provisions is
//! tested in migrate/app_user.rs and migrate/request_paths.rs.

use std::time::Duration;

use axum::http::StatusCode;
use flash_sale_e2e::testing::TestDb;
use serde_json::{Value, json};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::mpsc;

mod app_user;
mod request_paths;

const CREATE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../events/migrate.create.json"
));

/// What CloudFormation's ResponseURL received.
pub(crate) struct Received {
    method: String,
    path_and_query: String,
    content_type: Option<String>,
    pub(crate) document: Value,
}

/// A listener on 127.0.0.1 answering every request with `status`, as the pre-signed URL would.
pub(crate) struct ResponseUrl {
    pub(crate) url: String,
    received: mpsc::UnboundedReceiver<Received>,
}

impl ResponseUrl {
    pub(crate) async fn answering(status: StatusCode) -> Self {
        let (sender, received) = mpsc::unbounded_channel();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let sender = sender.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, 64 * 1024).await.expect("a body");
                let _ = sender.send(Received {
                    method: parts.method.to_string(),
                    path_and_query: parts.uri.to_string(),
                    content_type: parts
                        .headers
                        .get("content-type")
                        .map(|value| value.to_str().unwrap_or_default().to_owned()),
                    document: serde_json::from_slice(&body).expect("a JSON response document"),
                });
                status
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let address = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!(
                "http://{address}/arn%3Aaws%3Acloudformation%7CDatabaseMigrations?X-Amz-Signature=abc"
            ),
            received,
        }
    }

    pub(crate) async fn next(&mut self) -> Received {
        tokio::time::timeout(Duration::from_secs(5), self.received.recv())
            .await
            .expect("CloudFormation was answered")
            .expect("an answer")
    }
}

/// The sample event as `request_type`, answering to `url`.
pub(crate) fn event(request_type: &str, url: &str) -> migrate::Request {
    let mut event: Value = serde_json::from_str(CREATE).expect("the sample event is JSON");
    event["ResponseURL"] = json!(url);
    event["RequestType"] = json!(request_type);
    if request_type != "Create" {
        event["PhysicalResourceId"] = json!(migrate::PHYSICAL_RESOURCE_ID);
    }
    if request_type == "Update" {
        event["OldResourceProperties"] = event["ResourceProperties"].clone();
    }
    serde_json::from_value(event).expect("a custom resource request")
}

pub(crate) fn deps(db: &TestDb) -> migrate::Deps {
    migrate::Deps {
        pool: Ok(db.pool.clone()),
        http: migrate::http_client().expect("an HTTP client"),
        database_patience: Duration::ZERO,
        log_stream: "2026/11/21/[1]test".into(),
        app_user: migrate::AppUserSource::None,
    }
}

async fn applied_migrations(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(&db.pool)
        .await
        .expect("the migrations table")
}

fn migration_files() -> i64 {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
        .expect("migrations/")
        .count() as i64
}

#[tokio::test]
async fn create_migrates_an_empty_database_and_answers_success() {
    let db = TestDb::not_created();
    shared::store::db::create_database_if_missing(&db.url)
        .await
        .expect("an empty database");
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;

    let report = migrate::handle(&deps(&db), event("Create", &cloudformation.url))
        .await
        .expect("CloudFormation was told");

    assert!(report.success, "{report:?}");
    assert_eq!(applied_migrations(&db).await, migration_files());
    let received = cloudformation.next().await;
    assert_eq!(received.method, "PUT");
    assert!(
        received.path_and_query.ends_with("?X-Amz-Signature=abc"),
        "the pre-signed URL as given: {}",
        received.path_and_query
    );
    assert_eq!(
        received.content_type, None,
        "the URL is signed for a PUT without a Content-Type"
    );
    let sample: Value = serde_json::from_str(CREATE).expect("JSON");
    let document = received.document;
    assert_eq!(document["Status"], "SUCCESS");
    assert_eq!(
        document["PhysicalResourceId"],
        migrate::PHYSICAL_RESOURCE_ID
    );
    for echoed in ["StackId", "RequestId", "LogicalResourceId"] {
        assert_eq!(document[echoed], sample[echoed], "{echoed}");
    }
}

#[tokio::test]
async fn update_on_a_migrated_database_changes_nothing_and_keeps_the_resource_id() {
    let db = TestDb::new().await;
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;

    let report = migrate::handle(&deps(&db), event("Update", &cloudformation.url))
        .await
        .expect("CloudFormation was told");

    assert!(report.success, "{report:?}");
    assert_eq!(applied_migrations(&db).await, migration_files());
    let document = cloudformation.next().await.document;
    assert_eq!(document["Status"], "SUCCESS");
    assert_eq!(
        document["PhysicalResourceId"],
        migrate::PHYSICAL_RESOURCE_ID
    );
}

#[tokio::test]
async fn delete_leaves_the_schema_and_its_data_alone() {
    let db = TestDb::new().await;
    shared::store::products::seed_demo_product(&db.pool)
        .await
        .expect("a product");
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;

    let report = migrate::handle(&deps(&db), event("Delete", &cloudformation.url))
        .await
        .expect("CloudFormation was told");

    assert!(report.success, "{report:?}");
    assert_eq!(cloudformation.next().await.document["Status"], "SUCCESS");
    let products: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&db.pool)
        .await
        .expect("the products table is still there");
    assert_eq!(products, 1);
}

/// A container that could not set up its database (a missing secret, bad configuration) still
/// answers: the deploy fails at once with the reason instead of waiting out CloudFormation.
#[tokio::test]
async fn a_database_that_could_not_be_set_up_answers_failed_with_the_reason() {
    let db = TestDb::new().await;
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;
    let deps = migrate::Deps {
        pool: Err("cannot read the database secret arn:aws:secretsmanager:x".into()),
        ..deps(&db)
    };

    let report = migrate::handle(&deps, event("Create", &cloudformation.url))
        .await
        .expect("CloudFormation was told");

    assert!(!report.success);
    let document = cloudformation.next().await.document;
    assert_eq!(document["Status"], "FAILED");
    let reason = document["Reason"].as_str().expect("a reason");
    assert!(reason.contains("database secret"), "{reason}");
}

#[tokio::test]
async fn a_failed_migration_answers_failed_with_the_reason_and_its_log_stream() {
    let db = TestDb::new().await;
    // An applied migration whose file changed since: sqlx refuses to go on.
    sqlx::query("UPDATE _sqlx_migrations SET checksum = X'00' ORDER BY version LIMIT 1")
        .execute(&db.pool)
        .await
        .expect("tamper with a checksum");
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;

    let report = migrate::handle(&deps(&db), event("Update", &cloudformation.url))
        .await
        .expect("a failure is reported to CloudFormation, not to the runtime");

    assert!(!report.success);
    let document = cloudformation.next().await.document;
    assert_eq!(document["Status"], "FAILED");
    let reason = document["Reason"].as_str().expect("a reason");
    assert!(reason.contains("migration"), "{reason}");
    assert!(reason.contains("2026/11/21/[1]test"), "{reason}");
}

#[tokio::test]
async fn a_database_ahead_of_the_code_is_left_alone_so_a_rollback_succeeds() {
    let db = TestDb::new().await;
    // What a newer release applied before its deploy was rolled back.
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (99990101000000, 'from a newer release', TRUE, X'00', 0)",
    )
    .execute(&db.pool)
    .await
    .expect("a newer migration");
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;

    let report = migrate::handle(&deps(&db), event("Update", &cloudformation.url))
        .await
        .expect("CloudFormation was told");

    assert!(report.success, "{report:?}");
    assert!(report.reason.contains("ahead"), "{}", report.reason);
    assert_eq!(cloudformation.next().await.document["Status"], "SUCCESS");
    assert_eq!(applied_migrations(&db).await, migration_files() + 1);
}

#[tokio::test]
async fn a_refused_response_is_an_error_so_the_runtime_retries() {
    // A Delete touches no database: this one is never created.
    let db = TestDb::not_created();
    let mut cloudformation = ResponseUrl::answering(StatusCode::FORBIDDEN).await;

    let outcome = migrate::handle(&deps(&db), event("Delete", &cloudformation.url)).await;

    let err = outcome.expect_err("CloudFormation did not take the answer");
    assert!(err.to_string().contains("403"), "{err}");
    assert_eq!(cloudformation.next().await.document["Status"], "SUCCESS");
}

/// MySQL 8 refuses a user lock name over 64 characters (ER_USER_LOCK_OVERLONG_NAME) and a
/// database name may have 64. MariaDB takes longer names, so here the lock name is checked, and
/// that it is the lock migrating takes: with it held elsewhere, migrating waits for it.
#[tokio::test]
async fn a_database_with_a_64_character_name_migrates_under_a_lock_name_of_at_most_64() {
    let name = format!("flash_sale_test_{}", uuid::Uuid::new_v4().simple());
    let db = TestDb::not_created_named(format!("{name:x<64}"));
    assert_eq!(db.name.len(), 64);
    shared::store::db::create_database_if_missing(&db.url)
        .await
        .expect("a database with a 64-character name");
    let lock = shared::store::db::migration_lock_name(&db.name);
    assert!(lock.chars().count() <= 64, "{lock} is over 64 characters");

    let mut holder = shared::store::db::connect_options(&db.url)
        .expect("options")
        .connect()
        .await
        .expect("a connection of its own");
    let locked: i64 = sqlx::query_scalar("SELECT GET_LOCK(?, 0)")
        .bind(&lock)
        .fetch_one(&mut holder)
        .await
        .expect("take the lock");
    assert_eq!(locked, 1);
    // The migrator and, beside it, a watcher that frees the lock once the migrator waits for it.
    let watch = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = ? AND STATE = 'User lock'",
            )
            .bind(&db.name)
            .fetch_one(&mut holder)
            .await
            .expect("the process list");
            if waiting == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "migrating never waited for {lock}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let tables: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
        )
        .bind(&db.name)
        .fetch_one(&mut holder)
        .await
        .expect("the tables");
        assert_eq!(
            tables, 0,
            "nothing migrated while the lock is held elsewhere"
        );
        sqlx::query("DO RELEASE_LOCK(?)")
            .bind(&lock)
            .execute(&mut holder)
            .await
            .expect("release the lock");
    };
    let (migrated, ()) = tokio::join!(shared::store::db::migrate(&db.pool), watch);
    migrated.expect("migrated once the lock was free");
    assert_eq!(applied_migrations(&db).await, migration_files());
    holder.close().await.expect("close");
}
