//! The application user the migrate function provisions: migrate runs as the master user (here
//! the tests' root), then every request path runs as the application user through its own
//! function's `handle`, on a pool logged in with that user's name and password; and what it must
//! not do, it cannot. (The local server cannot run as it: it creates and migrates its database.)

use std::sync::Arc;
use std::time::Duration;

use ::migrate::AppUserSource;
use ::migrate::app_user::AppUser;
use aws_lambda_events::event::sqs::SqsEvent;
use axum::http::StatusCode;
use flash_sale_e2e::testing::TestDb;
use lambda_http::Body;
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::adapters::local::{InboxQueue, NoPublisher, NoScheduler};
use shared::config::BuyerAuth;
use shared::store::expiry::ExpiryOutcome;
use shared::store::pool::Pool;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;

use super::{ResponseUrl, event};

/// The values of `[workspace.metadata.lambda.env]`, which the sample events are written for.
const DEV_ADMIN_TOKEN: &str = "dev-admin-token";
const DEV_WEBHOOK_SECRET: &str = "dev-webhook-secret";
/// The ids the samples name, replaced by real ones.
const SAMPLE_HOLD: &str = "5b0e7c4e-3f55-4b7e-9a57-0f9b6a1d2c3e";
const SAMPLE_ORDER: &str = "9d2f8a61-7c4b-4e1a-8f3d-2b6c5e4a1f70";
/// What the server answers a statement the account may not run: table (1142), database (1044),
/// global (1227) or routine (1370) access denied.
const ACCESS_DENIED: [u16; 4] = [1142, 1044, 1227, 1370];

macro_rules! sample {
    ($name:literal) => {
        include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../events/",
            $name,
            ".json"
        ))
    };
}

/// An application user of this test alone; dropped with the test, as the server's users outlive
/// its databases.
struct Account {
    name: String,
    admin_url: SecretString,
}

impl Account {
    fn new(db: &TestDb) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            name: format!("fs_app_{}", &suffix[..16]),
            admin_url: db.url.clone(),
        }
    }

    fn with(&self, password: &str, rotating: bool) -> AppUser {
        AppUser {
            name: self.name.clone(),
            password: SecretString::from(password.to_owned()),
            rotating,
        }
    }

    fn options(&self, db: &TestDb, password: &str) -> MySqlConnectOptions {
        shared::store::db::connect_options(&db.url)
            .expect("options")
            .username(&self.name)
            .password(password)
    }

    /// A pool of the application's, as a function's: logged in as this user.
    fn pool(&self, db: &TestDb, password: &str) -> Pool {
        Pool::new(
            self.options(db, password),
            4,
            shared::store::db::SessionSetup::OnConnect,
        )
    }

    /// The server's answer to a login with `password`: `None` when it let the user in.
    async fn refused_login(&self, db: &TestDb, password: &str) -> Option<u16> {
        match self.options(db, password).connect().await {
            Ok(_) => None,
            Err(err) => Some(shared::server_errors::number(&err).expect("a server error")),
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let (url, name) = (self.admin_url.clone(), self.name.clone());
        // As TestDb's drop: this runtime is blocked right here, so a runtime of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let pool = shared::store::db::connect(&url, 1).await.ok()?;
                let drop_user = format!("DROP USER IF EXISTS '{name}'@'%'");
                sqlx::raw_sql(&drop_user).execute(&pool).await.ok()
            })
        })
        .join();
    }
}

/// Runs the migrate function's Create (or Update) with `user`, as CloudFormation would.
async fn migrate_with(db: &TestDb, account: &Account, user: AppUser, request_type: &str) {
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;
    let deps = ::migrate::Deps {
        app_user: AppUserSource::Given(user),
        ..super::deps(db)
    };
    let report = ::migrate::handle(&deps, event(request_type, &cloudformation.url))
        .await
        .expect("CloudFormation was told");
    assert!(report.success, "{report:?}");
    assert!(report.reason.contains(&account.name), "{}", report.reason);
    assert_eq!(cloudformation.next().await.document["Status"], "SUCCESS");
}

fn request(json: &str) -> lambda_http::Request {
    lambda_http::request::from_str(json).expect("an API Gateway HTTP API request")
}

fn answer(response: lambda_http::Response<Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = serde_json::from_slice(response.body().as_ref()).expect("a JSON body");
    (status, body)
}

/// The server's error number for `statement` run as the pool's user, or `None` if it ran.
async fn refusal(pool: &Pool, statement: &str) -> Option<u16> {
    match sqlx::raw_sql(statement).execute(pool).await {
        Ok(_) => None,
        Err(err) => Some(shared::server_errors::number(&err).unwrap_or(0)),
    }
}

#[tokio::test]
async fn the_application_user_runs_every_request_path() {
    let db = TestDb::not_created();
    shared::store::db::create_database_if_missing(&db.url)
        .await
        .expect("an empty database");
    let account = Account::new(&db);
    migrate_with(&db, &account, account.with("Pw-1-app", false), "Create").await;
    shared::store::products::seed_demo_product(&db.pool)
        .await
        .expect("the demo product");
    let app = account.pool(&db, "Pw-1-app");

    let get_product = get_product::Deps { pool: app.clone() };
    let (status, _) = answer(
        get_product::handle(&get_product, request(sample!("get-product.found")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 200);
    let create_product = create_product::Deps {
        pool: app.clone(),
        admin_token: SecretString::from(DEV_ADMIN_TOKEN.to_owned()),
    };
    let (status, created) = answer(
        create_product::handle(&create_product, request(sample!("create-product.created")))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 201, "{created}");

    let hold_deps = |ttl: Duration| create_hold::Deps {
        buyer_auth: BuyerAuth::Jwt,
        pool: app.clone(),
        scheduler: Arc::new(NoScheduler),
        publisher: Arc::new(NoPublisher),
        hold_ttl: ttl,
        max_hold_qty: 10,
    };
    let hold = |deps: create_hold::Deps| async move {
        let (status, hold) = answer(
            create_hold::handle(&deps, request(sample!("create-hold.created")))
                .await
                .expect("ok"),
        );
        assert_eq!(status, 201, "{hold}");
        hold["hold_id"].as_str().expect("a hold id").to_owned()
    };
    // The hold goes through the reserve_hold procedure: EXECUTE is all the user has on it.
    let redeemed = hold(hold_deps(Duration::from_secs(120))).await;
    let get_hold = get_hold::Deps {
        buyer_auth: BuyerAuth::Jwt,
        pool: app.clone(),
    };
    let (status, _) = answer(
        get_hold::handle(
            &get_hold,
            request(&sample!("get-hold.not-found").replace(SAMPLE_HOLD, &redeemed)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 200);
    let create_order = create_order::Deps {
        buyer_auth: BuyerAuth::Jwt,
        pool: app.clone(),
        scheduler: Arc::new(NoScheduler),
        publisher: Arc::new(NoPublisher),
        payment_window: shared::domain::model::PaymentWindow {
            ttl: Duration::from_secs(900),
            grace: Duration::from_secs(300),
        },
    };
    let (status, order) = answer(
        create_order::handle(
            &create_order,
            request(&sample!("create-order.unknown-hold").replace(SAMPLE_HOLD, &redeemed)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 201, "{order}");
    let order_id = order["order_id"].as_str().expect("an order id").to_owned();
    let get_order = get_order::Deps {
        buyer_auth: BuyerAuth::Jwt,
        pool: app.clone(),
    };
    let (status, _) = answer(
        get_order::handle(
            &get_order,
            request(&sample!("get-order.not-found").replace(SAMPLE_ORDER, &order_id)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 200);
    let processor = payment_processor::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
        max_attempts: 10,
    };
    let paid: SqsEvent =
        serde_json::from_str(&sample!("payment-processor.paid").replace(SAMPLE_ORDER, &order_id))
            .expect("an SQS event");
    let response = payment_processor::handle(&processor, paid)
        .await
        .expect("handled");
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );
    let order_expiry = order_expiry::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
    };
    let input = serde_json::from_value(json!({"order_id": order_id})).expect("input");
    let outcome = order_expiry::handle(&order_expiry, input)
        .await
        .expect("handled")
        .outcome;
    assert_eq!(outcome, ExpiryOutcome::AlreadySettled, "the order is paid");

    let released = hold(hold_deps(Duration::from_secs(120))).await;
    let release = release_hold::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
        buyer_auth: BuyerAuth::Jwt,
    };
    let (status, body) = answer(
        release_hold::handle(
            &release,
            request(&sample!("release-hold.not-found").replace(SAMPLE_HOLD, &released)),
        )
        .await
        .expect("ok"),
    );
    assert_eq!(status, 200, "{body}");

    let lapsed = hold(hold_deps(Duration::from_millis(1))).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let hold_expiry = hold_expiry::Deps {
        pool: app.clone(),
        publisher: Arc::new(NoPublisher),
    };
    let input = serde_json::from_value(json!({"hold_id": lapsed})).expect("input");
    let outcome = hold_expiry::handle(&hold_expiry, input)
        .await
        .expect("handled")
        .outcome;
    assert_eq!(outcome, ExpiryOutcome::Expired);

    // The webhook's database inbox (no queue), drained by the sweeper.
    let webhook = payment_webhook::Deps {
        secrets: vec![SecretString::from(DEV_WEBHOOK_SECRET.to_owned())],
        tolerance: Duration::from_secs(300),
        queue: Arc::new(InboxQueue::new(app.clone())),
    };
    let mut signed: Value =
        serde_json::from_str(&sample!("payment-webhook.paid").replace(SAMPLE_ORDER, &order_id))
            .expect("JSON");
    let body = signed["body"].as_str().expect("a body").to_owned();
    signed["headers"]["x-signature"] = Value::String(shared::domain::webhook::sign(
        &SecretString::from(DEV_WEBHOOK_SECRET.to_owned()),
        chrono::Utc::now().timestamp(),
        body.as_bytes(),
    ));
    let (status, _) = answer(
        payment_webhook::handle(&webhook, request(&signed.to_string()))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 202);
    let sweeper = sweeper::Deps {
        pool: app.clone(),
        ..db.sweeper(Arc::new(NoPublisher))
    };
    sweeper::handle(&sweeper).await.expect("swept");
    let reconcile = reconcile::Deps { pool: app.clone() };
    let repair: reconcile::Request =
        serde_json::from_str(sample!("reconcile.repair")).expect("a reconcile request");
    let report = reconcile::handle(&reconcile, repair)
        .await
        .expect("reconciled");
    assert_eq!(report.unresolved(), 0);

    let update_product = update_product::Deps {
        pool: app.clone(),
        admin_token: SecretString::from(DEV_ADMIN_TOKEN.to_owned()),
    };
    let mut update: Value =
        serde_json::from_str(sample!("update-product.unauthorized")).expect("JSON");
    update["headers"]["authorization"] = json!(format!("Bearer {DEV_ADMIN_TOKEN}"));
    let (status, body) = answer(
        update_product::handle(&update_product, request(&update.to_string()))
            .await
            .expect("ok"),
    );
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn the_application_user_can_change_no_schema_grant_nothing_and_see_no_other_database() {
    let db = TestDb::new().await;
    let other = TestDb::new().await;
    let account = Account::new(&db);
    migrate_with(&db, &account, account.with("Pw-2-app", false), "Update").await;
    let app = account.pool(&db, "Pw-2-app");
    let other_table = format!("SELECT COUNT(*) FROM `{}`.products", other.name);
    let grant = format!("GRANT SELECT ON `{}`.products TO CURRENT_USER", db.name);
    let statements = [
        "CREATE TABLE intruder (id INT PRIMARY KEY)",
        "DROP TABLE holds",
        "ALTER TABLE holds ADD COLUMN intruder INT",
        "CREATE INDEX intruder ON holds (qty)",
        "TRUNCATE TABLE outbox_events",
        "DELETE FROM holds",
        "DROP PROCEDURE reserve_hold",
        "CREATE PROCEDURE intruder() SELECT 1",
        "SELECT COUNT(*) FROM _sqlx_migrations",
        "SELECT COUNT(*) FROM mysql.user",
        "CREATE USER 'intruder'@'%'",
        "CREATE DATABASE intruder",
        &grant,
        &other_table,
    ];
    for statement in statements {
        let refused = refusal(&app, statement).await;
        assert!(
            refused.is_some_and(|number| ACCESS_DENIED.contains(&number)),
            "{statement}: {refused:?}, not an access denied"
        );
    }
    let mut databases: Vec<String> = sqlx::query_scalar("SHOW DATABASES")
        .fetch_all(&app)
        .await
        .expect("the databases it sees");
    databases.sort();
    assert_eq!(databases, [db.name.as_str(), "information_schema"]);
    // What it holds, as the server reports it: nothing global, nothing grantable.
    let grantee = format!("'{}'@'%'", account.name);
    let global: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(PRIVILEGE_TYPE AS CHAR) FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?",
    )
    .bind(&grantee)
    .fetch_all(&db.pool)
    .await
    .expect("global privileges");
    assert_eq!(global, ["USAGE"]);
    let mut on_tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT CAST(PRIVILEGE_TYPE AS CHAR), CAST(IS_GRANTABLE AS CHAR) \
         FROM information_schema.TABLE_PRIVILEGES \
         WHERE GRANTEE = ?",
    )
    .bind(&grantee)
    .fetch_all(&db.pool)
    .await
    .expect("table privileges");
    on_tables.sort();
    assert_eq!(
        on_tables,
        [("INSERT", "NO"), ("SELECT", "NO"), ("UPDATE", "NO")]
            .map(|(privilege, grantable)| (privilege.to_owned(), grantable.to_owned()))
    );
}

#[tokio::test]
async fn migrating_again_with_a_new_password_changes_it_and_a_rotation_under_way_keeps_it() {
    let db = TestDb::new().await;
    let account = Account::new(&db);
    migrate_with(&db, &account, account.with("Pw-old", false), "Update").await;
    assert_eq!(account.refused_login(&db, "Pw-old").await, None);

    migrate_with(&db, &account, account.with("Pw-new", false), "Update").await;
    assert_eq!(account.refused_login(&db, "Pw-old").await, Some(1045));
    assert_eq!(account.refused_login(&db, "Pw-new").await, None);
    // Still every privilege: the user was altered, not made again.
    let app = account.pool(&db, "Pw-new");
    assert_eq!(refusal(&app, "SELECT COUNT(*) FROM holds").await, None);

    // A rotation has set a pending password the current version does not know yet.
    migrate_with(&db, &account, account.with("Pw-stale", true), "Update").await;
    assert_eq!(account.refused_login(&db, "Pw-stale").await, Some(1045));
    assert_eq!(account.refused_login(&db, "Pw-new").await, None);
}

#[tokio::test]
async fn privileges_granted_beyond_the_application_set_are_revoked_on_the_next_deploy() {
    let db = TestDb::new().await;
    let other = TestDb::new().await;
    let account = Account::new(&db);
    migrate_with(&db, &account, account.with("Pw-3-app", false), "Update").await;
    let grantee = format!("'{}'@'%'", account.name);
    for extra in [
        format!("GRANT PROCESS, CREATE USER ON *.* TO {grantee}"),
        format!("GRANT ALL ON `{}`.* TO {grantee}", db.name),
        format!("GRANT SELECT ON `{}`.* TO {grantee}", other.name),
        format!(
            "GRANT DELETE ON `{}`.holds TO {grantee} WITH GRANT OPTION",
            db.name
        ),
        format!(
            "GRANT SELECT ON `{}`._sqlx_migrations TO {grantee}",
            db.name
        ),
        format!(
            "GRANT SELECT (id) ON `{}`.products TO {grantee}",
            other.name
        ),
        format!(
            "GRANT ALTER ROUTINE ON PROCEDURE `{}`.reserve_hold TO {grantee}",
            db.name
        ),
    ] {
        sqlx::raw_sql(&extra).execute(&db.pool).await.expect(&extra);
    }

    migrate_with(&db, &account, account.with("Pw-3-app", false), "Update").await;

    let app = account.pool(&db, "Pw-3-app");
    for statement in [
        "DELETE FROM holds".to_owned(),
        "SELECT COUNT(*) FROM _sqlx_migrations".to_owned(),
        "DROP PROCEDURE reserve_hold".to_owned(),
        "CREATE TABLE intruder (id INT PRIMARY KEY)".to_owned(),
        format!("SELECT id FROM `{}`.products", other.name),
        "CREATE USER 'intruder'@'%'".to_owned(),
    ] {
        let refused = refusal(&app, &statement).await;
        assert!(
            refused.is_some_and(|number| ACCESS_DENIED.contains(&number)),
            "{statement}: {refused:?}"
        );
    }
    let global: Vec<String> = sqlx::query_scalar(
        "SELECT CAST(PRIVILEGE_TYPE AS CHAR) FROM information_schema.USER_PRIVILEGES WHERE GRANTEE = ?",
    )
    .bind(&grantee)
    .fetch_all(&db.pool)
    .await
    .expect("global privileges");
    assert_eq!(global, ["USAGE"], "PROCESS and CREATE USER revoked");
    let mut shown: Vec<String> = sqlx::query_scalar(&format!("SHOW GRANTS FOR {grantee}"))
        .fetch_all(&db.pool)
        .await
        .expect("its grants");
    shown.sort();
    assert!(
        shown
            .iter()
            .all(|grant| !grant.contains("GRANT OPTION") && !grant.contains("ALL PRIVILEGES")),
        "{shown:#?}"
    );
    assert!(
        shown
            .iter()
            .any(|grant| grant.starts_with("GRANT EXECUTE ON PROCEDURE")),
        "{shown:#?}"
    );
    assert_eq!(refusal(&app, "SELECT COUNT(*) FROM holds").await, None);
}

#[tokio::test]
async fn the_migrating_user_is_never_made_the_application_user() {
    let db = TestDb::new().await;
    let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;
    let deps = ::migrate::Deps {
        app_user: AppUserSource::Given(AppUser {
            name: "root".into(),
            password: SecretString::from("whatever".to_owned()),
            rotating: false,
        }),
        ..super::deps(&db)
    };

    let report = ::migrate::handle(&deps, event("Update", &cloudformation.url))
        .await
        .expect("CloudFormation was told");

    assert!(!report.success, "{report:?}");
    assert!(
        report.reason.contains("the user migrating"),
        "{}",
        report.reason
    );
    assert_eq!(cloudformation.next().await.document["Status"], "FAILED");
    let still_root: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM products")
        .fetch_one(&db.pool)
        .await
        .expect("root keeps its privileges");
    assert_eq!(still_root, 0);
}

/// The deployed form: the application user's secret read through the real SDK (against the local
/// emulator) at every invocation of one warm container, so a password changed since the last
/// deploy is the one set; and a version labelled AWSPENDING alone (a rotation under way) leaves
/// the password to the rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_container_reads_the_secret_again_and_leaves_a_rotation_under_way_alone() {
    let db = TestDb::new().await;
    let account = Account::new(&db);
    let moto = flash_sale_e2e::testing::Moto::start()
        .await
        .expect("moto_server starts");
    let client = aws_sdk_secretsmanager::Client::new(&moto.sdk_config().await);
    let credentials =
        |password: &str| json!({"username": account.name, "password": password}).to_string();
    let arn = client
        .create_secret()
        .name("flash-sale/app-db")
        .secret_string(credentials("Pw-s1"))
        .send()
        .await
        .expect("create the secret")
        .arn()
        .expect("an ARN")
        .to_owned();
    let deps = ::migrate::Deps {
        app_user: AppUserSource::Secret {
            client: client.clone(),
            arn: arn.clone(),
        },
        ..super::deps(&db)
    };
    let run = || async {
        let mut cloudformation = ResponseUrl::answering(StatusCode::OK).await;
        let report = ::migrate::handle(&deps, event("Update", &cloudformation.url))
            .await
            .expect("CloudFormation was told");
        assert!(report.success, "{report:?}");
        assert_eq!(cloudformation.next().await.document["Status"], "SUCCESS");
        report.reason
    };

    run().await;
    assert_eq!(account.refused_login(&db, "Pw-s1").await, None);

    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(credentials("Pw-s2"))
        .send()
        .await
        .expect("a new current version");
    run().await;
    assert_eq!(account.refused_login(&db, "Pw-s1").await, Some(1045));
    assert_eq!(account.refused_login(&db, "Pw-s2").await, None);

    client
        .put_secret_value()
        .secret_id(&arn)
        .secret_string(credentials("Pw-s3"))
        .version_stages("AWSPENDING")
        .send()
        .await
        .expect("a pending version");
    let reason = run().await;
    assert!(reason.contains("rotation under way"), "{reason}");
    assert_eq!(account.refused_login(&db, "Pw-s2").await, None);
    assert_eq!(account.refused_login(&db, "Pw-s3").await, Some(1045));
}
