//! Lambda entry point: nothing to build (no database, no AWS client), only requests to answer.

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    lambda_http::tracing::init_default_subscriber();
    lambda_http::run(lambda_http::service_fn(unmatched_route::handle)).await
}
