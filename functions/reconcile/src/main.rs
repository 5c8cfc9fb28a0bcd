//! Lambda entry point: build the dependencies once per container, then reconcile per invocation.

use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deps = reconcile::Deps::from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: LambdaEvent<reconcile::Request>| reconcile::handle(&deps, event.payload),
    ))
    .await
}
