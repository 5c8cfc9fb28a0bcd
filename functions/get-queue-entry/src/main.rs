//! Lambda entry point: build the dependencies once per container, then serve requests.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    let deps = get_queue_entry::Deps::from_env().await?;
    lambda_http::run(lambda_http::service_fn(|request| {
        get_queue_entry::handle(&deps, request)
    }))
    .await
}
