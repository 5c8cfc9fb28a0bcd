//! The application user the migrate function provisions, migrating as the master user (here the
//! tests' root): what it must not do, it cannot; a new password replaces the old; privileges
//! beyond its set are revoked; its secret is read at every run. Every request path as that user
//! is in request_paths.rs.

use ::migrate::AppUserSource;
use ::migrate::app_user::AppUser;
use axum::http::StatusCode;
use flash_sale_e2e::testing::TestDb;
use secrecy::SecretString;
use serde_json::json;
use shared::store::pool::Pool;
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;

use super::{ResponseUrl, event};

/// What the server answers a statement the account may not run: table (1142), database (1044),
/// global (1227) or routine (1370) access denied.
const ACCESS_DENIED: [u16; 4] = [1142, 1044, 1227, 1370];

/// An application user of this test alone; dropped with the test, as the server's users outlive
/// its databases.
pub(super) struct Account {
    name: String,
    admin_url: SecretString,
}

impl Account {
    pub(super) fn new(db: &TestDb) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            name: format!("fs_app_{}", &suffix[..16]),
            admin_url: db.url.clone(),
        }
    }

    pub(super) fn with(&self, password: &str, rotating: bool) -> AppUser {
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
    pub(super) fn pool(&self, db: &TestDb, password: &str) -> Pool {
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
pub(super) async fn migrate_with(
    db: &TestDb,
    account: &Account,
    user: AppUser,
    request_type: &str,
) {
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

/// The server's error number for `statement` run as the pool's user, or `None` if it ran.
async fn refusal(pool: &Pool, statement: &str) -> Option<u16> {
    match sqlx::raw_sql(statement).execute(pool).await {
        Ok(_) => None,
        Err(err) => Some(shared::server_errors::number(&err).unwrap_or(0)),
    }
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
