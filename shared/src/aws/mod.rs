//! The AWS adapters of the ports, each behind its own cargo feature so a function links only
//! the SDK it calls. Clients come from the standard configuration chain, which honours
//! `AWS_ENDPOINT_URL` (a local emulator) and `AWS_REGION`.

#[cfg(feature = "aws-eventbridge")]
pub mod eventbridge;
#[cfg(feature = "aws-scheduler")]
pub mod scheduler;
#[cfg(feature = "aws-sqs")]
pub mod sqs;

static SDK_CONFIG: tokio::sync::OnceCell<aws_config::SdkConfig> =
    tokio::sync::OnceCell::const_new();

/// The SDK configuration, loaded once per process (a container's cold start) and shared by
/// every client.
pub async fn sdk_config() -> &'static aws_config::SdkConfig {
    SDK_CONFIG.get_or_init(aws_config::load_from_env).await
}
