//! The HTTP contract's routes, in one table: the local server dispatches by it, API Gateway
//! (template.yaml) declares the same set, and the `unmatched-route` function answers the rest.

use lambda_http::http::Method;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    GetProduct,
    CreateProduct,
    CreateHold,
    GetHold,
    ReleaseHold,
    UpdateProduct,
    CreateOrder,
    GetOrder,
    PaymentWebhook,
    JoinQueue,
    GetQueueEntry,
    GetQueueSummary,
}

impl Route {
    /// The routes of a buyer's own holds and orders: behind the JWT authorizer.
    pub fn is_buyer_route(self) -> bool {
        matches!(
            self,
            Self::CreateHold
                | Self::GetHold
                | Self::ReleaseHold
                | Self::CreateOrder
                | Self::GetOrder
                | Self::JoinQueue
                | Self::GetQueueEntry
        )
    }
}

pub const ROUTES: &[(Method, &str, Route)] = &[
    (Method::GET, "/api/products/{id}", Route::GetProduct),
    (Method::POST, "/api/admin/products", Route::CreateProduct),
    (Method::POST, "/api/holds", Route::CreateHold),
    (Method::GET, "/api/holds/{hold_id}", Route::GetHold),
    (Method::DELETE, "/api/holds/{hold_id}", Route::ReleaseHold),
    (
        Method::PATCH,
        "/api/admin/products/{id}",
        Route::UpdateProduct,
    ),
    (Method::POST, "/api/orders", Route::CreateOrder),
    (Method::GET, "/api/orders/{order_id}", Route::GetOrder),
    (Method::POST, "/api/payments/webhook", Route::PaymentWebhook),
    (Method::POST, "/api/products/{id}/queue", Route::JoinQueue),
    (
        Method::GET,
        "/api/products/{id}/queue",
        Route::GetQueueEntry,
    ),
    (
        Method::GET,
        "/api/products/{id}/queue/summary",
        Route::GetQueueSummary,
    ),
];

#[derive(Debug, PartialEq, Eq)]
pub enum Match {
    Found {
        route: Route,
        params: Vec<(String, String)>,
    },
    /// The path exists with these methods only (the `Allow` header of the 405).
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

pub fn find(method: &Method, path: &str) -> Match {
    let mut allowed = Vec::new();
    for (route_method, pattern, route) in ROUTES {
        let Some(params) = match_path(pattern, path) else {
            continue;
        };
        if route_method == method {
            return Match::Found {
                route: *route,
                params,
            };
        }
        allowed.push(route_method.clone());
    }
    if allowed.is_empty() {
        Match::NotFound
    } else {
        Match::MethodNotAllowed { allowed }
    }
}

/// `{name}` matches one non-empty segment; everything else must be equal.
pub fn match_path(pattern: &str, path: &str) -> Option<Vec<(String, String)>> {
    let mut pattern_segments = pattern.split('/');
    let mut path_segments = path.split('/');
    let mut params = Vec::new();
    loop {
        match (pattern_segments.next(), path_segments.next()) {
            (None, None) => return Some(params),
            (Some(expected), Some(actual)) => {
                if let Some(name) = expected
                    .strip_prefix('{')
                    .and_then(|rest| rest.strip_suffix('}'))
                {
                    if actual.is_empty() {
                        return None;
                    }
                    params.push((name.to_owned(), actual.to_owned()));
                } else if expected != actual {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_match_their_route_and_capture_the_id() {
        assert_eq!(
            find(&Method::GET, "/api/products/7"),
            Match::Found {
                route: Route::GetProduct,
                params: vec![("id".into(), "7".into())]
            }
        );
        assert_eq!(
            find(&Method::POST, "/api/holds"),
            Match::Found {
                route: Route::CreateHold,
                params: vec![]
            }
        );
    }

    #[test]
    fn wrong_methods_and_unknown_paths_are_told_apart() {
        assert_eq!(
            find(&Method::DELETE, "/api/products/7"),
            Match::MethodNotAllowed {
                allowed: vec![Method::GET]
            }
        );
        assert_eq!(
            find(&Method::GET, "/api/holds"),
            Match::MethodNotAllowed {
                allowed: vec![Method::POST]
            }
        );
        assert_eq!(find(&Method::GET, "/api/products/"), Match::NotFound);
        assert_eq!(find(&Method::GET, "/api/products/7/extra"), Match::NotFound);
        assert_eq!(find(&Method::GET, "/"), Match::NotFound);
    }
}
