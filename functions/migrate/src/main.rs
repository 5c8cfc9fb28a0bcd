//! Lambda entry point: build the dependencies once per container, then answer CloudFormation.

use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deps = migrate::Deps::from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: LambdaEvent<migrate::Request>| migrate::handle(&deps, event.payload),
    ))
    .await
}
