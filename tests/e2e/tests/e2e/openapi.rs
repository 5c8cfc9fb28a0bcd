//! openapi.yaml against the code: the routes it describes are the routes the server has, every
//! route documents the answers any route can give, and the checker `Api` puts every answer of
//! the end-to-end tests through refuses what the document does not allow.

use std::collections::BTreeSet;

use flash_sale_e2e::openapi::{SPEC, Spec};
use flash_sale_e2e::testing::{ADMIN_TOKEN, Api, TestDb};
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, RETRY_AFTER};
use serde_json::{Value, json};
use shared::routes::ROUTES;

#[test]
fn the_spec_describes_exactly_the_routes_the_server_serves() {
    let served: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    let described: BTreeSet<(String, String)> = SPEC
        .operations()
        .map(|(method, path)| (method.to_owned(), path.to_owned()))
        .collect();
    assert_eq!(described, served);
}

#[test]
fn every_operation_documents_what_any_route_can_answer() {
    for (method, path) in SPEC.operations() {
        let statuses = SPEC.statuses(method, path).expect("documented");
        // The body limit holds on every route; every route reads or writes the database.
        for always in ["413", "500", "503"] {
            assert!(
                statuses.contains(&always),
                "{method} {path} does not document {always}: {statuses:?}"
            );
        }
        if method == "POST" {
            assert!(
                statuses.contains(&"400"),
                "{method} {path} reads a JSON body but does not document 400"
            );
        }
    }
}

#[test]
fn the_spec_parses_as_openapi_3_1_with_every_reference_resolved() {
    let text = std::fs::read_to_string(flash_sale_e2e::openapi::SPEC_PATH).expect("the spec");
    assert!(Spec::parse(&text).is_ok());
    assert!(
        Spec::parse(&text.replacen("openapi: 3.1.0", "openapi: 3.0.3", 1)).is_err(),
        "only 3.1 is accepted"
    );
    assert!(
        Spec::parse(&text.replacen(
            "#/components/schemas/Product'",
            "#/components/schemas/Nothing'",
            1
        ))
        .is_err(),
        "a dangling reference is an error"
    );
}

/// What the server's answers carry: a product read's cache headers too (the spec requires them
/// of it alone; extra headers are allowed).
fn json_headers() -> HeaderMap {
    HeaderMap::from_iter([
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        (
            CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=1, stale-while-revalidate=2"),
        ),
        (
            ETAG,
            HeaderValue::from_static("W/\"0123456789abcdef0123456789abcdef\""),
        ),
    ])
}

fn error(code: &str) -> Value {
    json!({"error": {"code": code, "message": "something"}})
}

#[test]
fn the_checker_refuses_what_the_spec_does_not_allow() {
    let headers = json_headers();
    let product = json!({"id": 7, "name": "Flash item", "price": "50.00", "total_stock": 10,
                         "available_stock": 9, "reserved_stock": 1, "sold_stock": 0, "stock_buckets": 1,
                         "max_per_buyer": null, "sale_starts_at": null, "sale_ends_at": null,
                         "waiting_room": null, "as_of": "2026-12-04T10:00:00.000Z"});
    let check =
        |method, path, status, body: &Value| SPEC.check(method, path, status, &headers, body);

    assert_eq!(check("GET", "/api/products/7", 200, &product), Ok(()));
    let uncacheable =
        HeaderMap::from_iter([(CONTENT_TYPE, HeaderValue::from_static("application/json"))]);
    assert!(
        SPEC.check("GET", "/api/products/7", 200, &uncacheable, &product)
            .is_err(),
        "a product read names its validator and its cacheability"
    );
    assert_eq!(
        check("GET", "/api/products/x", 400, &error("invalid_request")),
        Ok(())
    );
    let mut extra = product.clone();
    extra["secret"] = json!(1);
    let mut cents = product.clone();
    cents["price"] = json!(5000);
    for (status, body, why) in [
        (200, &extra, "an undocumented field"),
        (200, &cents, "price as a number"),
        (418, &product, "an undocumented status"),
        (404, &error("hold_not_found"), "another resource's code"),
        (400, &json!({"error": "invalid"}), "not the error shape"),
    ] {
        assert!(
            check("GET", "/api/products/7", status, body).is_err(),
            "{why} passed"
        );
    }
    let mut hold = json!({"hold_id": "6f1c2a4e-2b7d-4c1e-9a53-0d8f4b1e7c21", "product_id": 7, "buyer_id": "alice",
                          "qty": 2, "status": "active", "expires_at": "2026-11-21T11:13:00.120Z"});
    assert_eq!(check("GET", "/api/holds/x", 200, &hold), Ok(()));
    hold["expires_at"] = json!("yesterday");
    assert!(
        check("GET", "/api/holds/x", 200, &hold).is_err(),
        "a time that is no time"
    );

    // Requests no operation describes: an unknown path is 404, a known path's other method 405.
    assert_eq!(
        check("GET", "/api/nothing", 404, &error("route_not_found")),
        Ok(())
    );
    let mut allow = json_headers();
    allow.insert("allow", HeaderValue::from_static("POST"));
    assert_eq!(
        SPEC.check(
            "DELETE",
            "/api/holds",
            405,
            &allow,
            &error("method_not_allowed")
        ),
        Ok(())
    );
    assert!(
        check("DELETE", "/api/holds", 405, &error("method_not_allowed")).is_err(),
        "a 405 without Allow"
    );
    assert!(check("DELETE", "/api/holds", 404, &error("route_not_found")).is_err());
    assert!(check("GET", "/api/nothing", 404, &error("hold_not_found")).is_err());
}

#[test]
fn the_checker_holds_headers_to_the_spec() {
    let unavailable = error("service_unavailable");
    let without_retry_after = json_headers();
    assert!(
        SPEC.check(
            "GET",
            "/api/orders/x",
            503,
            &without_retry_after,
            &unavailable
        )
        .is_err(),
        "503 without Retry-After"
    );
    let mut with_retry_after = json_headers();
    with_retry_after.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    assert_eq!(
        SPEC.check("GET", "/api/orders/x", 503, &with_retry_after, &unavailable),
        Ok(())
    );
    assert!(
        SPEC.check(
            "GET",
            "/api/orders/x",
            404,
            &HeaderMap::new(),
            &error("order_not_found")
        )
        .is_err(),
        "a JSON body without its Content-Type"
    );
}

/// Every operation's success and its main failure, and a wrong method on every path, through
/// `Api`: each answer is checked against the spec on the way.
#[tokio::test]
async fn every_operation_answers_as_the_spec_says() {
    let db = TestDb::new().await;
    let server = db.server(&[]).await;
    let api = Api::new(&server);

    let product = api.create_product(5, "19.99").await;
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let body = json!({"name": "x", "price": "1.00", "stock": 1, "stock_buckets": 4}).to_string();
    let (status, _) = api.post_raw("/api/admin/products", body.clone(), &[]).await;
    assert_eq!(status, 401);
    let (status, created) = api
        .post_raw("/api/admin/products", body, &[("authorization", &bearer)])
        .await;
    assert_eq!((status, created["stock_buckets"].as_u64()), (201, Some(4)));
    assert_eq!(api.get("/api/products/0").await.0, 404);

    let key = [("idempotency-key", "checkout-1")];
    let hold_body = json!({"product_id": product, "quantity": 2}).to_string();
    let (status, hold) = api.post_raw("/api/holds", hold_body.clone(), &key).await;
    assert_eq!(status, 201, "{hold}");
    assert_eq!(api.post_raw("/api/holds", hold_body, &key).await.1, hold);
    let other = json!({"product_id": product, "qty": 1}).to_string();
    assert_eq!(api.post_raw("/api/holds", other, &key).await.0, 422);
    assert_eq!(api.hold(product, 4).await.0, 409);
    let hold_id = hold["hold_id"].as_str().expect("hold id");
    assert_eq!(api.get(&format!("/api/holds/{hold_id}")).await.0, 200);

    let (status, order) = api.order(hold_id).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(api.order(hold_id).await, (200, order.clone()));
    let order_id = order["order_id"].as_str().expect("order id");
    assert_eq!(api.get(&format!("/api/orders/{order_id}")).await.0, 200);
    assert_eq!(api.get("/api/orders/nope").await.0, 404);

    assert_eq!(api.pay("evt-1", order_id, "paid").await.0, 202);
    let unsigned = json!({"idempotency_key": "evt-2", "order_id": order_id, "status": "paid"});
    assert_eq!(api.post("/api/payments/webhook", &unsigned).await.0, 401);

    for (method, path) in SPEC.operations() {
        let concrete = path
            .replace("{id}", &product.to_string())
            .replace("{hold_id}", hold_id)
            .replace("{order_id}", order_id);
        // No route takes PUT.
        let answer = api.put(&concrete).await;
        assert_eq!(answer.0, 405, "{method} {path}: {}", answer.1);
    }
    assert_eq!(api.get("/api/products").await.0, 404);
    let huge = "x".repeat(70 * 1024);
    assert_eq!(
        api.post_raw("/api/orders", huge, &[]).await.1["error"]["code"],
        "payload_too_large"
    );
}
