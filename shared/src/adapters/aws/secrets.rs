//! The database's credentials from Secrets Manager: read at cold start, then again every few
//! minutes, because Secrets Manager rotates the secret and a container outlives that: with the
//! old password it could open no new connection once its own dropped. A login the server refuses
//! (1045: the password rotated since the last read) has the secret read again at once, at most
//! once every [`REREAD_AFTER_REFUSAL_GAP`]; requests meanwhile answer 503.

use std::time::Duration;

use serde::Deserialize;
use sqlx::mysql::MySqlConnectOptions;

use crate::config::DatabaseSecret;
use crate::error::Error;
use crate::store::pool::Pool;

/// How often a container reads the secret again though nothing was refused. Open connections
/// go on after a rotation, since a password change ends no session.
pub const REFRESH_EVERY: Duration = Duration::from_secs(300);
/// The least time between two reads that refused logins ask for: a burst of refusals (every
/// request of a warm container) costs one read, not one each.
pub const REREAD_AFTER_REFUSAL_GAP: Duration = Duration::from_secs(1);

/// The fields of RDS's managed master secret that a connection needs (it holds no host: that is
/// the proxy's endpoint, from the configuration).
#[derive(Deserialize)]
struct Credentials {
    username: String,
    password: String,
}

pub async fn connect_options(
    client: &aws_sdk_secretsmanager::Client,
    secret: &DatabaseSecret,
) -> Result<MySqlConnectOptions, Error> {
    let value = client
        .get_secret_value()
        .secret_id(&secret.arn)
        .send()
        .await
        .map_err(|err| {
            Error::Config(format!(
                "cannot read the database secret {}: {}",
                secret.arn,
                aws_sdk_secretsmanager::error::DisplayErrorContext(&err)
            ))
        })?;
    let text = value.secret_string().ok_or_else(|| {
        Error::Config(format!(
            "database secret {} has no string value",
            secret.arn
        ))
    })?;
    // Not serde's message: it may quote the value it could not read.
    let credentials: Credentials = serde_json::from_str(text).map_err(|_| {
        Error::Config(format!(
            "database secret {} is not JSON with string fields username and password",
            secret.arn
        ))
    })?;
    Ok(crate::store::db::tuned(
        MySqlConnectOptions::new()
            .host(&secret.host)
            .port(secret.port)
            .username(&credentials.username)
            .password(&credentials.password)
            .database(&secret.database)
            .ssl_mode(secret.ssl_mode),
    ))
}

/// Reads the secret every `every`, and whenever the server refused a login, and gives the pool
/// the credentials for its next connections. In Lambda the task runs only while the container
/// serves an invocation (it is frozen between), so a refresh that fell due while frozen happens
/// on the next invocation, beside it.
pub fn keep_fresh(
    pool: Pool,
    client: aws_sdk_secretsmanager::Client,
    secret: DatabaseSecret,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is now: the cold start has just read it
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                () = pool.login_refused() => {
                    tracing::warn!("the database refused the login: reading its secret again");
                }
            }
            match connect_options(&client, &secret).await {
                Ok(options) => pool.set_connect_options(options),
                Err(err) => {
                    tracing::warn!(error = %err, "could not read the database secret again; keeping the credentials read before")
                }
            }
            tokio::time::sleep(REREAD_AFTER_REFUSAL_GAP).await;
        }
    })
}
