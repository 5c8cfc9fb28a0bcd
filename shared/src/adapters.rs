//! Chooses each port's adapter from the configuration: the AWS one when its variables are set
//! (and the function was built with its feature), otherwise `None`, and the caller picks its
//! in-process fallback (a Lambda skips, the local server runs timers, workers and logs).

use std::sync::Arc;

use sqlx::MySqlPool;

use crate::aws::SdkLoader;
use crate::config::Config;
use crate::error::Error;
use crate::ports::{DeadlineScheduler, EventPublisher, NoPublisher, NoScheduler, PaymentQueue};

/// A Lambda container's database pool: with the credentials of `DATABASE_SECRET_ARN` when it is
/// set (read here at cold start, and again every few minutes for rotations), otherwise from
/// `DATABASE_URL`.
pub async fn lambda_pool(config: &Config, sdk: &SdkLoader) -> Result<MySqlPool, Error> {
    let Some(secret) = &config.database_secret else {
        let options = crate::db::connect_options(&config.database_url)?;
        return Ok(crate::db::lambda_pool(config, options));
    };
    #[cfg(feature = "aws-secrets")]
    {
        use crate::aws::secrets;
        let client = aws_sdk_secretsmanager::Client::new(sdk.get().await);
        let options = secrets::connect_options(&client, secret).await?;
        let pool = crate::db::lambda_pool(config, options);
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
    let Some(settings) = config.scheduler.clone() else {
        return Ok(None);
    };
    #[cfg(feature = "aws-scheduler")]
    {
        let client = aws_sdk_scheduler::Client::new(sdk.get().await);
        Ok(Some(Arc::new(
            crate::aws::scheduler::EventBridgeScheduler::new(client, settings),
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
    let Some(queue_url) = config.webhook_queue_url.clone() else {
        return Ok(None);
    };
    #[cfg(feature = "aws-sqs")]
    {
        let client = aws_sdk_sqs::Client::new(sdk.get().await);
        Ok(Some(Arc::new(crate::aws::sqs::SqsPaymentQueue::new(
            client, queue_url,
        ))))
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
    let Some(bus_name) = config.event_bus_name.clone() else {
        return Ok(None);
    };
    #[cfg(feature = "aws-eventbridge")]
    {
        let client = aws_sdk_eventbridge::Client::new(sdk.get().await);
        Ok(Some(Arc::new(
            crate::aws::eventbridge::EventBridgePublisher::new(client, bus_name),
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

/// A Lambda's scheduler: Scheduler when configured, else none (the sweeper settles deadlines).
pub async fn lambda_scheduler(
    config: &Config,
    sdk: &SdkLoader,
) -> Result<Arc<dyn DeadlineScheduler>, Error> {
    Ok(aws_scheduler(config, sdk)
        .await?
        .unwrap_or_else(|| Arc::new(NoScheduler)))
}

/// A Lambda's publisher: EventBridge when configured, else events wait in the outbox.
pub async fn lambda_event_publisher(
    config: &Config,
    sdk: &SdkLoader,
) -> Result<Arc<dyn EventPublisher>, Error> {
    Ok(aws_event_publisher(config, sdk)
        .await?
        .unwrap_or_else(|| Arc::new(NoPublisher)))
}
