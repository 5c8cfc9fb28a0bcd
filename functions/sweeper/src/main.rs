//! Lambda entry point: build the dependencies once per container, then sweep on each tick.

use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deps = sweeper::Deps::from_env().await?;
    // The scheduled event carries nothing the sweep needs.
    lambda_runtime::run(lambda_runtime::service_fn(
        |_: LambdaEvent<serde_json::Value>| sweeper::handle(&deps),
    ))
    .await
}
