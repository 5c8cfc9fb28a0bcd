//! Applies `migrations/` on deploy, as the handler of the stack's `Custom::DatabaseMigrations`
//! resource. Create and Update migrate (idempotent: sqlx applies only what is missing, under the
//! lock of `shared::store::db::migrate`), Delete changes nothing (the schema and its data outlive the
//! resource), and every outcome is reported to CloudFormation with a PUT of the response document
//! to the event's pre-signed `ResponseURL`: a failed migration fails the deploy.
//!
//! After migrating it creates or updates the application's own database user (`app_user`), from
//! the secret `APP_DATABASE_SECRET_ARN` names, read at every invocation so that a password
//! rotated since the container started is the one set. This function alone keeps logging in as
//! the master user (`DATABASE_SECRET_ARN`): it needs DDL and may grant.

pub mod app_user;

use std::time::Duration;

/// The event CloudFormation sends a custom resource's function.
pub use aws_lambda_events::event::cloudformation::CloudFormationCustomResourceRequest as Request;
use aws_lambda_events::event::cloudformation::{
    CloudFormationCustomResourceResponse, CloudFormationCustomResourceResponseStatus as Status,
};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use shared::Error;
use shared::adapters::aws::LambdaStartup;
use shared::store::pool::Pool;

/// One schema per stack: the id never changes, so an update is never taken for a replacement
/// (which would make CloudFormation send a Delete for the old id).
pub const PHYSICAL_RESOURCE_ID: &str = "flash-sale-database-migrations";

/// How long a database that does not answer yet is waited for: on a first deploy the proxy's
/// target may still be registering when this runs.
pub const DATABASE_PATIENCE: Duration = Duration::from_secs(180);
const RETRY_DELAY: Duration = Duration::from_secs(5);
/// CloudFormation refuses a response document over 4,096 bytes; the reason is its only long part.
const MAX_REASON_CHARS: usize = 1_000;
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(20);
/// The secret (`{"username","password"}`) of the user every other function logs in as.
pub const APP_SECRET_VARIABLE: &str = "APP_DATABASE_SECRET_ARN";

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub struct Deps {
    /// The database, or why this container could not set it up (configuration, the secret):
    /// reported to CloudFormation as the failure. Failing the container's start instead would
    /// leave the stack waiting for an answer that never comes.
    pub pool: Result<Pool, String>,
    pub http: HttpClient,
    pub database_patience: Duration,
    /// Where this container logs: a failure's reason names it, so the stack's events lead there.
    pub log_stream: String,
    pub app_user: AppUserSource,
}

/// Where the application user's name and password come from.
pub enum AppUserSource {
    /// None: the functions log in as the migrating user (an existing database deployed without
    /// `ExistingDatabaseAppSecretArn`), and no user is provisioned.
    None,
    /// Given as is (tests).
    Given(app_user::AppUser),
    /// A Secrets Manager secret, read at each invocation.
    Secret {
        client: aws_sdk_secretsmanager::Client,
        arn: String,
    },
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let (pool, app_user) = match LambdaStartup::from_env() {
            Ok(startup) => {
                let pool = startup.pool().await.map_err(|err| err.to_string());
                let app_user = match std::env::var(APP_SECRET_VARIABLE)
                    .ok()
                    .filter(|arn| !arn.trim().is_empty())
                {
                    Some(arn) => AppUserSource::Secret {
                        client: aws_sdk_secretsmanager::Client::new(startup.sdk.get().await),
                        arn,
                    },
                    None => AppUserSource::None,
                };
                (pool, app_user)
            }
            Err(err) => (Err(err.to_string()), AppUserSource::None),
        };
        Ok(Self {
            pool,
            http: http_client()?,
            database_patience: DATABASE_PATIENCE,
            log_stream: std::env::var("AWS_LAMBDA_LOG_STREAM_NAME").unwrap_or_default(),
            app_user,
        })
    }
}

impl AppUserSource {
    async fn read(&self) -> Result<Option<app_user::AppUser>, Error> {
        let (client, arn) = match self {
            Self::None => return Ok(None),
            Self::Given(user) => {
                return Ok(Some(app_user::AppUser {
                    name: user.name.clone(),
                    password: user.password.clone(),
                    rotating: user.rotating,
                }));
            }
            Self::Secret { client, arn } => (client, arn),
        };
        let unreadable = |err: &dyn std::fmt::Display| {
            Error::Config(format!(
                "cannot read the application user's secret {arn}: {err}"
            ))
        };
        let value = client
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|err| unreadable(&aws_sdk_secretsmanager::error::DisplayErrorContext(&err)))?;
        #[derive(Deserialize)]
        struct Credentials {
            username: String,
            password: String,
        }
        // Not serde's message: it may quote the value it could not read.
        let credentials: Credentials = value
            .secret_string()
            .and_then(|text| serde_json::from_str(text).ok())
            .ok_or_else(|| unreadable(&"not JSON with string fields username and password"))?;
        // A version labelled AWSPENDING but not AWSCURRENT: a rotation has begun (or failed
        // midway), and its function, not this one, decides the password.
        let described = client
            .describe_secret()
            .secret_id(arn)
            .send()
            .await
            .map_err(|err| unreadable(&aws_sdk_secretsmanager::error::DisplayErrorContext(&err)))?;
        let rotating = described.version_ids_to_stages().is_some_and(|versions| {
            versions.values().any(|stages| {
                stages.iter().any(|stage| stage == "AWSPENDING")
                    && !stages.iter().any(|stage| stage == "AWSCURRENT")
            })
        });
        Ok(Some(app_user::AppUser {
            name: credentials.username,
            password: SecretString::from(credentials.password),
            rotating,
        }))
    }
}

/// HTTPS (and plain HTTP, for a local stand-in of the ResponseURL) with the system's roots.
pub fn http_client() -> Result<HttpClient, Error> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::aws_lc_rs::default_provider())
        .map_err(|err| Error::Config(format!("no TLS root certificates: {err}")))?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// What an invocation did and told CloudFormation.
#[derive(Debug, Serialize)]
pub struct Report {
    pub request_type: &'static str,
    pub success: bool,
    pub reason: String,
}

/// The fields every request type carries that the response must echo.
struct Reply<'a> {
    response_url: &'a str,
    stack_id: &'a str,
    request_id: &'a str,
    logical_resource_id: &'a str,
    physical_resource_id: &'a str,
}

/// Migrates (or not, for a Delete) and reports the outcome. `Err` only when CloudFormation could
/// not be told: the runtime then retries the invocation, which is safe to repeat.
pub async fn handle(deps: &Deps, request: Request) -> Result<Report, Error> {
    let (request_type, reply) = match &request {
        Request::Create(r) => (
            "Create",
            Reply {
                response_url: &r.response_url,
                stack_id: &r.stack_id,
                request_id: &r.request_id,
                logical_resource_id: &r.logical_resource_id,
                physical_resource_id: PHYSICAL_RESOURCE_ID,
            },
        ),
        Request::Update(r) => (
            "Update",
            Reply {
                response_url: &r.response_url,
                stack_id: &r.stack_id,
                request_id: &r.request_id,
                logical_resource_id: &r.logical_resource_id,
                physical_resource_id: &r.physical_resource_id,
            },
        ),
        Request::Delete(r) => (
            "Delete",
            Reply {
                response_url: &r.response_url,
                stack_id: &r.stack_id,
                request_id: &r.request_id,
                logical_resource_id: &r.logical_resource_id,
                physical_resource_id: &r.physical_resource_id,
            },
        ),
        _ => {
            return Err(Error::InvalidRequest(
                "not a Create, Update or Delete custom resource request".into(),
            ));
        }
    };
    let outcome = if request_type == "Delete" {
        Ok("nothing to do: the schema and its data outlive the stack's resource".to_owned())
    } else {
        migrate_when_reachable(deps).await
    };
    let report = match outcome {
        Ok(summary) => {
            tracing::info!(request_type, %summary, "migrations handled");
            Report {
                request_type,
                success: true,
                reason: summary,
            }
        }
        Err(err) => {
            tracing::error!(request_type, error = ?err, "migration failed; failing the deploy");
            Report {
                request_type,
                success: false,
                reason: format!("{err} (log stream {})", deps.log_stream),
            }
        }
    };
    send(&deps.http, &reply, &report).await?;
    Ok(report)
}

async fn migrate_when_reachable(deps: &Deps) -> Result<String, Error> {
    let pool = deps
        .pool
        .as_ref()
        .map_err(|err| Error::Config(err.clone()))?;
    let started = tokio::time::Instant::now();
    let app_user = deps.app_user.read().await?;
    loop {
        let outcome = match migrate(pool).await {
            Ok(summary) => match &app_user {
                Some(user) => app_user::provision(pool, user)
                    .await
                    .map(|provisioned| format!("{summary}; {provisioned}")),
                None => Ok(summary),
            },
            err => err,
        };
        match outcome {
            Err(err)
                if err.status() == 503
                    && started.elapsed() + RETRY_DELAY < deps.database_patience =>
            {
                tracing::warn!(error = %err, "database not reachable yet; retrying");
                tokio::time::sleep(RETRY_DELAY).await;
            }
            outcome => return outcome,
        }
    }
}

/// A database ahead of this code is left alone: that is a rollback (CloudFormation sends the
/// previous properties as an Update, run by the previous code) or an older release deployed on a
/// newer schema, and sqlx would refuse it for the migrations it does not know, failing the
/// rollback itself. Migrations only ever add, so the older code runs on the newer schema.
async fn migrate(pool: &Pool) -> Result<String, Error> {
    let newest_known = shared::store::db::MIGRATOR
        .iter()
        .filter(|migration| !migration.migration_type.is_down_migration())
        .map(|migration| migration.version)
        .max()
        .unwrap_or(0);
    if let Some(applied) = newest_applied(pool)
        .await?
        .filter(|applied| *applied > newest_known)
    {
        tracing::warn!(
            applied,
            newest_known,
            "the database is ahead of this code; not migrating"
        );
        return Ok(format!(
            "the database is at migration {applied}, ahead of this code's {newest_known}: left as it is"
        ));
    }
    shared::store::db::migrate(pool).await?;
    Ok(format!("schema at migration {newest_known}"))
}

/// The newest migration recorded, applied or failed; none on a database never migrated.
async fn newest_applied(pool: &Pool) -> Result<Option<i64>, Error> {
    const NO_SUCH_TABLE: &str = "42S02";
    let newest = sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await;
    match newest {
        Ok(version) => Ok(version),
        Err(err)
            if err
                .as_database_error()
                .and_then(|db| db.code())
                .is_some_and(|code| code == NO_SUCH_TABLE) =>
        {
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

async fn send(http: &HttpClient, reply: &Reply<'_>, report: &Report) -> Result<(), Error> {
    let mut response = CloudFormationCustomResourceResponse::default();
    response.status = if report.success {
        Status::Success
    } else {
        Status::Failed
    };
    response.reason = Some(report.reason.chars().take(MAX_REASON_CHARS).collect());
    response.physical_resource_id = reply.physical_resource_id.to_owned();
    response.stack_id = reply.stack_id.to_owned();
    response.request_id = reply.request_id.to_owned();
    response.logical_resource_id = reply.logical_resource_id.to_owned();
    let body = serde_json::to_vec(&response).map_err(|err| Error::Internal(err.to_string()))?;
    // No Content-Type: the URL is pre-signed for a PUT without one. The URL itself is never
    // logged: its query string is a credential.
    let request = http::Request::put(reply.response_url)
        .body(Full::new(Bytes::from(body)))
        .map_err(|err| Error::Internal(format!("invalid ResponseURL: {err}")))?;
    let answer = tokio::time::timeout(RESPONSE_TIMEOUT, http.request(request))
        .await
        .map_err(|_| Error::Internal("the ResponseURL did not answer in time".into()))?
        .map_err(|err| Error::Internal(format!("PUT to the ResponseURL failed: {err}")))?;
    if !answer.status().is_success() {
        return Err(Error::Internal(format!(
            "the ResponseURL answered {}",
            answer.status()
        )));
    }
    Ok(())
}
