//! A deployed function's database connection from a Secrets Manager secret (RDS's managed
//! `{"username","password"}`), read at cold start through the real AWS SDK against the local
//! emulator: the function connects as that user, refuses a plaintext server when TLS is required,
//! and never needs `DATABASE_URL`.

use std::collections::HashMap;

use aws_sdk_secretsmanager::Client as SecretsManager;
use flash_sale_e2e::testing::{Moto, PasswordUser, TestDb};
use serde_json::json;
use shared::Config;
use shared::adapters::aws::SdkLoader;

fn config(secret_arn: &str, database: &str, ssl_mode: &str) -> Config {
    let vars = HashMap::from([
        ("DATABASE_SECRET_ARN", secret_arn.to_owned()),
        ("DATABASE_HOST", "127.0.0.1".to_owned()),
        ("DATABASE_PORT", "3306".to_owned()),
        ("DATABASE_NAME", database.to_owned()),
        ("DATABASE_SSL_MODE", ssl_mode.to_owned()),
        // Nothing may fall back to it: a server here answers root without a password.
        ("DATABASE_URL", "mysql://nobody@127.0.0.1:1/none".to_owned()),
    ]);
    Config::from_lookup(|name| vars.get(name).cloned()).expect("valid configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_connects_with_the_secrets_credentials_and_requires_tls_by_default() {
    let db = TestDb::new().await;
    let user = PasswordUser::create(&db).await;
    let moto = Moto::start().await.expect("moto_server starts");
    let sdk = moto.sdk_config().await;
    let secret = SecretsManager::new(&sdk)
        .create_secret()
        .name("flash-sale/db")
        .secret_string(json!({"username": user.name, "password": user.password}).to_string())
        .send()
        .await
        .expect("create the secret");
    let arn = secret.arn().expect("an ARN").to_owned();

    // This machine's MariaDB speaks no TLS, so the test allows plaintext explicitly.
    let pool = shared::adapters::aws::lambda_pool(
        &config(&arn, &db.name, "preferred"),
        &SdkLoader::given(sdk.clone()),
    )
    .await
    .expect("a pool from the secret");
    let connected_as: String = sqlx::query_scalar("SELECT CURRENT_USER()")
        .fetch_one(&pool)
        .await
        .expect("connected");
    assert!(
        connected_as.starts_with(&format!("{}@", user.name)),
        "{connected_as}"
    );
    let database: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&pool)
        .await
        .expect("a database");
    assert_eq!(database, db.name);

    // The default, verify_identity, will not talk to a server without a verified certificate.
    let strict = shared::adapters::aws::lambda_pool(
        &config(&arn, &db.name, "verify_identity"),
        &SdkLoader::given(sdk.clone()),
    )
    .await
    .expect("a pool (it connects lazily)");
    let refused = sqlx::query("SELECT 1")
        .execute(&strict)
        .await
        .expect_err("plaintext refused");
    assert!(matches!(refused, sqlx::Error::Tls(_)), "{refused}");

    // A secret that is missing fails the cold start with its name, not a password.
    let missing = shared::adapters::aws::lambda_pool(
        &config(
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:nope",
            &db.name,
            "preferred",
        ),
        &SdkLoader::given(sdk),
    )
    .await
    .expect_err("no such secret");
    assert!(missing.to_string().contains("secret:nope"), "{missing}");
    assert!(!missing.to_string().contains(&user.password));
}

/// RDS rotates its managed secret while containers live on: a container reads the secret again
/// (`shared::adapters::aws::secrets::keep_fresh`), so its next connection uses the new password; one that
/// did not would be locked out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_read_again_so_new_connections_use_the_new_password() {
    use shared::adapters::aws::secrets;

    let db = TestDb::new().await;
    let user = PasswordUser::create(&db).await;
    let moto = Moto::start().await.expect("moto_server starts");
    let client = SecretsManager::new(&moto.sdk_config().await);
    let created = client
        .create_secret()
        .name("flash-sale/db-rotating")
        .secret_string(json!({"username": user.name, "password": user.password}).to_string())
        .send()
        .await
        .expect("create the secret");
    let config = config(created.arn().expect("an ARN"), &db.name, "preferred");
    let secret = config.database.secret.clone().expect("a database secret");
    let options = || async {
        secrets::connect_options(&client, &secret)
            .await
            .expect("credentials")
    };
    let refreshed = shared::store::db::lazy_pool(&config, options().await);
    let stale = shared::store::db::lazy_pool(&config, options().await);
    secrets::keep_fresh(
        refreshed.clone(),
        client.clone(),
        secret.clone(),
        std::time::Duration::from_millis(100),
    );
    for pool in [&refreshed, &stale] {
        sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .expect("connected with the first password");
    }

    // The rotation: a new password for the user and in the secret; open sessions go on.
    let rotated = format!("{}-rotated", user.password);
    user.set_password(&rotated).await;
    client
        .put_secret_value()
        .secret_id(&secret.arn)
        .secret_string(json!({"username": user.name, "password": rotated}).to_string())
        .send()
        .await
        .expect("rotate the secret");
    for pool in [&refreshed, &stale] {
        // Drop the pool's connection, as a proxy or a failover would, so the next query connects.
        let connection = pool.acquire().await.expect("the open connection");
        connection.close().await.expect("closed");
    }
    // The refresher reads the secret every 100 ms: within a few tries it has the new password.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(err) = sqlx::query("SELECT 1").execute(&refreshed).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reconnected with the rotated password: {err}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let locked_out = sqlx::query("SELECT 1")
        .execute(&stale)
        .await
        .expect_err("the old password no longer connects");
    assert!(
        locked_out.to_string().contains("Access denied"),
        "{locked_out}"
    );
}

/// A rotation that a container learns of from the server itself: the password changed, the
/// connection dropped, the next login is refused (1045). That request answers 503, not 500, and
/// the refusal has the secret read again at once, not at the next periodic read five minutes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_login_answers_503_and_has_the_secret_read_again_at_once() {
    use shared::adapters::aws::secrets;

    let db = TestDb::new().await;
    let user = PasswordUser::create(&db).await;
    let moto = Moto::start().await.expect("moto_server starts");
    let client = SecretsManager::new(&moto.sdk_config().await);
    let created = client
        .create_secret()
        .name("flash-sale/db-refused")
        .secret_string(json!({"username": user.name, "password": user.password}).to_string())
        .send()
        .await
        .expect("create the secret");
    let config = config(created.arn().expect("an ARN"), &db.name, "preferred");
    let secret = config.database.secret.clone().expect("a database secret");
    let options = secrets::connect_options(&client, &secret)
        .await
        .expect("credentials");
    let pool = shared::store::db::lazy_pool(&config, options);
    secrets::keep_fresh(
        pool.clone(),
        client.clone(),
        secret.clone(),
        secrets::REFRESH_EVERY,
    );
    sqlx::query("SELECT 1")
        .execute(&pool)
        .await
        .expect("connected with the first password");

    let rotated = format!("{}-rotated", user.password);
    user.set_password(&rotated).await;
    client
        .put_secret_value()
        .secret_id(&secret.arn)
        .secret_string(json!({"username": user.name, "password": rotated}).to_string())
        .send()
        .await
        .expect("rotate the secret");
    let connection = pool.acquire().await.expect("the open connection");
    connection.close().await.expect("closed");

    let refused = shared::Error::Database(
        sqlx::query("SELECT 1")
            .execute(&pool)
            .await
            .expect_err("the old password is refused"),
    );
    assert_eq!(
        (refused.status(), refused.code()),
        (503, "service_unavailable"),
        "{refused}"
    );
    let started = tokio::time::Instant::now();
    while let Err(err) = sqlx::query("SELECT 1").execute(&pool).await {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the refusal did not have the secret read again: {err}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    println!(
        "logged in with the rotated password {:?} after the refusal",
        started.elapsed()
    );
    assert!(started.elapsed() < secrets::REFRESH_EVERY);
}
