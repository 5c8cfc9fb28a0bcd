//! The AWS adapters of the ports, each behind its own cargo feature so a function links only
//! the SDK it calls.

#[cfg(feature = "aws-eventbridge")]
pub mod eventbridge;
#[cfg(feature = "aws-scheduler")]
pub mod scheduler;
#[cfg(feature = "aws-secrets")]
pub mod secrets;
#[cfg(feature = "aws-sqs")]
pub mod sqs;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use std::sync::Arc;
use tokio::sync::OnceCell;

use crate::adapters::local::{NoPublisher, NoScheduler};
use crate::config::Config;
use crate::error::Error;
use crate::ports::{DeadlineScheduler, EventPublisher, PaymentQueue};
use crate::store::pool::Pool;

/// Where SDK clients get their configuration: the standard chain of the environment, loaded on
/// first use only (a function whose AWS variables are unset never loads it), or a configuration
/// given by the caller (tests against a local emulator).
pub struct SdkLoader {
    config: OnceCell<aws_config::SdkConfig>,
}

impl SdkLoader {
    /// The environment's configuration: honours `AWS_ENDPOINT_URL` (a local emulator),
    /// `AWS_REGION` and the usual credential sources.
    pub fn from_env() -> Self {
        Self {
            config: OnceCell::new(),
        }
    }

    pub fn given(config: aws_config::SdkConfig) -> Self {
        Self {
            config: OnceCell::new_with(Some(bounded(config))),
        }
    }

    pub async fn get(&self) -> &aws_config::SdkConfig {
        self.config
            .get_or_init(|| async { bounded(aws_config::load_from_env().await) })
            .await
    }
}

/// Every AWS call here sits on a request's path, and most are side effects that must not hold
/// the request up when the service is down: two attempts, and a bounded time for each.
fn bounded(config: aws_config::SdkConfig) -> aws_config::SdkConfig {
    config
        .into_builder()
        .retry_config(RetryConfig::standard().with_max_attempts(2))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(1))
                .operation_attempt_timeout(Duration::from_secs(2))
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
        .build()
}

// Choosing each port's adapter from the configuration: the AWS one when its variables are set
// (and the function was built with its feature), otherwise `None`, and the caller picks its
// in-process fallback (a Lambda skips, the local server runs timers, workers and logs).

/// A Lambda container's database pool: with the credentials of `DATABASE_SECRET_ARN` when it is
/// set (read here at cold start, and again every few minutes for rotations), otherwise from
/// `DATABASE_URL`.
pub async fn lambda_pool(config: &Config, sdk: &SdkLoader) -> Result<Pool, Error> {
    let Some(secret) = &config.database.secret else {
        let options = crate::store::db::connect_options(&config.database.url)?;
        return Ok(crate::store::db::lazy_pool(config, options));
    };
    #[cfg(feature = "aws-secrets")]
    {
        use crate::adapters::aws::secrets;
        let client = aws_sdk_secretsmanager::Client::new(sdk.get().await);
        let options = secrets::connect_options(&client, secret).await?;
        let pool = crate::store::db::lazy_pool(config, options);
        secrets::keep_fresh(pool.clone(), client, secret.clone(), secrets::REFRESH_EVERY);
        Ok(pool)
    }
    #[cfg(not(feature = "aws-secrets"))]
    {
        let _ = (secret, sdk);
        Err(not_built_with("DATABASE_SECRET_ARN", "aws-secrets"))
    }
}

pub async fn aws_scheduler(
    config: &Config,
    sdk: &SdkLoader,
) -> Result<Option<Arc<dyn DeadlineScheduler>>, Error> {
    let Some(settings) = config.aws.scheduler.clone() else {
        return Ok(None);
    };
    #[cfg(feature = "aws-scheduler")]
    {
        let client = aws_sdk_scheduler::Client::new(sdk.get().await);
        Ok(Some(Arc::new(
            crate::adapters::aws::scheduler::EventBridgeScheduler::new(client, settings),
        )))
    }
    #[cfg(not(feature = "aws-scheduler"))]
    {
        let _ = (settings, sdk);
        Err(not_built_with("HOLD_SCHEDULE_GROUP", "aws-scheduler"))
    }
}

pub async fn aws_payment_queue(
    config: &Config,
    sdk: &SdkLoader,
) -> Result<Option<Arc<dyn PaymentQueue>>, Error> {
    let Some(queue_url) = config.aws.webhook_queue_url.clone() else {
        return Ok(None);
    };
    #[cfg(feature = "aws-sqs")]
    {
        let client = aws_sdk_sqs::Client::new(sdk.get().await);
        Ok(Some(Arc::new(
            crate::adapters::aws::sqs::SqsPaymentQueue::new(client, queue_url),
        )))
    }
    #[cfg(not(feature = "aws-sqs"))]
    {
        let _ = (queue_url, sdk);
        Err(not_built_with("WEBHOOK_QUEUE_URL", "aws-sqs"))
    }
}

pub async fn aws_event_publisher(
    config: &Config,
    sdk: &SdkLoader,
) -> Result<Option<Arc<dyn EventPublisher>>, Error> {
    let Some(bus_name) = config.aws.event_bus_name.clone() else {
        return Ok(None);
    };
    #[cfg(feature = "aws-eventbridge")]
    {
        let client = aws_sdk_eventbridge::Client::new(sdk.get().await);
        Ok(Some(Arc::new(
            crate::adapters::aws::eventbridge::EventBridgePublisher::new(client, bus_name),
        )))
    }
    #[cfg(not(feature = "aws-eventbridge"))]
    {
        let _ = (bus_name, sdk);
        Err(not_built_with("EVENT_BUS_NAME", "aws-eventbridge"))
    }
}

#[cfg(not(all(
    feature = "aws-scheduler",
    feature = "aws-sqs",
    feature = "aws-eventbridge",
    feature = "aws-secrets"
)))]
fn not_built_with(variable: &str, feature: &str) -> Error {
    Error::Config(format!(
        "{variable} is set but this function was built without the `{feature}` feature"
    ))
}

/// What every function builds once per container, before its first invocation: the
/// configuration (checked now, so a bad one fails the cold start, not a request), the SDK loader,
/// and from them the pool and the adapters the function asks for.
pub struct LambdaStartup {
    pub config: Config,
    pub sdk: SdkLoader,
}

impl LambdaStartup {
    pub fn from_env() -> Result<Self, Error> {
        Ok(Self {
            config: Config::from_env()?,
            sdk: SdkLoader::from_env(),
        })
    }

    pub async fn pool(&self) -> Result<Pool, Error> {
        lambda_pool(&self.config, &self.sdk).await
    }

    /// Scheduler when configured, else none (the sweeper settles deadlines).
    pub async fn scheduler(&self) -> Result<Arc<dyn DeadlineScheduler>, Error> {
        Ok(aws_scheduler(&self.config, &self.sdk)
            .await?
            .unwrap_or_else(|| Arc::new(NoScheduler)))
    }

    /// EventBridge when configured, else events wait in the outbox for the sweeper.
    pub async fn publisher(&self) -> Result<Arc<dyn EventPublisher>, Error> {
        Ok(aws_event_publisher(&self.config, &self.sdk)
            .await?
            .unwrap_or_else(|| Arc::new(NoPublisher)))
    }

    /// SQS when configured, else `None`.
    pub async fn payment_queue(&self) -> Result<Option<Arc<dyn PaymentQueue>>, Error> {
        aws_payment_queue(&self.config, &self.sdk).await
    }
}
