//! The HTTP API's `$default` route: a request that no route of the contract takes gets the
//! contract's JSON error, 404 `route_not_found` or 405 `method_not_allowed` with `Allow`, instead
//! of API Gateway's own `{"message":"Not Found"}`. The local server answers its misses here too.

use lambda_http::http::{HeaderValue, Method, header};
use shared::Error;
use shared::http::{self, Body, Request, Response};
use shared::routes::{self, Match};

pub async fn handle(request: Request) -> Result<Response<Body>, lambda_http::Error> {
    Ok(answer(request.method(), request.uri().path()))
}

pub fn answer(method: &Method, path: &str) -> Response<Body> {
    match routes::find(method, path) {
        Match::NotFound => http::error(&Error::RouteNotFound {
            method: method.to_string(),
            path: path.to_owned(),
        }),
        Match::MethodNotAllowed { allowed } => {
            let mut response = http::error(&Error::MethodNotAllowed {
                method: method.to_string(),
                path: path.to_owned(),
            });
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            response
        }
        // The gateway sent here a request that one of its own routes should have taken: its
        // routes and the contract's table differ (template.yaml against shared::routes).
        Match::Found { route, .. } => http::error(&Error::Internal(format!(
            "{method} {path} is the contract's {route:?} route, yet it reached the $default route"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A contract route that reaches `$default` means the gateway's routes are wrong: a 500, not
    /// a 404 that would tell the client the route does not exist.
    #[test]
    fn a_contract_route_sent_here_is_a_server_error() {
        let response = answer(&Method::GET, "/api/products/1");
        assert_eq!(response.status(), 500);
        let body: serde_json::Value =
            serde_json::from_slice(response.body().as_ref()).expect("JSON");
        assert_eq!(body["error"]["code"], "internal_error");
    }
}
