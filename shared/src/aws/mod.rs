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
use tokio::sync::OnceCell;

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
