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

    fn answer_to(json: &str) -> (u16, Option<String>, serde_json::Value) {
        let request =
            lambda_http::request::from_str(json).expect("an API Gateway HTTP API request");
        let response = answer(request.method(), request.uri().path());
        let allow = response
            .headers()
            .get(header::ALLOW)
            .and_then(|allow| allow.to_str().ok())
            .map(str::to_owned);
        let body = serde_json::from_slice(response.body().as_ref()).expect("JSON");
        (response.status().as_u16(), allow, body)
    }

    #[test]
    fn a_path_of_no_route_is_route_not_found() {
        let (status, allow, body) = answer_to(include_str!(
            "../../../events/unmatched-route.not-found.json"
        ));
        assert_eq!((status, allow), (404, None));
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "code": "route_not_found",
                "message": "no route for GET /api/product/1"
            }})
        );
    }

    #[test]
    fn a_method_the_route_does_not_take_is_method_not_allowed_with_allow() {
        let (status, allow, body) = answer_to(include_str!(
            "../../../events/unmatched-route.method-not-allowed.json"
        ));
        assert_eq!((status, allow.as_deref()), (405, Some("GET, DELETE")));
        assert_eq!(
            body,
            serde_json::json!({"error": {
                "code": "method_not_allowed",
                "message": "method PUT is not allowed on /api/holds/3b1f6c1e-8c1a-4d5e-9a3b-1f2e3d4c5b6a"
            }})
        );
    }

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
