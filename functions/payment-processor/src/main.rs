//! Lambda entry point: build the dependencies once per container, then consume SQS batches.

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::LambdaEvent;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let deps = payment_processor::Deps::from_env().await?;
    lambda_runtime::run(lambda_runtime::service_fn(
        |event: LambdaEvent<SqsEvent>| payment_processor::handle(&deps, event.payload),
    ))
    .await
}
