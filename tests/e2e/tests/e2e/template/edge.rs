//! The edge: a CloudFront distribution in front of the HTTP API that caches the public reads (a
//! product, its waiting room's summary) for as long as their origin says, passes every other
//! request through uncached with the viewer's headers, and carries a WAF web ACL
//! (`edge-waf.yaml`) limiting each client IP; all of it made only with `EdgeEnabled=true`, and
//! only where its web ACL can exist.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use shared::routes::{ROUTES, Route};

use super::deploy::Deploy;
use super::{Template, reference};

/// The managed policies the default behaviour names by id, as CloudFront documents them
/// (using-managed-cache-policies.html, using-managed-origin-request-policies.html).
const CACHING_DISABLED: &str = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad";
const ALL_VIEWER_EXCEPT_HOST_HEADER: &str = "b689b0a8-53d0-40ab-baf2-68738e2966ac";
const ALL_METHODS: [&str; 7] = ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"];
/// The routes the edge caches: public reads, the same answer for every client, each with its own
/// `Cache-Control` (`PRODUCT_READ_MAX_AGE_MS`).
const CACHED: [Route; 2] = [Route::GetProduct, Route::GetQueueSummary];
/// The error codes CloudFront caches (10 s unless told otherwise), as cfn-lint's schema lists
/// them for `CustomErrorResponses`.
const CACHED_ERRORS: [u64; 11] = [400, 403, 404, 405, 414, 416, 500, 501, 502, 503, 504];

fn distribution(template: &Template) -> &Value {
    &template.resource("EdgeDistribution")["Properties"]["DistributionConfig"]
}

fn methods(value: &Value) -> BTreeSet<&str> {
    value
        .as_array()
        .expect("a list of methods")
        .iter()
        .map(|method| method.as_str().expect("a method"))
        .collect()
}

/// CloudFront's path patterns: `*` is any run of characters, `/` included.
fn pattern_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((head, tail)) => {
            path.starts_with(head)
                && (0..=path.len() - head.len())
                    .any(|skip| pattern_matches(tail, &path[head.len() + skip..]))
        }
    }
}

/// A contract path as a request would spell it: `/api/products/{id}` → `/api/products/id`.
fn example_path(path: &str) -> String {
    path.replace(['{', '}'], "")
}

fn behaviours(config: &Value) -> &Vec<Value> {
    config["CacheBehaviors"].as_array().expect("CacheBehaviors")
}

/// The behaviour CloudFront gives a request for `path`: the first cache behaviour (in their
/// order) whose pattern matches, else the default.
fn behaviour_for<'a>(config: &'a Value, path: &str) -> &'a Value {
    behaviours(config)
        .iter()
        .find(|behaviour| {
            let pattern = behaviour["PathPattern"].as_str().expect("a path pattern");
            pattern_matches(pattern, path)
        })
        .unwrap_or(&config["DefaultCacheBehavior"])
}

/// Whether a behaviour caches with the product read policy.
fn caches(behaviour: &Value) -> bool {
    reference(&behaviour["CachePolicyId"]) == Some("ProductReadCachePolicy")
}

#[test]
fn cloudfront_takes_the_first_matching_pattern() {
    let config = json!({
        "DefaultCacheBehavior": {"Id": "default"},
        "CacheBehaviors": [
            {"PathPattern": "/api/products/*/queue", "Id": "queue"},
            {"PathPattern": "/api/products/*", "Id": "products"},
        ],
    });
    for (path, taken) in [
        ("/api/products/7", "products"),
        ("/api/products/7/queue", "queue"),
        ("/api/products/7/queue/summary", "products"),
        ("/api/holds", "default"),
    ] {
        assert_eq!(behaviour_for(&config, path)["Id"], taken, "{path}");
    }
}

#[test]
fn the_public_reads_are_cached_at_the_edge_as_long_as_their_origin_says_keyed_on_their_path_alone()
{
    let template = Template::load();
    let config = distribution(&template);
    let cached: BTreeSet<&str> = ROUTES
        .iter()
        .filter(|(_, path, _)| caches(behaviour_for(config, &example_path(path))))
        .map(|(_, path, _)| *path)
        .collect();
    let public_reads: BTreeSet<&str> = ROUTES
        .iter()
        .filter(|(_, _, route)| CACHED.contains(route))
        .map(|(_, path, _)| *path)
        .collect();
    assert_eq!(
        cached, public_reads,
        "the public reads take a cached behaviour, and no other route"
    );
    for (method, path, route) in ROUTES.iter().filter(|(_, _, r)| CACHED.contains(r)) {
        assert_eq!(method.as_str(), "GET", "{path}");
        assert!(
            !route.is_buyer_route(),
            "{path}: a cached read is keyed on its path alone, never on Authorization"
        );
    }
    // Every behaviour serves a route of the contract: none is shadowed by one before it.
    for behaviour in behaviours(config) {
        let pattern = behaviour["PathPattern"].as_str().expect("a path pattern");
        assert!(
            ROUTES.iter().any(|(_, path, _)| std::ptr::eq(
                behaviour_for(config, &example_path(path)),
                behaviour
            )),
            "{pattern} serves no route"
        );
    }

    let policy = &template.resource("ProductReadCachePolicy")["Properties"]["CachePolicyConfig"];
    assert_eq!(
        policy["MinTTL"], 0,
        "the origin's no-store and max-age=0 hold"
    );
    assert_eq!(
        policy["DefaultTTL"], 0,
        "an answer without Cache-Control is not cached"
    );
    let max = policy["MaxTTL"].as_u64().expect("a MaxTTL");
    assert!(
        (1..=5).contains(&max),
        "MaxTTL {max} s: the origin's max-age=1 is honoured, a wrong header is cut short"
    );
    let key = &policy["ParametersInCacheKeyAndForwardedToOrigin"];
    assert_eq!(
        (
            &key["HeadersConfig"]["HeaderBehavior"],
            &key["CookiesConfig"]["CookieBehavior"],
            &key["QueryStringsConfig"]["QueryStringBehavior"]
        ),
        (&json!("none"), &json!("none"), &json!("none")),
        "the key is the path alone: a product read is public, Authorization is no part of it"
    );
    assert_eq!(key["EnableAcceptEncodingGzip"], true);
    assert_eq!(key["EnableAcceptEncodingBrotli"], true);
    for reads in behaviours(config)
        .iter()
        .filter(|behaviour| caches(behaviour))
    {
        let pattern = &reads["PathPattern"];
        assert_eq!(reads["Compress"], true, "{pattern}");
        assert!(
            reads.get("OriginRequestPolicyId").is_none(),
            "{pattern}: the origin gets what the key holds and nothing more"
        );
        assert_eq!(methods(&reads["CachedMethods"]), ["GET", "HEAD"].into());
        assert_eq!(
            methods(&reads["AllowedMethods"]),
            ALL_METHODS.into(),
            "{pattern}: a wrong method reaches unmatched-route (405 with Allow), not CloudFront's own 403"
        );
        assert_eq!(reads["ViewerProtocolPolicy"], "https-only", "{pattern}");
        assert_eq!(reads["TargetOriginId"], "http-api", "{pattern}");
    }

    let errors: BTreeMap<u64, &Value> = config["CustomErrorResponses"]
        .as_array()
        .expect("CustomErrorResponses")
        .iter()
        .map(|error| (error["ErrorCode"].as_u64().expect("a code"), error))
        .collect();
    assert_eq!(
        errors.keys().copied().collect::<Vec<_>>(),
        CACHED_ERRORS,
        "every error CloudFront would cache for 10 s"
    );
    for (code, error) in errors {
        assert_eq!(
            error["ErrorCachingMinTTL"], 0,
            "{code} is cached only as its own Cache-Control says"
        );
        assert!(
            error.get("ResponsePagePath").is_none(),
            "{code} reaches the client as sent"
        );
    }
}

#[test]
fn every_other_request_crosses_the_edge_uncached_with_the_viewers_headers() {
    let template = Template::load();
    let config = distribution(&template);
    let default = &config["DefaultCacheBehavior"];
    assert_eq!(default["CachePolicyId"], CACHING_DISABLED);
    assert_eq!(
        default["OriginRequestPolicyId"],
        ALL_VIEWER_EXCEPT_HOST_HEADER
    );
    assert_eq!(default["ViewerProtocolPolicy"], "https-only");
    assert_eq!(default["TargetOriginId"], "http-api");
    let allowed = methods(&default["AllowedMethods"]);
    assert_eq!(allowed, ALL_METHODS.into());
    for (method, path, _) in ROUTES {
        assert!(allowed.contains(method.as_str()), "{method} {path}");
    }
    // A route under a cached path (the buyer's queue entry, under /api/products/*) takes a
    // behaviour of its own before it, passing everything through as the default does.
    for (method, path, route) in ROUTES.iter().filter(|(_, _, r)| !CACHED.contains(r)) {
        let behaviour = behaviour_for(config, &example_path(path));
        for setting in [
            "CachePolicyId",
            "OriginRequestPolicyId",
            "ViewerProtocolPolicy",
            "TargetOriginId",
        ] {
            assert_eq!(
                behaviour[setting], default[setting],
                "{method} {path} ({route:?}) must cross the edge uncached: {setting}"
            );
        }
        assert_eq!(methods(&behaviour["AllowedMethods"]), ALL_METHODS.into());
    }

    // AllViewerExceptHostHeader forwards every viewer header but Host (with caching disabled,
    // Authorization too). These are the ones the routes need: the JWT authorizer's and the
    // admin token's, a hold's idempotency key and admission token, the webhook's signature.
    let authorizer = &template.resource("HttpApi")["Properties"]["Auth"]["Authorizers"]["BuyerJwt"];
    let jwt_header = authorizer["IdentitySource"]
        .as_str()
        .and_then(|source| source.strip_prefix("$request.header."))
        .expect("the authorizer reads a header");
    let http = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/src/http.rs"
    ));
    let webhook = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../functions/payment-webhook/src/lib.rs"
    ));
    let create_hold = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../functions/create-hold/src/lib.rs"
    ));
    for (header, read_in) in [
        (jwt_header, &[][..]),
        ("idempotency-key", &[http][..]),
        ("x-signature", &[webhook][..]),
        ("admission-token", &[http, create_hold][..]),
    ] {
        if !read_in.is_empty() {
            assert!(
                read_in
                    .iter()
                    .any(|source| source.contains(&format!("\"{header}\""))),
                "the code no longer reads {header}: update this list"
            );
        }
        assert!(
            !header.eq_ignore_ascii_case("host"),
            "{header} is forwarded"
        );
    }

    let origins = config["Origins"].as_array().expect("Origins");
    assert_eq!(origins.len(), 1, "one origin, the HTTP API");
    let origin = &origins[0];
    assert_eq!(origin["Id"], "http-api");
    assert_eq!(
        origin["DomainName"],
        json!({"Fn::Sub": "${HttpApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"})
    );
    let custom = &origin["CustomOriginConfig"];
    assert_eq!(custom["OriginProtocolPolicy"], "https-only");
    assert_eq!(custom["OriginSSLProtocols"], json!(["TLSv1.2"]));
}

#[test]
fn the_edge_web_acl_refuses_each_client_ip_over_the_parameters_rate_with_the_contracts_429() {
    let edge = Template::load_file("edge-waf.yaml");
    let acls: Vec<&Value> = edge
        .of_type("AWS::WAFv2::WebACL")
        .map(|(_, acl)| &acl["Properties"])
        .collect();
    assert_eq!(acls.len(), 1, "one web ACL");
    let acl = acls[0];
    assert_eq!(acl["Scope"], "CLOUDFRONT");
    assert_eq!(acl["DefaultAction"], json!({"Allow": {}}));
    assert_eq!(acl["VisibilityConfig"]["CloudWatchMetricsEnabled"], true);
    let rules = acl["Rules"].as_array().expect("Rules");
    assert_eq!(rules.len(), 1, "one rule, the rate per IP");
    let rule = &rules[0];
    assert_eq!(rule["VisibilityConfig"]["CloudWatchMetricsEnabled"], true);
    assert_eq!(rule["VisibilityConfig"]["SampledRequestsEnabled"], true);
    let rate = &rule["Statement"]["RateBasedStatement"];
    assert_eq!(rate["AggregateKeyType"], "IP");
    assert_eq!(reference(&rate["Limit"]), Some("RateLimit"));
    assert_eq!(
        reference(&rate["EvaluationWindowSec"]),
        Some("RateLimitWindowSeconds")
    );
    let exempt = &rate["ScopeDownStatement"]["NotStatement"]["Statement"]["ByteMatchStatement"];
    let webhook = ROUTES
        .iter()
        .find(|(_, _, route)| *route == Route::PaymentWebhook)
        .map(|(_, path, _)| *path)
        .expect("the webhook route");
    assert_eq!(
        (
            &exempt["FieldToMatch"],
            &exempt["PositionalConstraint"],
            &exempt["SearchString"]
        ),
        (&json!({"UriPath": {}}), &json!("EXACTLY"), &json!(webhook)),
        "the signed webhook alone is not counted"
    );

    let response = &rule["Action"]["Block"]["CustomResponse"];
    assert_eq!(response["ResponseCode"], 429);
    let key = response["CustomResponseBodyKey"].as_str().expect("a body");
    let body = &acl["CustomResponseBodies"][key];
    assert_eq!(body["ContentType"], "APPLICATION_JSON");
    let content: Value =
        serde_json::from_str(body["Content"].as_str().expect("content")).expect("JSON");
    assert_eq!(content["error"]["code"], "rate_limited");
    assert!(content["error"]["message"].is_string());
    assert_eq!(
        content.as_object().map(|shape| shape.len()),
        Some(1),
        "the contract's error shape, nothing else: {content}"
    );

    // The application stack nests this template with its own parameters, and names the web ACL
    // the distribution carries: this one, or EdgeWebAclArn's.
    let template = Template::load();
    let nested = template.resource("EdgeWebAcl");
    assert_eq!(nested["Type"], "AWS::CloudFormation::Stack");
    assert_eq!(nested["Properties"]["TemplateURL"], "edge-waf.yaml");
    let passed = nested["Properties"]["Parameters"]
        .as_object()
        .expect("Parameters");
    let edge_parameters = edge.0["Parameters"].as_object().expect("Parameters");
    assert_eq!(
        passed.keys().collect::<Vec<_>>(),
        edge_parameters.keys().collect::<Vec<_>>()
    );
    for (name, outer) in [
        ("RateLimit", "EdgeRateLimit"),
        ("RateLimitWindowSeconds", "EdgeRateLimitWindowSeconds"),
    ] {
        assert_eq!(reference(&passed[name]), Some(outer));
        let (inner, outer) = (&edge_parameters[name], &template.0["Parameters"][outer]);
        for constraint in ["Type", "Default", "MinValue", "MaxValue", "AllowedValues"] {
            assert_eq!(inner[constraint], outer[constraint], "{name} {constraint}");
        }
    }
    assert_eq!(
        distribution(&template)["WebACLId"],
        json!({"Fn::If": ["HasEdgeWebAclArn", {"Ref": "EdgeWebAclArn"},
            {"Fn::If": ["CreateEdgeWebAcl", {"Fn::GetAtt": ["EdgeWebAcl", "Outputs.WebAclArn"]},
                {"Ref": "AWS::NoValue"}]}]})
    );
    assert!(edge.0["Outputs"]["WebAclArn"].is_object());
    assert!(Deploy::new(&edge, "us-east-1", &[]).accepted());
    assert!(
        !Deploy::new(&edge, "eu-west-1", &[]).accepted(),
        "a CLOUDFRONT web ACL exists only in us-east-1"
    );
}

#[test]
fn origin_shield_is_on_only_when_given_a_region() {
    let template = Template::load();
    let origin = &distribution(&template)["Origins"][0];
    assert_eq!(
        origin["OriginShield"],
        json!({"Fn::If": ["HasEdgeOriginShield",
            {"Enabled": true, "OriginShieldRegion": {"Ref": "EdgeOriginShieldRegion"}},
            {"Ref": "AWS::NoValue"}]})
    );
    let shield = json!({"Condition": "HasEdgeOriginShield"});
    assert!(!Deploy::new(&template, "eu-west-1", &[]).holds(&shield));
    assert!(
        Deploy::new(
            &template,
            "eu-west-1",
            &[("EdgeOriginShieldRegion", "eu-west-1")]
        )
        .holds(&shield)
    );
}

/// Every CloudFront and WAF resource, and the nested web ACL stack.
fn edge_resources(template: &Template) -> BTreeSet<&str> {
    template
        .resources()
        .iter()
        .filter(|(_, resource)| {
            let kind = resource["Type"].as_str().expect("a type");
            kind.starts_with("AWS::CloudFront::")
                || kind.starts_with("AWS::WAFv2::")
                || resource["Properties"]["TemplateURL"] == "edge-waf.yaml"
        })
        .map(|(id, _)| id.as_str())
        .collect()
}

/// Whether `value` names resource `id`: `Ref`, `Fn::GetAtt`, a `${…}` of `Fn::Sub`, `DependsOn`.
fn names(value: &Value, id: &str) -> bool {
    match value {
        Value::Object(map) => map.iter().any(|(key, inner)| match (key.as_str(), inner) {
            ("Ref", Value::String(target)) => target == id,
            ("Fn::GetAtt", Value::Array(parts)) => parts.first() == Some(&json!(id)),
            ("Fn::Sub", _) => {
                let text = match inner {
                    Value::Array(parts) => parts[0].as_str(),
                    other => other.as_str(),
                }
                .unwrap_or_default();
                text.contains(&format!("${{{id}}}"))
                    || text.contains(&format!("${{{id}."))
                    || names(inner, id)
            }
            ("DependsOn", Value::String(target)) => target == id,
            _ => names(inner, id),
        }),
        Value::Array(items) => items.iter().any(|item| names(item, id)),
        _ => false,
    }
}

#[test]
fn the_edge_is_made_only_where_its_web_acl_can_be_and_none_of_it_when_it_is_off() {
    let template = Template::load();
    let edge = edge_resources(&template);
    assert_eq!(
        edge,
        ["EdgeDistribution", "EdgeWebAcl", "ProductReadCachePolicy"].into()
    );
    let outputs = template.0["Outputs"].as_object().expect("Outputs");
    let made = |deploy: &Deploy| -> BTreeSet<&str> {
        assert!(
            deploy.accepted(),
            "the rules refuse {:?}",
            deploy.parameters
        );
        edge.iter()
            .copied()
            .filter(|id| deploy.makes(template.resource(id)))
            .chain(
                outputs
                    .iter()
                    .filter(|(_, output)| edge.iter().any(|id| names(&output["Value"], id)))
                    .filter(|(_, output)| deploy.makes(output))
                    .map(|(name, _)| name.as_str()),
            )
            .collect()
    };
    let arn = "arn:aws:wafv2:us-east-1:123456789012:global/webacl/edge/1";
    let everything: BTreeSet<&str> = edge.iter().copied().chain(["EdgeUrl"]).collect();

    assert_eq!(made(&Deploy::new(&template, "us-east-1", &[])), everything);
    for region in ["us-east-1", "eu-west-1"] {
        assert_eq!(
            made(&Deploy::new(&template, region, &[("EdgeEnabled", "false")])),
            BTreeSet::new(),
            "EdgeEnabled=false in {region}"
        );
        assert_eq!(
            made(&Deploy::new(&template, region, &[("EdgeWebAclArn", arn)])),
            ["EdgeDistribution", "EdgeUrl", "ProductReadCachePolicy"].into(),
            "a web ACL of the operator's in {region}: none of the stack's own"
        );
    }
    assert!(
        !Deploy::new(&template, "eu-west-1", &[]).accepted(),
        "outside us-east-1 the edge needs EdgeWebAclArn"
    );

    // Nothing else depends on the edge, so turning it off leaves the rest of the stack whole.
    for (id, resource) in template.resources() {
        if !edge.contains(id.as_str()) {
            for target in &edge {
                assert!(!names(resource, target), "{id} names {target}");
            }
        }
    }
}
