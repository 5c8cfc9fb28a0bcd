//! Every limit the plan checks and its value: AWS's published default for the region (each cited
//! where it is defined), the stack's own setting (`template.yaml`), or Aurora's by the writer's
//! size.

use shared::store::products::MAX_STOCK_BUCKETS;

/// What a limit is and how it is raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Raise {
    /// An adjustable quota: a request in Service Quotas, under this name.
    ServiceQuotas,
    /// Not in Service Quotas: a case with AWS Support.
    Support,
    /// The stack's own setting: `sam deploy --parameter-overrides NAME=…`.
    Parameter(&'static str),
    /// A larger DB instance class.
    Resize,
    /// Cannot be raised: the sale must stay under it.
    Fixed,
}

/// Every limit the plan checks: its `--quota` key, its name (as in Service Quotas for AWS's),
/// and how it is raised.
#[rustfmt::skip]
pub const LIMITS: [(&str, &str, Raise); 20] = [
    ("lambda-concurrency", "Lambda: Concurrent executions", Raise::ServiceQuotas),
    ("lambda-scaling", "Lambda: concurrency scaling rate per function per 10 s", Raise::Fixed),
    ("api-rps", "API Gateway: Throttle rate", Raise::ServiceQuotas),
    ("api-burst", "API Gateway: Throttle burst rate", Raise::Fixed),
    ("api-route-rps", "ApiThrottlingRateLimit (per route)", Raise::Parameter("ApiThrottlingRateLimit")),
    ("cloudfront-rps", "CloudFront: Requests per second per distribution", Raise::ServiceQuotas),
    ("create-schedule-tps", "EventBridge Scheduler: CreateSchedule request rate", Raise::ServiceQuotas),
    ("delete-schedule-tps", "EventBridge Scheduler: DeleteSchedule request rate", Raise::ServiceQuotas),
    ("scheduler-invocations-tps", "EventBridge Scheduler: Invocations throttle limit", Raise::ServiceQuotas),
    ("schedules", "EventBridge Scheduler: Number of schedules", Raise::ServiceQuotas),
    ("sqs-fifo-tps", "SQS: FIFO high throughput, SendMessage per second", Raise::Support),
    ("put-events-tps", "EventBridge: PutEvents throttle limit in transactions per second", Raise::ServiceQuotas),
    ("secrets-tps", "Secrets Manager: Combined rate of DescribeSecret and GetSecretValue API requests", Raise::Fixed),
    ("processor-max-concurrency", "ProcessorMaxConcurrency", Raise::Parameter("ProcessorMaxConcurrency")),
    ("max-connections", "Aurora: max_connections", Raise::Parameter("DatabaseMaxCapacity")),
    ("proxy-max-connections-percent", "RDS Proxy: MaxConnectionsPercent", Raise::Fixed),
    ("database-max-acu", "DatabaseMaxCapacity (ACUs)", Raise::Parameter("DatabaseMaxCapacity")),
    ("serverless-max-acu", "Aurora Serverless v2: maximum ACUs per instance", Raise::Fixed),
    ("instance-vcpus", "the writer's vCPUs", Raise::Resize),
    ("stock-buckets", "stock_buckets per product (MAX_STOCK_BUCKETS)", Raise::Fixed),
];
pub(super) const LAMBDA_CONCURRENCY: usize = 0;
pub(super) const LAMBDA_SCALING: usize = 1;
pub(super) const API_RPS: usize = 2;
pub(super) const API_BURST: usize = 3;
pub(super) const API_ROUTE_RPS: usize = 4;
pub(super) const CLOUDFRONT_RPS: usize = 5;
pub(super) const CREATE_SCHEDULE_TPS: usize = 6;
pub(super) const DELETE_SCHEDULE_TPS: usize = 7;
pub(super) const SCHEDULER_INVOCATIONS_TPS: usize = 8;
pub(super) const SCHEDULES: usize = 9;
pub(super) const SQS_FIFO_TPS: usize = 10;
pub(super) const PUT_EVENTS_TPS: usize = 11;
pub(super) const SECRETS_TPS: usize = 12;
pub(super) const PROCESSOR_MAX_CONCURRENCY: usize = 13;
pub(super) const MAX_CONNECTIONS: usize = 14;
pub(super) const PROXY_MAX_CONNECTIONS_PERCENT: usize = 15;
pub(super) const DATABASE_MAX_ACU: usize = 16;
pub(super) const SERVERLESS_MAX_ACU: usize = 17;
pub(super) const INSTANCE_VCPUS: usize = 18;
pub(super) const STOCK_BUCKETS: usize = 19;

/// Regions that Scheduler's quota page lists by name; every other gets its lower default.
#[rustfmt::skip]
const SCHEDULER_REGIONS: [&str; 11] = [
    "us-east-1", "us-east-2", "us-west-2", "ap-northeast-1", "ap-south-1", "ap-southeast-1",
    "ap-southeast-2", "eu-central-1", "eu-west-1", "eu-west-2", "sa-east-1",
];
/// Regions whose API Gateway account throttle is 2,500 requests a second, burst 1,250.
#[rustfmt::skip]
const API_LOW_REGIONS: [&str; 13] = [
    "af-south-1", "eu-south-1", "ap-southeast-3", "me-central-1", "ap-south-2", "ap-southeast-4",
    "eu-south-2", "eu-central-2", "il-central-1", "ca-west-1", "ap-southeast-5", "ap-southeast-7",
    "mx-central-1",
];

/// AWS's published default of a limit in a region (`None`: derived from the database).
pub(super) fn aws_default(limit: usize, region: &str) -> Option<f64> {
    let in_list = |list: &[&str]| list.contains(&region);
    let scheduler = |primary: f64, other: f64| {
        if in_list(&SCHEDULER_REGIONS) {
            primary
        } else {
            other
        }
    };
    Some(match limit {
        // 1,000 concurrent executions per Region; new accounts may start lower.
        // https://docs.aws.amazon.com/lambda/latest/dg/lambda-concurrency.html
        LAMBDA_CONCURRENCY => 1_000.0,
        // "1,000 execution environment instances every 10 seconds", per function, not adjustable.
        // https://docs.aws.amazon.com/lambda/latest/dg/scaling-behavior.html
        LAMBDA_SCALING => 1_000.0,
        // 10,000 RPS, burst 5,000, across HTTP, REST and WebSocket APIs; 2,500 and 1,250 in the
        // regions listed. https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
        API_RPS | API_BURST => {
            let low = in_list(&API_LOW_REGIONS);
            match (limit == API_RPS, low) {
                (true, false) => 10_000.0,
                (true, true) => 2_500.0,
                (false, false) => 5_000.0,
                (false, true) => 1_250.0,
            }
        }
        // template.yaml, parameter ApiThrottlingRateLimit (per route of the HTTP API).
        API_ROUTE_RPS => 1_000.0,
        // https://docs.aws.amazon.com/AmazonCloudFront/latest/DeveloperGuide/cloudfront-limits.html
        CLOUDFRONT_RPS => 250_000.0,
        // 5,000 in the listed regions, 250 elsewhere (the page's current version; earlier ones
        // and the translations said 1,000).
        // https://docs.aws.amazon.com/scheduler/latest/UserGuide/scheduler-quotas.html
        CREATE_SCHEDULE_TPS => scheduler(5_000.0, 250.0),
        // 1,000 and 250 as the page listed them before CreateSchedule's rise: not re-verified.
        DELETE_SCHEDULE_TPS => scheduler(1_000.0, 250.0),
        // 1,000 "in primary Regions" (same page); the other regions' figure was not found, so
        // 250 is assumed, as for the other operations there.
        SCHEDULER_INVOCATIONS_TPS => scheduler(1_000.0, 250.0),
        // 10,000,000 per region (same page; earlier 1,000,000).
        SCHEDULES => 10_000_000.0,
        // High-throughput FIFO (the stack's queue: DeduplicationScope messageGroup,
        // FifoThroughputLimit perMessageGroupId): 70,000 transactions a second per API action
        // without batching in us-east-1, us-west-2 and eu-west-1; lower elsewhere, down to 2,400,
        // the figure assumed for every other region. Without it: 300, or 3,000 messages batched.
        // https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/quotas-messages.html
        SQS_FIFO_TPS if in_list(&["us-east-1", "us-west-2", "eu-west-1"]) => 70_000.0,
        SQS_FIFO_TPS => 2_400.0,
        // https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-quota.html
        PUT_EVENTS_TPS => match region {
            "us-east-1" | "us-west-2" | "eu-west-1" => 10_000.0,
            "us-east-2" | "eu-central-1" | "eu-south-2" => 2_400.0,
            "us-west-1" | "ap-northeast-1" | "ap-southeast-1" | "ap-southeast-2" | "eu-west-2" => {
                1_200.0
            }
            "ap-east-1" | "ap-northeast-2" | "ap-south-1" | "ca-central-1" | "eu-north-1"
            | "eu-west-3" | "sa-east-1" => 600.0,
            _ => 400.0,
        },
        // 10,000 a second, not adjustable.
        // https://docs.aws.amazon.com/secretsmanager/latest/userguide/reference_limits.html
        SECRETS_TPS => 10_000.0,
        // template.yaml: ProcessorMaxConcurrency, the payment queue's event source mapping.
        PROCESSOR_MAX_CONCURRENCY => 5.0,
        // template.yaml: DatabaseProxyTargetGroup's MaxConnectionsPercent.
        PROXY_MAX_CONNECTIONS_PERCENT => 90.0,
        // template.yaml: DatabaseMaxCapacity.
        DATABASE_MAX_ACU => 4.0,
        // "256 for recent Aurora versions, or 128 for older versions".
        // https://docs.aws.amazon.com/AmazonRDS/latest/APIReference/API_ServerlessV2ScalingConfiguration.html
        SERVERLESS_MAX_ACU => 256.0,
        STOCK_BUCKETS => f64::from(MAX_STOCK_BUCKETS),
        _ => return None,
    })
}

/// Aurora MySQL's default `max_connections` of a Serverless v2 instance by its maximum ACUs.
/// https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/aurora-serverless-v2.setting-capacity.html#aurora-serverless-v2.max-connections
#[rustfmt::skip]
const SERVERLESS_CONNECTIONS: [(f64, f64); 7] = [
    (1.0, 90.0), (4.0, 135.0), (8.0, 1_000.0), (16.0, 2_000.0), (32.0, 3_000.0), (64.0, 4_000.0),
    (128.0, 5_000.0),
];

/// The table's row at or below `max_acu` (128 ACUs and up: 5,000, the last row documented).
pub(super) fn serverless_max_connections(max_acu: f64) -> f64 {
    SERVERLESS_CONNECTIONS
        .iter()
        .rev()
        .find(|(acu, _)| max_acu >= *acu)
        .map_or(SERVERLESS_CONNECTIONS[0].1, |row| row.1)
}

/// The smallest maximum ACUs whose default `max_connections` reaches `connections`.
pub(super) fn acu_for_connections(connections: f64) -> Option<f64> {
    SERVERLESS_CONNECTIONS
        .iter()
        .find(|(_, max)| *max >= connections)
        .map(|(acu, _)| *acu)
}

/// A provisioned memory-optimised class (`db.r6g.2xlarge`): vCPUs and Aurora MySQL's default
/// `max_connections` by size (the db.r5 rows; r6g, r7g and r8g sizes have the same memory).
/// https://docs.aws.amazon.com/AmazonRDS/latest/AuroraUserGuide/AuroraMySQL.Managing.Performance.html#AuroraMySQL.Managing.MaxConnections
pub(super) fn provisioned(class: &str) -> Option<(f64, f64)> {
    let (family, size) = class.strip_prefix("db.")?.split_once('.')?;
    if !family.starts_with('r') {
        return None;
    }
    Some(match size {
        "large" => (2.0, 1_000.0),
        "xlarge" => (4.0, 2_000.0),
        "2xlarge" => (8.0, 3_000.0),
        "4xlarge" => (16.0, 4_000.0),
        "8xlarge" => (32.0, 5_000.0),
        "12xlarge" => (48.0, 6_000.0),
        "16xlarge" => (64.0, 6_000.0),
        "24xlarge" => (96.0, 7_000.0),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::sale::round_sale;

    #[test]
    fn max_connections_follow_the_maximum_acus_as_aws_tabulates_them() {
        assert_eq!(serverless_max_connections(0.5), 90.0);
        assert_eq!(serverless_max_connections(4.0), 135.0);
        assert_eq!(serverless_max_connections(6.0), 135.0);
        assert_eq!(serverless_max_connections(8.0), 1_000.0);
        assert_eq!(serverless_max_connections(256.0), 5_000.0);
        assert_eq!(acu_for_connections(140.0), Some(8.0));
        assert_eq!(acu_for_connections(6_000.0), None);
        assert_eq!(provisioned("db.r7g.large"), Some((2.0, 1_000.0)));
        assert_eq!(provisioned("db.t4g.medium"), None);
        let mut sale = round_sale();
        sale.quotas[DATABASE_MAX_ACU] = Some(16.0);
        assert_eq!(sale.limits()[MAX_CONNECTIONS], 2_000.0);
        sale.quotas[MAX_CONNECTIONS] = Some(600.0);
        assert_eq!(sale.limits()[MAX_CONNECTIONS], 600.0);
    }

    #[test]
    fn defaults_follow_the_region() {
        let at = |region: &str, limit: usize| {
            let mut sale = round_sale();
            sale.region = region.to_owned();
            sale.limits()[limit]
        };
        assert_eq!(at("us-east-1", API_RPS), 10_000.0);
        assert_eq!(at("ap-southeast-3", API_RPS), 2_500.0);
        assert_eq!(at("ap-southeast-3", API_BURST), 1_250.0);
        assert_eq!(at("us-east-1", PUT_EVENTS_TPS), 10_000.0);
        assert_eq!(at("eu-central-1", PUT_EVENTS_TPS), 2_400.0);
        assert_eq!(at("eu-west-2", PUT_EVENTS_TPS), 1_200.0);
        assert_eq!(at("ca-central-1", PUT_EVENTS_TPS), 600.0);
        assert_eq!(at("me-south-1", PUT_EVENTS_TPS), 400.0);
        assert_eq!(at("eu-west-2", CREATE_SCHEDULE_TPS), 5_000.0);
        assert_eq!(at("eu-north-1", CREATE_SCHEDULE_TPS), 250.0);
        assert_eq!(at("us-west-2", SQS_FIFO_TPS), 70_000.0);
        assert_eq!(at("eu-central-1", SQS_FIFO_TPS), 2_400.0);
    }
}
