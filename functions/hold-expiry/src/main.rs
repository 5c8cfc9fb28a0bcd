//! Lambda entry point: build the dependencies once per container, then settle holds on demand.

use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deps = hold_expiry::Deps::from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: LambdaEvent<hold_expiry::ExpireHold>| hold_expiry::handle(&deps, event.payload),
    ))
    .await
}
