//! `template.yaml` against the code it deploys: one function resource per crate under
//! `functions/` and none without one, every route of the contract exactly once and to its own
//! function (and every other request to `unmatched-route`), every variable each function's configuration needs, no write action on every
//! resource, the payment queue consistent with its consumer, a dashboard and alarms that name
//! only metrics the functions emit, (in `admission`) the waiting room's admission token keys lent
//! only to the functions that use them, and (in `edge`) the CloudFront and WAF edge in front of
//! it all.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use shared::metrics;
use shared::routes::ROUTES;

/// The waiting room's admission token keys: generated, and lent to the functions that use them.
mod admission;
/// The CloudFront distribution and the WAF web ACL in front of the HTTP API.
mod deploy;
mod edge;
mod reads;

/// The variables each function needs set in AWS, by crate: those its `Deps::from_env` reads
/// through `Config` (shared/src/config.rs) without a usable default there. THE one list to keep in
/// step with `Config` and the template.
///
/// `DATABASE` is how a deployed function connects: `Config` reads these instead of `DATABASE_URL`
/// when `DATABASE_SECRET_ARN` is set (the secret `{"username","password"}`, read at cold start; the
/// RDS Proxy endpoint; the schema). A function that never connects gets none of them.
const DATABASE: &[&str] = &[
    "DATABASE_SECRET_ARN",
    "DATABASE_HOST",
    "DATABASE_NAME",
    "DATABASE_SESSION_SETUP",
];
/// The keys admission tokens are signed and verified with (`admission`).
const ADMISSION_TOKEN_SECRET: &str = "ADMISSION_TOKEN_SECRET";
/// (crate, connects to the database, its other variables)
const REQUIRED_ENV: &[(&str, bool, &[&str])] = &[
    ("get-product", true, &["PRODUCT_READ_MAX_AGE_MS"]),
    ("create-product", true, &["ADMIN_TOKEN"]),
    // Verifies a hold's Admission-Token on a product with a waiting room.
    (
        "create-hold",
        true,
        &[
            "HOLD_SCHEDULE_GROUP",
            "SCHEDULER_ROLE_ARN",
            "HOLD_EXPIRY_FUNCTION_ARN",
            ADMISSION_TOKEN_SECRET,
        ],
    ),
    ("get-hold", true, &[]),
    ("release-hold", true, &["EVENT_BUS_NAME"]),
    ("update-product", true, &["ADMIN_TOKEN"]),
    (
        "create-order",
        true,
        &[
            "HOLD_SCHEDULE_GROUP",
            "SCHEDULER_ROLE_ARN",
            "HOLD_EXPIRY_FUNCTION_ARN",
            "ORDER_EXPIRY_FUNCTION_ARN",
            "EVENT_BUS_NAME",
        ],
    ),
    ("get-order", true, &[]),
    // The waiting room: an entry carries its admission token once admitted, so joining and
    // reading one sign; the summary is public, cacheable like a product read.
    ("join-queue", true, &[ADMISSION_TOKEN_SECRET]),
    ("get-queue-entry", true, &[ADMISSION_TOKEN_SECRET]),
    ("get-queue-summary", true, &["PRODUCT_READ_MAX_AGE_MS"]),
    // Queues to SQS; it would connect only without WEBHOOK_QUEUE_URL.
    (
        "payment-webhook",
        false,
        &["WEBHOOK_SECRET", "WEBHOOK_QUEUE_URL"],
    ),
    // PAYMENT_MAX_ATTEMPTS has a default, but it must equal the queue's maxReceiveCount.
    (
        "payment-processor",
        true,
        &["EVENT_BUS_NAME", "PAYMENT_MAX_ATTEMPTS"],
    ),
    ("hold-expiry", true, &["EVENT_BUS_NAME"]),
    ("order-expiry", true, &["EVENT_BUS_NAME"]),
    ("sweeper", true, &["EVENT_BUS_NAME"]),
    ("reconcile", true, &[]),
    // The master user's secret as DATABASE_SECRET_ARN, and the application user's to provision
    // (read by the migrate crate itself, not Config: no other function may see it).
    ("migrate", true, &["APP_DATABASE_SECRET_ARN"]),
    // Answers from the route table alone.
    ("unmatched-route", false, &[]),
];
/// Every other name the template may set: `Config`'s optional tunables and the log filter. A name
/// outside these and the lists above is a typo the code would silently ignore.
const OPTIONAL_ENV: &[&str] = &[
    "DATABASE_PORT",
    "DATABASE_SSL_MODE",
    "HOLD_TTL_SECONDS",
    "MAX_HOLD_QTY",
    "ORDER_PAYMENT_TTL_SECONDS",
    "PAYMENT_GRACE_SECONDS",
    "WEBHOOK_TOLERANCE_SECONDS",
    "PAYMENT_RETRY_BASE_MS",
    "DATABASE_MAX_CONNECTIONS",
    "RUST_LOG",
];

struct Template(Value);

impl Template {
    fn load() -> Self {
        Self::load_file("template.yaml")
    }

    /// A template at the workspace root.
    fn load_file(name: &str) -> Self {
        let path = format!("{}/../../{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{name} at the workspace root"));
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("valid YAML");
        Self(long_form(yaml))
    }

    fn resources(&self) -> &Map<String, Value> {
        self.0["Resources"].as_object().expect("Resources")
    }

    fn resource(&self, logical_id: &str) -> &Value {
        self.resources()
            .get(logical_id)
            .unwrap_or_else(|| panic!("no resource {logical_id}"))
    }

    fn of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.resources()
            .iter()
            .filter(move |(_, resource)| resource["Type"] == kind)
    }

    /// Function resources by the crate their CodeUri names: crate → logical id.
    fn functions(&self) -> BTreeMap<String, String> {
        let mut functions = BTreeMap::new();
        for (id, function) in self.of_type("AWS::Serverless::Function") {
            let code_uri = function["Properties"]["CodeUri"]
                .as_str()
                .unwrap_or_else(|| panic!("{id} has no CodeUri"));
            let name = code_uri
                .strip_prefix("functions/")
                .unwrap_or_else(|| panic!("{id}'s CodeUri {code_uri} is not under functions/"));
            let previous = functions.insert(name.to_owned(), id.clone());
            assert!(previous.is_none(), "two resources build {code_uri}");
        }
        functions
    }

    fn function_id(&self, name: &str) -> String {
        self.functions()
            .remove(name)
            .unwrap_or_else(|| panic!("no function resource for {name}"))
    }

    /// A function's environment: the Globals' variables, overridden by its own.
    fn env(&self, logical_id: &str) -> Map<String, Value> {
        let mut env = self.0["Globals"]["Function"]["Environment"]["Variables"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        if let Some(own) =
            self.resource(logical_id)["Properties"]["Environment"]["Variables"].as_object()
        {
            env.extend(own.clone());
        }
        env
    }
}

/// YAML's short tags in CloudFormation's long form: `!Ref X` → `{"Ref": "X"}`, `!GetAtt A.B` →
/// `{"Fn::GetAtt": ["A", "B"]}`, `!Condition C` → `{"Condition": "C"}`, `!Sub …` → `{"Fn::Sub": …}`.
fn long_form(yaml: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Yaml;
    match yaml {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => n
            .as_i64()
            .map(Value::from)
            .or_else(|| n.as_u64().map(Value::from))
            .or_else(|| n.as_f64().map(Value::from))
            .unwrap_or(Value::Null),
        Yaml::String(s) => Value::String(s),
        Yaml::Sequence(items) => Value::Array(items.into_iter().map(long_form).collect()),
        Yaml::Mapping(mapping) => Value::Object(
            mapping
                .into_iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(s) => s,
                        other => serde_yaml_ng::to_string(&other)
                            .expect("a key")
                            .trim()
                            .to_owned(),
                    };
                    (key, long_form(value))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let value = long_form(tagged.value);
            match (name, value) {
                ("GetAtt", Value::String(target)) => {
                    let (resource, attribute) =
                        target.split_once('.').expect("!GetAtt Resource.Attribute");
                    json!({"Fn::GetAtt": [resource, attribute]})
                }
                ("Ref" | "Condition", value) => json!({ name: value }),
                (_, value) => json!({ format!("Fn::{name}"): value }),
            }
        }
    }
}

/// `{"Ref": "X"}` → `X`.
fn reference(value: &Value) -> Option<&str> {
    value.get("Ref").and_then(Value::as_str)
}

fn string_or_list(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

/// Both branches of an `Fn::If`, without the `AWS::NoValue` ones.
fn branches(value: &Value) -> Vec<&Value> {
    match value.get("Fn::If").and_then(Value::as_array) {
        Some(parts) if parts.len() == 3 => parts[1..].iter().flat_map(branches).collect(),
        _ if reference(value) == Some("AWS::NoValue") => vec![],
        _ => vec![value],
    }
}

fn kebab(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn every_function_crate_has_a_resource_and_every_function_resource_a_crate() {
    let template = Template::load();
    let crates: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../functions"))
            .expect("functions/")
            .map(|entry| entry.expect("an entry").path())
            .filter(|path| path.join("Cargo.toml").is_file())
            .map(|path| {
                path.file_name()
                    .expect("a name")
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    let functions = template.functions();
    let resources: BTreeSet<String> = functions.keys().cloned().collect();
    assert_eq!(
        resources, crates,
        "function resources vs crates in functions/"
    );

    let globals = &template.0["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"], json!(["arm64"]));
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");
    assert_eq!(globals["Tracing"], "Active");
    for id in functions.values() {
        let function = template.resource(id);
        assert_eq!(
            function["Metadata"]["BuildMethod"], "rust-cargolambda",
            "{id}"
        );
        for global in ["Runtime", "Architectures", "Handler"] {
            assert!(
                function["Properties"].get(global).is_none(),
                "{id} overrides the Globals' {global}"
            );
        }
    }
}

#[test]
fn every_route_of_the_contract_is_served_once_by_its_own_function() {
    let template = Template::load();
    let apis: Vec<&String> = template
        .of_type("AWS::Serverless::HttpApi")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(apis, ["HttpApi"], "one HTTP API");
    // The routes come from the functions' events; the document only marks `/$default` as the
    // catch-all with API Gateway's `isDefaultRoute` extension.
    let paths = template.resource("HttpApi")["Properties"]["DefinitionBody"]["paths"]
        .as_object()
        .expect("the HTTP API's OpenAPI paths");
    assert_eq!(paths.keys().collect::<Vec<_>>(), ["/$default"]);
    assert_eq!(
        paths["/$default"]["x-amazon-apigateway-any-method"]["isDefaultRoute"], true,
        "/$default is the $default route"
    );

    let mut served = Vec::new();
    for (name, id) in template.functions() {
        let events = template.resource(&id)["Properties"]["Events"].as_object();
        for (event_name, event) in events.into_iter().flatten() {
            assert_ne!(event["Type"], "Api", "{id}.{event_name}: a REST API event");
            if event["Type"] == "HttpApi" {
                let properties = &event["Properties"];
                assert_eq!(
                    reference(&properties["ApiId"]),
                    Some("HttpApi"),
                    "{id}.{event_name} must name the one HTTP API (else SAM makes another)"
                );
                served.push((
                    properties["Method"]
                        .as_str()
                        .expect("a method")
                        .to_uppercase(),
                    properties["Path"].as_str().expect("a path").to_owned(),
                    name.clone(),
                ));
            }
        }
    }
    served.sort();
    let mut contract: Vec<(String, String, String)> = ROUTES
        .iter()
        .map(|(method, path, route)| {
            (
                method.as_str().to_owned(),
                (*path).to_owned(),
                kebab(&format!("{route:?}")),
            )
        })
        .chain([(
            "ANY".to_owned(),
            "/$default".to_owned(),
            "unmatched-route".to_owned(),
        )])
        .collect();
    contract.sort();
    assert_eq!(
        served, contract,
        "(method, path, function) of every route, and the $default route for the rest"
    );
}

#[test]
fn every_function_gets_the_variables_its_configuration_needs() {
    let template = Template::load();
    let functions = template.functions();
    let listed: BTreeSet<&str> = REQUIRED_ENV.iter().map(|(name, _, _)| *name).collect();
    let crates: BTreeSet<&str> = functions.keys().map(String::as_str).collect();
    assert_eq!(listed, crates, "REQUIRED_ENV must list every function");

    let known: BTreeSet<&str> = REQUIRED_ENV
        .iter()
        .flat_map(|(_, _, vars)| vars.iter().copied())
        .chain(DATABASE.iter().copied())
        .chain(OPTIONAL_ENV.iter().copied())
        .collect();
    for (name, connects, vars) in REQUIRED_ENV {
        let id = &functions[*name];
        let env = template.env(id);
        let database: &[&str] = if *connects { DATABASE } else { &[] };
        for var in database.iter().chain(vars.iter()) {
            let value = env
                .get(*var)
                .unwrap_or_else(|| panic!("{name} ({id}) does not set {var}"));
            assert!(
                !matches!(value, Value::Null) && value != "",
                "{name} sets {var} to nothing"
            );
        }
        if !connects {
            for var in DATABASE {
                assert!(
                    !env.contains_key(*var),
                    "{name} never connects, yet gets {var}"
                );
            }
        }
        for var in env.keys() {
            assert!(
                known.contains(var.as_str()),
                "{name} sets {var}, which Config does not read"
            );
        }
        assert!(
            !env.contains_key("DATABASE_URL"),
            "{name}: the connection comes from the secret, never a URL"
        );

        let reads_secret = template.resource(id)["Properties"]["Policies"]
            .as_array()
            .is_some_and(|policies| {
                policies
                    .iter()
                    .any(|policy| reference(policy) == Some("DatabaseSecretReadPolicy"))
            });
        assert_eq!(
            reads_secret, *connects,
            "{name} may read the database secret if and only if it connects"
        );
    }
}

/// Every statement of every policy the template writes (trust policies aside).
fn statements(template: &Template) -> Vec<(String, &Value)> {
    let mut found = Vec::new();
    let mut documents: Vec<(String, &Value)> = Vec::new();
    for (id, resource) in template.resources() {
        let properties = &resource["Properties"];
        match resource["Type"].as_str() {
            Some("AWS::Serverless::Function") => {
                for policy in properties["Policies"].as_array().into_iter().flatten() {
                    if policy.get("Statement").is_some() {
                        documents.push((id.clone(), policy));
                    }
                }
            }
            Some("AWS::IAM::Role") => {
                for policy in properties["Policies"].as_array().into_iter().flatten() {
                    documents.push((id.clone(), &policy["PolicyDocument"]));
                }
            }
            Some("AWS::IAM::ManagedPolicy" | "AWS::IAM::Policy") => {
                documents.push((id.clone(), &properties["PolicyDocument"]));
            }
            _ => {}
        }
    }
    for (id, document) in documents {
        for statement in string_or_list(&document["Statement"]) {
            for statement in branches(statement) {
                found.push((id.clone(), statement));
            }
        }
    }
    found
}

fn is_read_only(action: &str) -> bool {
    let Some((_, name)) = action.split_once(':') else {
        return false;
    };
    !name.contains('*')
        && ["Get", "List", "Describe", "BatchGet"]
            .iter()
            .any(|verb| name.starts_with(verb))
}

#[test]
fn no_iam_statement_grants_a_write_action_on_every_resource() {
    let template = Template::load();
    let statements = statements(&template);
    assert!(
        statements.len() >= 10,
        "found {} statements",
        statements.len()
    );
    for (id, statement) in statements {
        assert!(
            statement.get("NotAction").is_none() && statement.get("NotResource").is_none(),
            "{id}: NotAction/NotResource grant more than they say"
        );
        let resources: Vec<&Value> = string_or_list(&statement["Resource"])
            .into_iter()
            .flat_map(branches)
            .collect();
        assert!(!resources.is_empty(), "{id}: a statement without Resource");
        if resources.iter().any(|resource| *resource == "*") {
            for action in string_or_list(&statement["Action"]) {
                let action = action.as_str().unwrap_or_default();
                assert!(is_read_only(action), "{id}: {action} on Resource \"*\"");
            }
        }
    }
}

#[test]
fn schedules_are_created_in_the_group_and_fired_at_the_expiry_functions_only() {
    let template = Template::load();
    let role = &template.resource("SchedulerRole")["Properties"];
    let trust = &role["AssumeRolePolicyDocument"]["Statement"][0];
    assert_eq!(trust["Principal"]["Service"], "scheduler.amazonaws.com");
    let invoke = &role["Policies"][0]["PolicyDocument"]["Statement"];
    assert_eq!(
        invoke,
        &json!([{
            "Effect": "Allow",
            "Action": "lambda:InvokeFunction",
            "Resource": [
                {"Fn::GetAtt": ["HoldExpiryFunction", "Arn"]},
                {"Fn::GetAtt": ["OrderExpiryFunction", "Arn"]},
            ],
        }])
    );

    let group_schedules = json!({"Fn::Sub":
        "arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}:schedule/${DeadlineScheduleGroup}/*"});
    let mut schedulers = BTreeSet::new();
    for (id, statement) in statements(&template) {
        for action in string_or_list(&statement["Action"]) {
            let action = action.as_str().unwrap_or_default();
            if action.starts_with("scheduler:") {
                assert_eq!(statement["Resource"], group_schedules, "{id}: {action}");
                schedulers.insert(id.clone());
            }
            if action == "iam:PassRole" {
                assert_eq!(
                    statement["Resource"],
                    json!({"Fn::GetAtt": ["SchedulerRole", "Arn"]}),
                    "{id}"
                );
                assert_eq!(
                    statement["Condition"]["StringEquals"]["iam:PassedToService"],
                    "scheduler.amazonaws.com"
                );
            }
        }
    }
    let expected: BTreeSet<String> = ["create-hold", "create-order"]
        .iter()
        .map(|name| template.function_id(name))
        .collect();
    assert_eq!(schedulers, expected, "who may create schedules");
}

#[test]
fn the_payment_queue_fits_its_consumer() {
    let template = Template::load();
    let queue = &template.resource("WebhookQueue")["Properties"];
    let dead_letters = &template.resource("WebhookDeadLetterQueue")["Properties"];
    assert_eq!(queue["FifoQueue"], true);
    assert_eq!(
        dead_letters["FifoQueue"], true,
        "a FIFO queue's DLQ is FIFO"
    );
    let redrive = &queue["RedrivePolicy"];
    assert_eq!(
        redrive["deadLetterTargetArn"],
        json!({"Fn::GetAtt": ["WebhookDeadLetterQueue", "Arn"]})
    );
    assert_eq!(
        reference(&redrive["maxReceiveCount"]),
        Some("MaxReceiveCount")
    );

    let processor = template.function_id("payment-processor");
    assert_eq!(
        reference(&template.env(&processor)["PAYMENT_MAX_ATTEMPTS"]),
        Some("MaxReceiveCount"),
        "the processor counts deliveries against the queue's maxReceiveCount"
    );
    let timeout = template.resource(&processor)["Properties"]["Timeout"]
        .as_u64()
        .or_else(|| template.0["Globals"]["Function"]["Timeout"].as_u64())
        .expect("a timeout");
    let visibility = queue["VisibilityTimeout"]
        .as_u64()
        .expect("a visibility timeout");
    assert!(
        visibility >= 6 * timeout,
        "visibility timeout {visibility} s < 6 × the processor's {timeout} s"
    );

    let mappings: Vec<&Value> = template
        .of_type("AWS::Lambda::EventSourceMapping")
        .map(|(_, mapping)| &mapping["Properties"])
        .filter(|mapping| reference(&mapping["FunctionName"]) == Some(processor.as_str()))
        .collect();
    assert_eq!(mappings.len(), 1, "one event source for the processor");
    assert_eq!(
        mappings[0]["EventSourceArn"],
        json!({"Fn::GetAtt": ["WebhookQueue", "Arn"]})
    );
    assert_eq!(
        mappings[0]["FunctionResponseTypes"],
        json!(["ReportBatchItemFailures"])
    );

    let webhook = template.function_id("payment-webhook");
    assert_eq!(
        reference(&template.env(&webhook)["WEBHOOK_QUEUE_URL"]),
        Some("WebhookQueue")
    );
}

/// Each `["namespace", "metric", dimension, value, …, {options}]` line of the dashboard.
fn dashboard_lines(template: &Template) -> (Vec<Vec<Value>>, String) {
    let sub = &template.resource("Dashboard")["Properties"]["DashboardBody"]["Fn::Sub"];
    let body = match sub {
        Value::Array(parts) => parts[0].as_str(),
        other => other.as_str(),
    }
    .expect("a DashboardBody in Fn::Sub")
    .to_owned();
    let dashboard: Value = serde_json::from_str(&body).expect("the dashboard body is JSON");
    let lines = dashboard["widgets"]
        .as_array()
        .expect("widgets")
        .iter()
        .flat_map(|widget| widget["properties"]["metrics"].as_array().cloned())
        .flatten()
        .map(|line| line.as_array().expect("a metric line").clone())
        .collect();
    (lines, body)
}

#[test]
fn the_dashboard_and_alarms_use_only_metrics_the_functions_emit() {
    let template = Template::load();
    let (lines, body) = dashboard_lines(&template);
    let emitted: BTreeSet<&str> = metrics::ALL.iter().copied().collect();

    let on_dashboard: BTreeSet<&str> = lines
        .iter()
        .filter(|line| line[0] == metrics::NAMESPACE)
        .map(|line| line[1].as_str().expect("a metric name"))
        .collect();
    assert_eq!(
        on_dashboard, emitted,
        "the dashboard shows every metric, and only those"
    );
    for line in lines.iter().filter(|line| line[0] == metrics::NAMESPACE) {
        assert_eq!(
            line[2], "Function",
            "EMF lines carry the Function dimension: {line:?}"
        );
    }

    let mut latency_routes: Vec<(String, String)> = lines
        .iter()
        .filter(|line| line[0] == "AWS/ApiGateway" && line[1] == "Latency")
        .map(|line| {
            let dimension = |name: &str| {
                let at = line.iter().position(|part| part == name).expect(name);
                line[at + 1].as_str().expect("a value").to_owned()
            };
            (dimension("Method"), dimension("Resource"))
        })
        .collect();
    latency_routes.sort();
    let mut contract: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(method, path, _)| (method.as_str().to_owned(), (*path).to_owned()))
        .collect();
    contract.sort();
    assert_eq!(latency_routes, contract, "a latency line per route");

    // Every ${Name} or ${Name.Attribute} names a resource, a pseudo parameter or a Sub variable.
    let variables = &template.resource("Dashboard")["Properties"]["DashboardBody"]["Fn::Sub"][1];
    for placeholder in body.split("${").skip(1) {
        let name = placeholder.split('}').next().expect("a closing brace");
        let resource = name.split('.').next().expect("a name");
        assert!(
            name.starts_with("AWS::")
                || template.resources().contains_key(resource)
                || variables.get(name).is_some(),
            "the dashboard names ${{{name}}}, which does not exist"
        );
    }

    let mut alarmed = BTreeSet::new();
    for (id, alarm) in template.of_type("AWS::CloudWatch::Alarm") {
        let properties = &alarm["Properties"];
        let mut watched = vec![properties.clone()];
        for query in properties["Metrics"].as_array().into_iter().flatten() {
            watched.push(query["MetricStat"]["Metric"].clone());
        }
        for metric in watched
            .iter()
            .filter(|metric| metric["MetricName"].is_string())
        {
            let name = metric["MetricName"].as_str().expect("a name");
            if metric["Namespace"] == metrics::NAMESPACE {
                assert!(
                    emitted.contains(name),
                    "{id} watches {name}, which nothing emits"
                );
            }
            alarmed.insert(name.to_owned());
        }
        for actions in ["AlarmActions", "OKActions"] {
            assert_eq!(
                properties[actions],
                json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}),
                "{id} notifies the AlarmTopicArn topic"
            );
        }
    }
    for needed in [
        "ApproximateNumberOfMessagesVisible",
        metrics::STOCK_DRIFT,
        metrics::SWEEP_PRODUCT_FAILURES,
        "5xx",
        "Throttles",
    ] {
        assert!(alarmed.contains(needed), "no alarm watches {needed}");
    }
}

#[test]
fn the_outputs_tell_operators_where_everything_is() {
    let template = Template::load();
    let outputs = template.0["Outputs"].as_object().expect("Outputs");
    for output in [
        "EdgeUrl",
        "ApiUrl",
        "PaymentWebhookUrl",
        "WebhookQueueUrl",
        "WebhookDeadLetterQueueUrl",
        "EventBusName",
        "DeadlineScheduleGroupName",
        "DashboardUrl",
    ] {
        assert!(outputs.contains_key(output), "no output {output}");
    }
}

/// A sweep drains the outbox for up to `REPUBLISH_BUDGET` and also settles deadlines, delivers
/// payment events and reconciles: the sweeper's timeout leaves room for all of it.
#[test]
fn the_sweeper_outlasts_its_outbox_budget() {
    let template = Template::load();
    let sweeper = template.function_id("sweeper");
    let timeout = template.resource(&sweeper)["Properties"]["Timeout"]
        .as_u64()
        .or_else(|| template.0["Globals"]["Function"]["Timeout"].as_u64())
        .expect("a timeout");
    let budget = shared::service::outbox::REPUBLISH_BUDGET;
    assert!(
        std::time::Duration::from_secs(timeout) >= 2 * budget,
        "the sweeper's {timeout} s timeout < 2 × the outbox budget of {budget:?}"
    );
}

/// The buyer is the `sub` of a JWT the HTTP API's authorizer verified: exactly the buyer routes
/// are behind it (a route left out would let anyone in as no one; an extra one would lock out
/// the provider or the admin), and it takes its issuer and audience from the parameters.
#[test]
fn the_jwt_authorizer_guards_exactly_the_buyer_routes() {
    let template = Template::load();
    let authorizers = &template.resource("HttpApi")["Properties"]["Auth"]["Authorizers"];
    let jwt = &authorizers["BuyerJwt"];
    assert_eq!(jwt["IdentitySource"], "$request.header.Authorization");
    assert_eq!(
        reference(&jwt["JwtConfiguration"]["issuer"]),
        Some("BuyerJwtIssuer")
    );
    assert_eq!(
        jwt["JwtConfiguration"]["audience"]
            .as_array()
            .map(|audiences| audiences.iter().filter_map(reference).collect::<Vec<_>>()),
        Some(vec!["BuyerJwtAudience"])
    );
    let mut guarded = BTreeSet::new();
    for (_, id) in template.functions() {
        let events = template.resource(&id)["Properties"]["Events"].as_object();
        for (_, event) in events.into_iter().flatten() {
            let properties = &event["Properties"];
            if event["Type"] == "HttpApi" && properties["Auth"]["Authorizer"] == "BuyerJwt" {
                guarded.insert((
                    properties["Method"]
                        .as_str()
                        .expect("a method")
                        .to_uppercase(),
                    properties["Path"].as_str().expect("a path").to_owned(),
                ));
            }
        }
    }
    let buyer_routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|(_, _, route)| route.is_buyer_route())
        .map(|(method, path, _)| (method.as_str().to_owned(), (*path).to_owned()))
        .collect();
    assert_eq!(guarded, buyer_routes);
}

#[test]
fn the_proxy_sets_up_every_session_so_the_functions_send_no_set() {
    let template = Template::load();
    let pool = &template.resource("DatabaseProxyTargetGroup")["Properties"]["ConnectionPoolConfigurationInfo"];
    assert_eq!(
        pool["InitQuery"],
        shared::store::session::Server::MySql.session_init(),
        "the proxy's InitQuery is the session the local server and the tests run with"
    );
    for (name, id) in template.functions() {
        let env = template.env(&id);
        if let Some(setup) = env.get("DATABASE_SESSION_SETUP") {
            assert_eq!(setup, "proxy", "{name} connects through the proxy");
        }
    }
}

/// Least privilege: every function but migrate logs in as the application user (the stack's
/// AppDatabaseSecret, or an existing database's ExistingDatabaseAppSecretArn, or failing that
/// ExistingDatabaseSecretArn as before), none but migrate may read the master secret, the proxy
/// accepts both users, and the application user's secret is generated and rotated.
#[test]
fn the_functions_log_in_as_the_application_user_and_only_migrate_as_the_master() {
    let template = Template::load();
    let app_secret = json!({"Fn::If": ["CreateDatabase", {"Ref": "AppDatabaseSecret"},
        {"Fn::If": ["HasExistingAppSecret", {"Ref": "ExistingDatabaseAppSecretArn"},
            {"Ref": "ExistingDatabaseSecretArn"}]}]});
    let master_secret = json!({"Fn::If": ["CreateDatabase",
        {"Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]},
        {"Ref": "ExistingDatabaseSecretArn"}]});
    let master = json!({"Fn::GetAtt": ["DatabaseCluster", "MasterUserSecret.SecretArn"]});
    let mentions = |value: &Value, needle: &Value| {
        fn walk(value: &Value, needle: &Value) -> bool {
            value == needle
                || match value {
                    Value::Array(items) => items.iter().any(|item| walk(item, needle)),
                    Value::Object(map) => map.values().any(|item| walk(item, needle)),
                    _ => false,
                }
        }
        walk(value, needle)
    };
    for (name, connects, _) in REQUIRED_ENV.iter().filter(|(_, connects, _)| *connects) {
        let id = template.function_id(name);
        let env = template.env(&id);
        let policies = &template.resource(&id)["Properties"]["Policies"];
        if *name == "migrate" {
            assert_eq!(
                env["DATABASE_SECRET_ARN"], master_secret,
                "migrate logs in as the master"
            );
            assert_eq!(
                env["APP_DATABASE_SECRET_ARN"],
                json!({"Fn::If": ["CreateDatabase", {"Ref": "AppDatabaseSecret"},
                    {"Fn::If": ["HasExistingAppSecret", {"Ref": "ExistingDatabaseAppSecretArn"},
                        {"Ref": "AWS::NoValue"}]}]}),
                "migrate provisions the application user"
            );
            assert!(
                mentions(policies, &master),
                "migrate may read the master secret"
            );
        } else {
            assert!(*connects);
            assert_eq!(
                env["DATABASE_SECRET_ARN"], app_secret,
                "{name} logs in as the application user"
            );
            assert!(!env.contains_key("APP_DATABASE_SECRET_ARN"), "{name}");
            assert!(
                !mentions(policies, &master),
                "{name} may not read the master secret"
            );
        }
    }
    let shared_policy = &template.resource("DatabaseSecretReadPolicy")["Properties"];
    assert!(
        !mentions(shared_policy, &master),
        "the policy every function has reads the application user's secret, not the master's"
    );
    assert!(mentions(
        shared_policy,
        &json!({"Ref": "AppDatabaseSecret"})
    ));

    let proxy = &template.resource("DatabaseProxy")["Properties"];
    let auth: Vec<&Value> = proxy["Auth"]
        .as_array()
        .expect("the proxy's Auth")
        .iter()
        .map(|auth| &auth["SecretArn"])
        .collect();
    assert_eq!(auth, [&master, &json!({"Ref": "AppDatabaseSecret"})]);
    let proxy_role = &template.resource("DatabaseProxyRole")["Properties"]["Policies"];
    assert!(
        mentions(proxy_role, &master) && mentions(proxy_role, &json!({"Ref": "AppDatabaseSecret"}))
    );

    let secret = &template.resource("AppDatabaseSecret");
    assert_eq!(secret["Type"], "AWS::SecretsManager::Secret");
    let generated = &secret["Properties"]["GenerateSecretString"];
    assert_eq!(generated["GenerateStringKey"], "password");
    let shape: Value = serde_json::from_str(
        generated["SecretStringTemplate"]
            .as_str()
            .expect("a secret template"),
    )
    .expect("JSON");
    let username = shape["username"]
        .as_str()
        .expect("the username in the secret");
    assert!(
        username.len() <= 32
            && username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "{username}: MySQL 8 takes 32 characters; migrate takes letters, digits and _"
    );

    let transforms = template.0["Transform"]
        .as_array()
        .expect("a list of transforms");
    assert!(transforms.contains(&json!("AWS::SecretsManager-2024-09-16")));
    let rotations: Vec<&Value> = template
        .of_type("AWS::SecretsManager::RotationSchedule")
        .map(|(_, rotation)| rotation)
        .collect();
    assert_eq!(rotations.len(), 1, "one rotation schedule");
    let rotation = rotations[0];
    assert_eq!(
        rotation["Properties"]["SecretId"],
        json!({"Ref": "AppDatabaseSecret"})
    );
    assert!(
        rotation["DependsOn"]
            .as_array()
            .is_some_and(|after| after.contains(&json!("DatabaseMigrations"))),
        "rotates only once migrate has created the user"
    );
    let hosted = &rotation["Properties"]["HostedRotationLambda"];
    assert_eq!(hosted["RotationType"], "MySQLSingleUser");
    assert!(hosted["VpcSubnetIds"].is_object() && hosted["VpcSecurityGroupIds"].is_object());
    for generator in [generated, hosted] {
        let excluded = generator["ExcludeCharacters"]
            .as_str()
            .expect("ExcludeCharacters");
        for quote in ['\'', '"', '\\'] {
            assert!(
                excluded.contains(quote),
                "passwords may hold {quote}: {excluded}"
            );
        }
    }
    assert!(rotation["Properties"]["RotationRules"]["ScheduleExpression"].is_string());
}
