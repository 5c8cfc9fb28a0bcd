//! The plan as text, for a person at a terminal: a line per figure against its limit, what happens
//! past each, and what to raise before the sale.

use std::fmt::Write as _;

use shared::adapters::aws::secrets::REFRESH_EVERY;

use super::figures::{Check, Plan};
use super::limits::{
    API_BURST, API_ROUTE_RPS, API_RPS, CLOUDFRONT_RPS, CREATE_SCHEDULE_TPS, DATABASE_MAX_ACU,
    DELETE_SCHEDULE_TPS, INSTANCE_VCPUS, LAMBDA_CONCURRENCY, LAMBDA_SCALING, LIMITS,
    MAX_CONNECTIONS, PROCESSOR_MAX_CONCURRENCY, PROXY_MAX_CONNECTIONS_PERCENT, PUT_EVENTS_TPS,
    Raise, SCHEDULER_INVOCATIONS_TPS, SCHEDULES, SECRETS_TPS, SERVERLESS_MAX_ACU, SQS_FIFO_TPS,
    STOCK_BUCKETS, acu_for_connections,
};
use super::sale::{ORDER_COST_IN_HOLDS, Sale};

/// The sweeper's schedule, `rate(1 minute)` in template.yaml: the longest a passed deadline
/// waits for settlement once Scheduler is behind or failed to schedule it.
const SWEEP_INTERVAL_SECONDS: f64 = 60.0;

/// What to do about an exceeded limit.
fn remedy(check: &Check) -> String {
    let needed = check.needed.ceil();
    match (check.limit, LIMITS[check.limit].2) {
        (MAX_CONNECTIONS, _) => match acu_for_connections(check.needed) {
            Some(acu) => format!(
                "deploy with DatabaseMaxCapacity={acu} or more (max_connections follows it), or \
                 set\n    max_connections in the DB parameter group (up to 16,000)"
            ),
            None => "set max_connections in the DB parameter group (up to 16,000)".to_owned(),
        },
        (DATABASE_MAX_ACU, _) => format!(
            "deploy with DatabaseMaxCapacity={}",
            (check.needed * 2.0).ceil() / 2.0
        ),
        (_, Raise::Parameter(name)) => format!("deploy with {name}={needed}"),
        (_, Raise::ServiceQuotas) => {
            format!("request at least {} in Service Quotas", group(needed))
        }
        (_, Raise::Support) => format!("ask AWS Support for at least {}", group(needed)),
        (_, Raise::Resize) => format!("a writer class with {} vCPUs or more", group(needed)),
        (LAMBDA_SCALING, _) => "provisioned concurrency for the busiest functions, or admit \
                                buyers through a waiting room"
            .to_owned(),
        (SECRETS_TPS, _) => {
            "provisioned concurrency, so containers start before the sale".to_owned()
        }
        (SERVERLESS_MAX_ACU, _) => {
            "a provisioned writer (--instance-class), or less of the writer's CPU per hold"
                .to_owned()
        }
        (STOCK_BUCKETS, _) => {
            "split the stock over several products, or shorten the lock".to_owned()
        }
        (_, Raise::Fixed) => "cannot be raised: fewer writes per second on the writer".to_owned(),
    }
}

/// 12,345: a count (never negative here), rounded.
fn group(value: f64) -> String {
    let digits = format!("{value:.0}");
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// A figure as a person reads it: whole from 100 up, else up to two decimals.
pub(super) fn num(value: f64) -> String {
    if value >= 100.0 || value == value.round() {
        return group(value);
    }
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The plan as text: a line per figure against its limit.
struct Report<'a> {
    plan: &'a Plan,
    out: String,
}

impl Report<'_> {
    fn line(&mut self, label: &str, limit: usize) {
        if let Some(check) = self.plan.check(limit) {
            let (needed, available) = (num(check.needed), num(check.available));
            let verdict = if check.exceeded() { "OVER" } else { "of" };
            let key = LIMITS[limit].0;
            let _ = writeln!(
                self.out,
                "  {label:<36}{needed:>9}  {verdict:<4}{available:>11}  {key}"
            );
        }
    }

    fn text(&mut self, text: &str) {
        self.out.push_str(text);
    }

    fn exceeds(&self, limit: usize) -> bool {
        self.plan.check(limit).is_some_and(Check::exceeded)
    }
}

fn percent(share: f64) -> String {
    format!("{:.0}%", share * 100.0)
}

/// The plan, for a person at a terminal.
pub fn render(sale: &Sale, plan: &Plan) -> String {
    let limits = sale.limits();
    let mut report = Report {
        plan,
        out: String::new(),
    };
    let (holds, visitors, products, region) = (
        num(sale.holds_per_second),
        num(sale.visitors),
        num(sale.products),
        &sale.region,
    );
    let (order_share, ttl, peak) = (
        percent(sale.order_share),
        num(sale.hold_ttl_seconds),
        num(sale.peak_seconds),
    );
    let (poll, caches) = (num(sale.poll_seconds), num(sale.edge_caches));
    let room = if sale.waiting_room {
        "a waiting room (entries polled)"
    } else {
        "no waiting room"
    };
    report.text(&format!(
        "Capacity plan: {holds} holds/s, {visitors} visitors, {products} product(s), {region}
assumed: {order_share} of holds become orders (one payment webhook each), hold TTL {ttl} s, a {peak} s
peak, a page asks every {poll} s, {caches} CloudFront caches per product, {room}

Limits are named by their --quota key; those to raise are listed at the end, by full name.

Lambda (concurrency = rate x duration)
  function               rate/s     ms  concurrency  from cold
"
    ));
    for lambda in plan.lambdas.iter().filter(|lambda| lambda.rate > 0.0) {
        let (name, rate, ms) = (lambda.name, num(lambda.rate), num(lambda.ms));
        let concurrency = num(lambda.concurrency);
        let ramp = if lambda.seconds_to_scale > 0.0 {
            format!("{} s", num(lambda.seconds_to_scale))
        } else {
            "at once".to_owned()
        };
        report.text(&format!(
            "  {name:<20}{rate:>9}{ms:>7}{concurrency:>13}  {ramp}\n"
        ));
    }
    report.line("concurrent executions, all", LAMBDA_CONCURRENCY);
    report.line("busiest function's concurrency", LAMBDA_SCALING);
    report.line("payment-processor concurrency", PROCESSOR_MAX_CONCURRENCY);

    report.text("\nEdge and API (requests/s)\n");
    report.line("CloudFront", CLOUDFRONT_RPS);
    report.line("API Gateway, whole account", API_RPS);
    report.line(
        &format!("busiest route {}", plan.busiest_route.0),
        API_ROUTE_RPS,
    );
    let (burst, origin) = (num(limits[API_BURST]), num(plan.origin_reads));
    report.text(&format!(
        "  (burst: {burst} requests, not adjustable; cached reads reach the API at {origin}/s)\n"
    ));

    report.text("\nEventBridge Scheduler (a one-time schedule per hold and per order)\n");
    report.line("CreateSchedule/s (holds + orders)", CREATE_SCHEDULE_TPS);
    report.line("DeleteSchedule/s (orders)", DELETE_SCHEDULE_TPS);
    report.line("expiry invocations/s", SCHEDULER_INVOCATIONS_TPS);
    report.line("schedules alive at the peak's end", SCHEDULES);
    let sweep = num(SWEEP_INTERVAL_SECONDS);
    if report.exceeds(CREATE_SCHEDULE_TPS) {
        let missed = percent(1.0 - limits[CREATE_SCHEDULE_TPS] / plan.create_schedules);
        report.text(&format!(
            "  CreateSchedule over its quota: about {missed} of holds and orders get no trigger (each
  counted as DeadlineScheduleFailed, after up to 3 s of retries); the sweeper settles them
  within {sweep} s.
"
        ));
    }
    if report.exceeds(DELETE_SCHEDULE_TPS) {
        report.text(
            "  DeleteSchedule over its quota: a redeemed hold's trigger that could not be deleted
  fires anyway and finds nothing to do: one more invocation.
",
        );
    }
    if plan.expiry_backlog_seconds > 0.0 {
        let behind = num(plan.expiry_backlog_seconds);
        report.text(&format!(
            "  Invocations over their quota: triggers fall up to {behind} s behind by the peak's end.
  Lazy expiry keeps that from buyers (a lapsed hold's units are available at expires_at,
  settled or not), and the sweeper settles every passed deadline each minute: settlement
  lags {sweep} s at most.
"
        ));
    }

    report.text("\nSQS FIFO, EventBridge, Secrets Manager (calls/s)\n");
    report.line("SendMessage (payment webhooks)", SQS_FIFO_TPS);
    report.line("PutEvents (created, paid, expired)", PUT_EVENTS_TPS);
    report.line("GetSecretValue, opening second", SECRETS_TPS);
    let (every, warm) = (
        num(REFRESH_EVERY.as_secs_f64()),
        num(plan.secret_reads_steady),
    );
    report.text(&format!(
        "  (every container reads its secret at cold start, then every {every} s: {warm}/s warm)\n"
    ));
    if report.exceeds(SQS_FIFO_TPS) {
        report
            .text("  SendMessage over its limit: the webhook answers 503; the provider retries.\n");
    }
    if report.exceeds(PUT_EVENTS_TPS) {
        report.text(
            "  PutEvents over its quota: refused events wait in the outbox; each sweep republishes
  them for up to 20 s, so consumers hear of some minutes late.
",
        );
    }

    let (class, vcpus) = (&sale.instance_class, num(plan.writer_vcpus));
    let hold_ms = num(sale.writer_ms_per_hold);
    let order_ms = num(sale
        .writer_ms_per_order
        .unwrap_or(ORDER_COST_IN_HOLDS * sale.writer_ms_per_hold));
    let read_ms = num(sale.writer_ms_per_read);
    report.text(&format!(
        "\nDatabase ({class})
  writer CPU: {vcpus} vCPUs busy ({hold_ms} ms a hold, {order_ms} ms an order and its payment,
  {read_ms} ms a read)
"
    ));
    let cpu_max = percent(sale.writer_cpu_max);
    if sale.serverless() {
        let per_acu = num(sale.vcpus_per_acu);
        report.text(&format!(
            "  ACUs at {cpu_max} CPU ({per_acu} vCPU an ACU):\n"
        ));
        report.line("  against the stack's maximum", DATABASE_MAX_ACU);
        report.line("  against Serverless v2's", SERVERLESS_MAX_ACU);
    } else {
        report.line(&format!("vCPUs at {cpu_max} CPU"), INSTANCE_VCPUS);
    }
    let (in_use, rtt) = (num(plan.connections_in_use), num(sale.db_rtt_ms));
    let (pool, pct) = (
        num(plan.proxy_connections),
        num(limits[PROXY_MAX_CONNECTIONS_PERCENT]),
    );
    let (max, clients) = (num(plan.max_connections), num(plan.concurrency));
    report.text(&format!(
        "  connections in use: {in_use} (round trips of {rtt} ms, and the writer's time); the proxy
  opens up to {pool} ({pct}% of max_connections {max}); {clients} client connections, one a container
"
    ));
    report.line("max_connections the sale needs", MAX_CONNECTIONS);

    let (hot, busy) = (percent(sale.hot_share), percent(sale.bucket_busy_max));
    let (lock_ms, hold_lock) = (num(sale.lock_ms_per_hold), num(plan.hold_lock_seconds));
    let (for_holds, settle_lock) = (num(plan.buckets_for_holds), num(plan.settle_lock_seconds));
    report.text(&format!(
        "\nHot product's stock buckets ({hot} of the holds, each bucket busy {busy} at most)
  holds lock a bucket {lock_ms} ms each: {hold_lock} s of lock a second ({for_holds} buckets for them)
  orders and expiries hold it across their COMMIT's round trip: {settle_lock} s a second
"
    ));
    report.line("buckets (stock_buckets)", STOCK_BUCKETS);
    let buckets = num(plan.buckets.min(limits[STOCK_BUCKETS]));
    report.text(&format!(
        "  (create the product with \"stock_buckets\": {buckets})\n"
    ));

    let exceeded = plan.exceeded();
    if exceeded.is_empty() {
        report.text("\nEvery figure is within its limit.\n");
        return report.out;
    }
    report.text("\nBefore the sale:\n");
    for check in exceeded {
        let (name, key) = (LIMITS[check.limit].1, check.key());
        let (needed, available, remedy) = (num(check.needed), num(check.available), remedy(check));
        report.text(&format!(
            "  - {name}\n    {needed} needed, {available} now ({key}): {remedy}\n"
        ));
    }
    report.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::args::usage;

    #[test]
    fn figures_read_as_a_person_writes_them() {
        assert_eq!(group(1_234_567.0), "1,234,567");
        assert_eq!(group(999.6), "1,000");
        assert_eq!(num(12.126), "12.13");
        assert_eq!(num(2.5), "2.5");
        assert_eq!(num(40.0), "40");
        assert_eq!(num(0.84), "0.84");
        assert!(usage().contains("scheduler-invocations-tps"));
    }
}
