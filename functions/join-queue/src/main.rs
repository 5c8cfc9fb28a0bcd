//! Lambda entry point: build the dependencies once per container, then serve requests.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let deps = join_queue::Deps::from_env().await?;
    lambda_http::run(lambda_http::service_fn(|request| {
        join_queue::handle(&deps, request)
    }))
    .await
}
