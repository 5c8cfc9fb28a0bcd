//! Every environment variable the service reads, its default, validated once at start-up.
//! The names here are the names in README.md and template.yaml.

use std::str::FromStr;
use std::time::Duration;

use secrecy::SecretString;
use sqlx::mysql::MySqlSslMode;

use crate::error::Error;

pub const DEFAULT_DATABASE_URL: &str = "mysql://root@127.0.0.1:3306/flash_sale";
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:3000";
pub const LAMBDA_CONNECTIONS: u32 = 1;
/// `PRODUCT_READ_MAX_AGE_MS` unset: how old a product read may be (`store::product_reads`).
pub const DEFAULT_PRODUCT_READ_MAX_AGE: Duration = Duration::from_millis(1_000);
pub const LOCAL_SERVER_CONNECTIONS: u32 = 32;

/// Where deadline triggers go: a schedule group, the role Scheduler assumes, and the functions it
/// invokes (without an order expiry function, payment deadlines are left to the sweeper).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    pub group: String,
    pub role_arn: String,
    pub hold_expiry_arn: String,
    pub order_expiry_arn: Option<String>,
}

/// Where a deployed function's database credentials are: a Secrets Manager secret holding
/// `{"username","password"}` (the form of RDS's managed master secret), read at cold start and
/// again every few minutes (rotations); the connection goes to `host` (the RDS Proxy endpoint).
#[derive(Debug, Clone)]
pub struct DatabaseSecret {
    pub arn: String,
    pub host: String,
    pub port: u16,
    pub database: String,
    /// `disabled`, `preferred`, `required`, `verify_ca` or `verify_identity` (the default: RDS
    /// Proxy's certificate is publicly trusted and names its endpoint).
    pub ssl_mode: MySqlSslMode,
}

/// Every setting, by section. The names in backquotes are the environment variables.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub holds: HoldsConfig,
    pub orders: OrdersConfig,
    pub webhook: WebhookConfig,
    /// `ADMIN_TOKEN`: bearer token for the admin routes.
    pub admin_token: Option<SecretString>,
    /// `ADMISSION_TOKEN_SECRET`: comma-separated HMAC secrets of waiting rooms' admission
    /// tokens; the first signs, any verifies (rotation without downtime).
    pub admission_token_secrets: Option<Vec<SecretString>>,
    pub aws: AwsConfig,
    pub local: LocalConfig,
    pub buyers: BuyersConfig,
}

/// How a buyer is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuyerAuth {
    /// `jwt`: the buyer routes need a bearer JWT; the buyer is its `sub`. On AWS the HTTP API's
    /// JWT authorizer verifies it and the functions read its claims from the request context;
    /// the local server verifies it itself and hands the same claims to the same handlers.
    Jwt,
    /// `none`: anonymous, as before buyers: no ownership, idempotency keys shared by everyone,
    /// and a product with a per-buyer limit refuses every hold.
    None,
}

#[derive(Debug, Clone)]
pub struct BuyersConfig {
    /// `BUYER_AUTH`: `jwt` (the default) or `none`.
    pub auth: BuyerAuth,
    /// `BUYER_JWT_SECRET`: the local server's HS256 secrets, comma-separated (any verifies, for
    /// rotation; the first signs `flash-sale-local token`).
    pub jwt_secrets: Option<Vec<SecretString>>,
    /// `BUYER_JWT_ISSUER`, `BUYER_JWT_AUDIENCE`: checked when set.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `DATABASE_URL`: may carry a password, so it is kept secret and never logged.
    pub url: SecretString,
    /// `DATABASE_SECRET_ARN`, `DATABASE_HOST`, `DATABASE_PORT` (3306), `DATABASE_NAME`
    /// (`flash_sale`), `DATABASE_SSL_MODE` (`verify_identity`): when set, the functions connect
    /// with this secret's credentials instead of `DATABASE_URL`.
    pub secret: Option<DatabaseSecret>,
    /// `DATABASE_MAX_CONNECTIONS`: pool size. Unset, a Lambda container uses one connection (it
    /// serves one request at a time) and the local server [`LOCAL_SERVER_CONNECTIONS`].
    pub max_connections: Option<u32>,
    /// `DATABASE_SESSION_SETUP`: `connect` (default) or `proxy`; see [`SessionSetup`].
    pub session: SessionSetup,
    /// `PRODUCT_READ_MAX_AGE_MS` ([`DEFAULT_PRODUCT_READ_MAX_AGE`]; 0: every read queries): how
    /// old a product read may be when it answers `GET /api/products/{id}`.
    pub product_read_max_age: Duration,
}

/// Where a connection's session settings (`store::session::Server::session_init`) come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionSetup {
    /// The pool sends them when it opens a connection (local server, tests, a database reached
    /// without RDS Proxy).
    OnConnect,
    /// RDS Proxy's target group sends them (its `InitQuery`) when it opens a database
    /// connection. A `SET` of an untracked session variable from a client pins its connection
    /// for good, so behind the proxy the functions send none.
    ByProxy,
}

#[derive(Debug, Clone, Copy)]
pub struct HoldsConfig {
    /// `HOLD_TTL_SECONDS`: how long a hold reserves its units.
    pub ttl: Duration,
    /// `MAX_HOLD_QTY`: the largest quantity one hold may reserve.
    pub max_qty: u32,
}

#[derive(Debug, Clone, Copy)]
pub struct OrdersConfig {
    /// `ORDER_PAYMENT_TTL_SECONDS`: a payment must be received within this time of the order.
    pub payment_ttl: Duration,
    /// `PAYMENT_GRACE_SECONDS`: how long after its payment deadline an unpaid order is cancelled,
    /// so that a payment received in time but applied late still finds it pending.
    pub payment_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `WEBHOOK_SECRET`: comma-separated HMAC secrets; any of them verifies (rotation without downtime).
    pub secrets: Option<Vec<SecretString>>,
    /// `WEBHOOK_TOLERANCE_SECONDS`: how far a signature's timestamp may be from now.
    pub tolerance: Duration,
    /// `PAYMENT_MAX_ATTEMPTS`: deliveries of a payment event before it is dead-lettered.
    pub max_attempts: u32,
    /// `PAYMENT_RETRY_BASE_MS`: first retry delay of a payment event; doubles per attempt, capped at a minute.
    pub retry_base: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct AwsConfig {
    /// `HOLD_SCHEDULE_GROUP`, `SCHEDULER_ROLE_ARN`, `HOLD_EXPIRY_FUNCTION_ARN`,
    /// `ORDER_EXPIRY_FUNCTION_ARN`: EventBridge Scheduler triggers for deadlines, when set.
    pub scheduler: Option<SchedulerSettings>,
    /// `WEBHOOK_QUEUE_URL`: the SQS FIFO queue payment events go through, when set.
    pub webhook_queue_url: Option<String>,
    /// `EVENT_BUS_NAME`: the EventBridge bus domain events are published to, when set.
    pub event_bus_name: Option<String>,
}

/// The local server's own settings.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// `LISTEN_ADDR`: where the local server listens.
    pub listen_addr: String,
    /// `SWEEP_INTERVAL_SECONDS`: how often the local server's sweeper runs.
    pub sweep_interval: Duration,
}

impl Config {
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration from any source of variables (the environment, or a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        let number = |name: &str, default: u64, min: u64, max: u64| -> Result<u64, Error> {
            let Some(raw) = get(name) else {
                return Ok(default);
            };
            match raw.trim().parse::<u64>() {
                Ok(value) if (min..=max).contains(&value) => Ok(value),
                _ => Err(Error::Config(format!(
                    "{name} must be a whole number from {min} to {max}, got {raw:?}"
                ))),
            }
        };
        let secrets = |name: &str| {
            get(name)
                .map(|raw| {
                    raw.split(',')
                        .map(str::trim)
                        .filter(|secret| !secret.is_empty())
                        .map(|secret| SecretString::from(secret.to_owned()))
                        .collect::<Vec<_>>()
                })
                .filter(|secrets| !secrets.is_empty())
        };
        let webhook_secrets = secrets("WEBHOOK_SECRET");
        let buyer_auth = match get("BUYER_AUTH").as_deref().map(str::trim) {
            None | Some("jwt") => BuyerAuth::Jwt,
            Some("none") => BuyerAuth::None,
            Some(other) => {
                return Err(Error::Config(format!(
                    "BUYER_AUTH must be jwt or none, got {other:?}"
                )));
            }
        };
        let scheduler = match (
            get("HOLD_SCHEDULE_GROUP"),
            get("SCHEDULER_ROLE_ARN"),
            get("HOLD_EXPIRY_FUNCTION_ARN"),
        ) {
            (Some(group), Some(role_arn), Some(hold_expiry_arn)) => Some(SchedulerSettings {
                group,
                role_arn,
                hold_expiry_arn,
                order_expiry_arn: get("ORDER_EXPIRY_FUNCTION_ARN"),
            }),
            (None, None, None) => None,
            _ => {
                return Err(Error::Config(
                    "HOLD_SCHEDULE_GROUP, SCHEDULER_ROLE_ARN and HOLD_EXPIRY_FUNCTION_ARN go together: set all or none"
                        .into(),
                ));
            }
        };
        let database_secret = match (get("DATABASE_SECRET_ARN"), get("DATABASE_HOST")) {
            (Some(arn), Some(host)) => Some(DatabaseSecret {
                arn,
                host,
                port: number("DATABASE_PORT", 3306, 1, 65_535)? as u16,
                database: get("DATABASE_NAME").unwrap_or_else(|| "flash_sale".to_owned()),
                ssl_mode: match get("DATABASE_SSL_MODE") {
                    None => MySqlSslMode::VerifyIdentity,
                    Some(mode) => MySqlSslMode::from_str(&mode).map_err(|_| {
                        Error::Config(format!(
                            "DATABASE_SSL_MODE must be disabled, preferred, required, verify_ca or verify_identity, got {mode:?}"
                        ))
                    })?,
                },
            }),
            (None, None) => None,
            _ => {
                return Err(Error::Config(
                    "DATABASE_SECRET_ARN and DATABASE_HOST go together: set both or neither".into(),
                ));
            }
        };
        Ok(Self {
            database: DatabaseConfig {
                url: SecretString::from(
                    get("DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned()),
                ),
                secret: database_secret,
                max_connections: get("DATABASE_MAX_CONNECTIONS")
                    .map(|_| number("DATABASE_MAX_CONNECTIONS", 1, 1, 1_000).map(|n| n as u32))
                    .transpose()?,
                session: match get("DATABASE_SESSION_SETUP").as_deref() {
                    None | Some("connect") => SessionSetup::OnConnect,
                    Some("proxy") => SessionSetup::ByProxy,
                    Some(other) => {
                        return Err(Error::Config(format!(
                            "DATABASE_SESSION_SETUP must be connect or proxy, got {other:?}"
                        )));
                    }
                },
                product_read_max_age: Duration::from_millis(number(
                    "PRODUCT_READ_MAX_AGE_MS",
                    DEFAULT_PRODUCT_READ_MAX_AGE.as_millis() as u64,
                    0,
                    60_000,
                )?),
            },
            holds: HoldsConfig {
                ttl: Duration::from_secs(number("HOLD_TTL_SECONDS", 120, 1, 86_400)?),
                max_qty: number("MAX_HOLD_QTY", 10, 1, 1_000_000)? as u32,
            },
            orders: OrdersConfig {
                payment_ttl: Duration::from_secs(number(
                    "ORDER_PAYMENT_TTL_SECONDS",
                    900,
                    1,
                    7 * 86_400,
                )?),
                payment_grace: Duration::from_secs(number(
                    "PAYMENT_GRACE_SECONDS",
                    300,
                    0,
                    7 * 86_400,
                )?),
            },
            webhook: WebhookConfig {
                secrets: webhook_secrets,
                tolerance: Duration::from_secs(number(
                    "WEBHOOK_TOLERANCE_SECONDS",
                    300,
                    1,
                    86_400,
                )?),
                max_attempts: number("PAYMENT_MAX_ATTEMPTS", 10, 1, 1_000)? as u32,
                retry_base: Duration::from_millis(number("PAYMENT_RETRY_BASE_MS", 500, 1, 60_000)?),
            },
            admin_token: get("ADMIN_TOKEN").map(SecretString::from),
            admission_token_secrets: secrets("ADMISSION_TOKEN_SECRET"),
            aws: AwsConfig {
                scheduler,
                webhook_queue_url: get("WEBHOOK_QUEUE_URL"),
                event_bus_name: get("EVENT_BUS_NAME"),
            },
            buyers: BuyersConfig {
                auth: buyer_auth,
                jwt_secrets: secrets("BUYER_JWT_SECRET"),
                jwt_issuer: get("BUYER_JWT_ISSUER"),
                jwt_audience: get("BUYER_JWT_AUDIENCE"),
            },
            local: LocalConfig {
                listen_addr: get("LISTEN_ADDR").unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned()),
                sweep_interval: Duration::from_secs(number("SWEEP_INTERVAL_SECONDS", 5, 1, 3_600)?),
            },
        })
    }

    pub fn payment_window(&self) -> crate::domain::model::PaymentWindow {
        crate::domain::model::PaymentWindow {
            ttl: self.orders.payment_ttl,
            grace: self.orders.payment_grace,
        }
    }

    pub fn payment_retry_policy(&self) -> crate::domain::retry::RetryPolicy {
        crate::domain::retry::RetryPolicy {
            max_attempts: self.webhook.max_attempts,
            base_delay: self.webhook.retry_base,
        }
    }

    /// For functions that cannot work without it: fail at cold start, not on the first request.
    pub fn require_admin_token(&self) -> Result<SecretString, Error> {
        self.admin_token
            .clone()
            .ok_or_else(|| Error::Config("ADMIN_TOKEN must be set".into()))
    }

    /// The waiting rooms' admission tokens: those who issue or check them cannot work without.
    pub fn require_admission_tokens(
        &self,
    ) -> Result<crate::domain::admission::AdmissionTokens, Error> {
        self.admission_token_secrets
            .clone()
            .and_then(crate::domain::admission::AdmissionTokens::new)
            .ok_or_else(|| Error::Config("ADMISSION_TOKEN_SECRET must be set".into()))
    }

    pub fn require_webhook_secrets(&self) -> Result<Vec<SecretString>, Error> {
        self.webhook
            .secrets
            .clone()
            .ok_or_else(|| Error::Config("WEBHOOK_SECRET must be set".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = config(&[]).expect("defaults are valid");
        assert_eq!(config.database.url.expose_secret(), DEFAULT_DATABASE_URL);
        assert_eq!(config.local.listen_addr, "127.0.0.1:3000");
        assert_eq!(config.holds.ttl, Duration::from_secs(120));
        assert_eq!(config.holds.max_qty, 10);
        assert_eq!(config.webhook.tolerance, Duration::from_secs(300));
        assert_eq!(config.orders.payment_grace, Duration::from_secs(300));
        assert!(config.admin_token.is_none());
        assert!(config.require_webhook_secrets().is_err());
    }

    #[test]
    fn scheduler_settings_are_all_or_nothing() {
        assert_eq!(config(&[]).expect("valid").aws.scheduler, None);
        let partial = config(&[("HOLD_SCHEDULE_GROUP", "holds")]);
        assert!(
            partial
                .expect_err("refused")
                .to_string()
                .contains("SCHEDULER_ROLE_ARN")
        );
        let full = config(&[
            ("HOLD_SCHEDULE_GROUP", "holds"),
            ("SCHEDULER_ROLE_ARN", "arn:aws:iam::1:role/s"),
            (
                "HOLD_EXPIRY_FUNCTION_ARN",
                "arn:aws:lambda:eu-west-1:1:function:hold-expiry",
            ),
        ])
        .expect("valid");
        let settings = full.aws.scheduler.expect("set");
        assert_eq!(
            (settings.group.as_str(), settings.order_expiry_arn),
            ("holds", None)
        );
        assert_eq!(full.orders.payment_ttl, Duration::from_secs(900));
    }

    #[test]
    fn the_session_is_set_on_connect_unless_the_proxy_sets_it() {
        let session = |vars: &[(&str, &str)]| config(vars).map(|c| c.database.session);
        assert_eq!(session(&[]).expect("valid"), SessionSetup::OnConnect);
        assert_eq!(
            session(&[("DATABASE_SESSION_SETUP", "connect")]).expect("valid"),
            SessionSetup::OnConnect
        );
        assert_eq!(
            session(&[("DATABASE_SESSION_SETUP", "proxy")]).expect("valid"),
            SessionSetup::ByProxy
        );
        assert!(session(&[("DATABASE_SESSION_SETUP", "Proxy")]).is_err());
    }

    #[test]
    fn the_database_secret_needs_its_host_and_defaults_to_verified_tls() {
        assert!(config(&[]).expect("valid").database.secret.is_none());
        let arn = "arn:aws:secretsmanager:eu-west-1:1:secret:db";
        assert!(config(&[("DATABASE_SECRET_ARN", arn)]).is_err());
        let secret = config(&[("DATABASE_SECRET_ARN", arn), ("DATABASE_HOST", "proxy")])
            .expect("valid")
            .database
            .secret
            .expect("set");
        assert_eq!(
            (secret.arn.as_str(), secret.host.as_str(), secret.port),
            (arn, "proxy", 3306)
        );
        assert_eq!(secret.database, "flash_sale");
        assert!(matches!(secret.ssl_mode, MySqlSslMode::VerifyIdentity));
        assert!(
            config(&[
                ("DATABASE_SECRET_ARN", arn),
                ("DATABASE_HOST", "proxy"),
                ("DATABASE_SSL_MODE", "sometimes"),
            ])
            .is_err()
        );
    }

    #[test]
    fn webhook_secret_is_a_comma_separated_list() {
        let config = config(&[("WEBHOOK_SECRET", "old, new ,")]).expect("valid");
        let secrets = config.require_webhook_secrets().expect("set");
        let secrets: Vec<&str> = secrets.iter().map(|s| s.expose_secret()).collect();
        assert_eq!(secrets, ["old", "new"]);
    }

    #[test]
    fn out_of_range_numbers_are_refused_with_the_variable_name() {
        let err = config(&[("MAX_HOLD_QTY", "0")]).expect_err("0 is refused");
        assert!(err.to_string().contains("MAX_HOLD_QTY"));
        assert!(config(&[("HOLD_TTL_SECONDS", "abc")]).is_err());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = config(&[
            ("DATABASE_URL", "mysql://app:hunter2@db/flash"),
            ("ADMIN_TOKEN", "admintoken123"),
            ("WEBHOOK_SECRET", "whsec_abc"),
        ])
        .expect("valid");
        let printed = format!("{config:?}");
        for secret in ["hunter2", "admintoken123", "whsec_abc"] {
            assert!(!printed.contains(secret), "{secret} leaked into {printed}");
        }
    }
}
