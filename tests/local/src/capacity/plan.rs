//! The plan's arithmetic: every rate the stack sees at the sale's peak, from the sale's figures,
//! each checked against its limit.

use shared::adapters::aws::secrets::REFRESH_EVERY;

use super::figures::{Check, Lambda, Plan};
use super::limits::{
    API_ROUTE_RPS, API_RPS, CLOUDFRONT_RPS, CREATE_SCHEDULE_TPS, DATABASE_MAX_ACU,
    DELETE_SCHEDULE_TPS, INSTANCE_VCPUS, LAMBDA_CONCURRENCY, LAMBDA_SCALING, MAX_CONNECTIONS,
    PROCESSOR_MAX_CONCURRENCY, PROXY_MAX_CONNECTIONS_PERCENT, PUT_EVENTS_TPS,
    SCHEDULER_INVOCATIONS_TPS, SCHEDULES, SECRETS_TPS, SERVERLESS_MAX_ACU, SQS_FIFO_TPS,
    STOCK_BUCKETS,
};
use super::sale::{
    CREATE_HOLD, CREATE_ORDER, FUNCTIONS, GET_PRODUCT, GET_QUEUE_ENTRY, GET_QUEUE_SUMMARY,
    HOLD_EXPIRY, ORDER_COST_IN_HOLDS, PAYMENT_PROCESSOR, PAYMENT_WEBHOOK, Sale,
};

pub fn plan(sale: &Sale) -> Plan {
    let limits = sale.limits();
    let holds = sale.holds_per_second;
    let orders = holds * sale.order_share;
    // A redeemed hold's trigger is deleted; the others fire hold_ttl later, at the same rate.
    let expiries = holds - orders;
    let polls = sale.visitors / sale.poll_seconds;
    let entry_reads = if sale.waiting_room { polls } else { 0.0 };
    // A cached read reaches the origin once a second per product per CloudFront cache.
    let product_reads = sale.products * sale.edge_caches;
    let summary_reads = if sale.waiting_room {
        product_reads
    } else {
        0.0
    };
    let origin_reads = product_reads + summary_reads;
    let edge_requests = polls * if sale.waiting_room { 2.0 } else { 1.0 } + holds + orders;
    // The webhook is the provider's, on the API's own URL, not through the edge.
    let api_requests = holds + 2.0 * orders + entry_reads + origin_reads;
    let busiest_route = [
        ("POST /api/holds", holds),
        ("POST /api/orders", orders),
        ("POST /api/payments/webhook", orders),
        ("GET /api/products/{id}/queue", entry_reads),
        ("GET /api/products/{id}", product_reads),
    ]
    .into_iter()
    .fold(("POST /api/holds", 0.0), |busiest, route| {
        if route.1 > busiest.1 { route } else { busiest }
    });

    let mut rates = [0.0; FUNCTIONS.len()];
    rates[CREATE_HOLD] = holds;
    rates[CREATE_ORDER] = orders;
    rates[PAYMENT_WEBHOOK] = orders;
    rates[PAYMENT_PROCESSOR] = orders;
    rates[HOLD_EXPIRY] = expiries;
    rates[GET_PRODUCT] = product_reads;
    rates[GET_QUEUE_ENTRY] = entry_reads;
    rates[GET_QUEUE_SUMMARY] = summary_reads;
    let lambdas: Vec<Lambda> = FUNCTIONS
        .iter()
        .enumerate()
        .map(|(index, (name, _, _))| {
            let ms = sale.durations_ms[index];
            let concurrency = (rates[index] * ms / 1_000.0).ceil();
            let steps = (concurrency / limits[LAMBDA_SCALING]).ceil();
            Lambda {
                name,
                rate: rates[index],
                ms,
                concurrency,
                seconds_to_scale: (steps - 1.0).max(0.0) * 10.0,
            }
        })
        .collect();
    let concurrency: f64 = lambdas.iter().map(|lambda| lambda.concurrency).sum();
    let busiest_function = lambdas
        .iter()
        .map(|lambda| lambda.concurrency)
        .fold(0.0, f64::max);
    let processor_concurrency = lambdas[PAYMENT_PROCESSOR].concurrency;

    let create_schedules = holds + orders;
    let scheduler_invocations = expiries;
    let expiry_backlog_seconds = if scheduler_invocations > limits[SCHEDULER_INVOCATIONS_TPS] {
        sale.peak_seconds * (scheduler_invocations / limits[SCHEDULER_INVOCATIONS_TPS] - 1.0)
    } else {
        0.0
    };
    let schedules_alive = holds * sale.hold_ttl_seconds.min(sale.peak_seconds)
        + orders * sale.order_ttl_seconds.min(sale.peak_seconds);
    // OrderCreated, OrderPaid, HoldExpired: one PutEvents call per committed operation.
    let put_events = 2.0 * orders + expiries;
    // Every container reads its secret at cold start: at worst all at once at the opening (as
    // many as the scaling rate lets in), then each every REFRESH_EVERY.
    let secret_reads_opening: f64 = lambdas
        .iter()
        .map(|lambda| lambda.concurrency.min(limits[LAMBDA_SCALING]))
        .sum();
    let secret_reads_steady = concurrency / REFRESH_EVERY.as_secs_f64();

    let writer_ms_per_order = sale
        .writer_ms_per_order
        .unwrap_or(ORDER_COST_IN_HOLDS * sale.writer_ms_per_hold);
    let reads = entry_reads + origin_reads;
    let writer_vcpus = (holds * sale.writer_ms_per_hold
        + orders * writer_ms_per_order
        + reads * sale.writer_ms_per_read)
        / 1_000.0;
    let writer_capacity = if sale.serverless() {
        writer_vcpus / (sale.vcpus_per_acu * sale.writer_cpu_max)
    } else {
        writer_vcpus / sale.writer_cpu_max
    };
    // A transaction borrows a database connection from the proxy for its round trips and the
    // writer's time; nothing on these paths pins one.
    let round_trip_seconds: f64 = lambdas
        .iter()
        .zip(FUNCTIONS)
        .map(|(lambda, (_, _, round_trips))| lambda.rate * round_trips * sale.db_rtt_ms / 1_000.0)
        .sum();
    let connections_in_use = round_trip_seconds + writer_vcpus;
    let max_connections = limits[MAX_CONNECTIONS];
    let proxy_connections =
        (max_connections * limits[PROXY_MAX_CONNECTIONS_PERCENT] / 100.0).floor();

    // A hold locks its bucket inside the CALL; an order or an expiry moves its units as the last
    // statement before COMMIT, so it holds the lock across that round trip too.
    let hot_holds = holds * sale.hot_share;
    let hold_lock_seconds = hot_holds * sale.lock_ms_per_hold / 1_000.0;
    let settle_lock_seconds =
        (orders + expiries) * sale.hot_share * (sale.db_rtt_ms + sale.lock_ms_per_hold) / 1_000.0;
    let buckets_for_holds = (hold_lock_seconds / sale.bucket_busy_max).ceil().max(1.0);
    let buckets = ((hold_lock_seconds + settle_lock_seconds) / sale.bucket_busy_max)
        .ceil()
        .max(1.0);

    let mut checks = vec![
        (LAMBDA_CONCURRENCY, concurrency),
        (LAMBDA_SCALING, busiest_function),
        (API_RPS, api_requests),
        (API_ROUTE_RPS, busiest_route.1),
        (CLOUDFRONT_RPS, edge_requests),
        (CREATE_SCHEDULE_TPS, create_schedules),
        (DELETE_SCHEDULE_TPS, orders),
        (SCHEDULER_INVOCATIONS_TPS, scheduler_invocations),
        (SCHEDULES, schedules_alive),
        (SQS_FIFO_TPS, orders),
        (PROCESSOR_MAX_CONCURRENCY, processor_concurrency),
        (PUT_EVENTS_TPS, put_events),
        (SECRETS_TPS, secret_reads_opening),
        (
            MAX_CONNECTIONS,
            (connections_in_use / (limits[PROXY_MAX_CONNECTIONS_PERCENT] / 100.0)).ceil(),
        ),
        (STOCK_BUCKETS, buckets),
    ];
    if sale.serverless() {
        checks.push((DATABASE_MAX_ACU, writer_capacity));
        checks.push((SERVERLESS_MAX_ACU, writer_capacity));
    } else {
        checks.push((INSTANCE_VCPUS, writer_capacity));
    }
    Plan {
        orders,
        expiries,
        entry_reads,
        origin_reads,
        edge_requests,
        api_requests,
        busiest_route,
        lambdas,
        concurrency,
        create_schedules,
        delete_schedules: orders,
        scheduler_invocations,
        schedules_alive,
        expiry_backlog_seconds,
        webhooks: orders,
        processor_concurrency,
        put_events,
        secret_reads_opening,
        secret_reads_steady,
        writer_vcpus,
        writer_capacity,
        max_connections,
        proxy_connections,
        connections_in_use,
        hold_lock_seconds,
        settle_lock_seconds,
        buckets_for_holds,
        buckets,
        checks: checks
            .into_iter()
            .map(|(limit, needed)| Check {
                limit,
                needed,
                available: limits[limit],
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capacity::render::render;
    use crate::capacity::sale::round_sale;

    fn check(plan: &Plan, key: &str) -> Check {
        plan.checks
            .iter()
            .find(|check| check.key() == key)
            .cloned()
            .unwrap_or_else(|| panic!("no check {key}"))
    }

    #[test]
    fn concurrency_is_rate_times_duration_per_function_and_summed() {
        let plan = plan(&round_sale());
        let of = |name: &str| {
            plan.lambdas
                .iter()
                .find(|l| l.name == name)
                .map(|l| l.concurrency)
        };
        assert_eq!(of("create-hold"), Some(40.0)); // 1,000/s × 40 ms
        assert_eq!(of("create-order"), Some(40.0)); // 500/s × 80 ms
        assert_eq!(of("payment-webhook"), Some(15.0)); // 500/s × 30 ms
        assert_eq!(of("payment-processor"), Some(15.0));
        assert_eq!(of("hold-expiry"), Some(20.0)); // 500/s × 40 ms
        assert_eq!(plan.concurrency, 130.0);
        assert_eq!(check(&plan, "lambda-concurrency").available, 1_000.0);
        assert_eq!(
            check(&plan, "processor-max-concurrency"),
            Check {
                limit: PROCESSOR_MAX_CONCURRENCY,
                needed: 15.0,
                available: 5.0
            }
        );
    }

    #[test]
    fn a_function_past_a_thousand_containers_takes_ten_seconds_per_thousand() {
        let mut sale = round_sale();
        sale.holds_per_second = 25_000.0; // create-hold: 1,000 containers at 40 ms, then 100 ms:
        sale.durations_ms[CREATE_HOLD] = 100.0;
        let plan = plan(&sale);
        assert_eq!(plan.lambdas[CREATE_HOLD].concurrency, 2_500.0);
        assert_eq!(plan.lambdas[CREATE_HOLD].seconds_to_scale, 20.0);
        assert!(check(&plan, "lambda-scaling").exceeded());
        assert!(check(&plan, "lambda-concurrency").exceeded());
    }

    #[test]
    fn edge_and_api_requests_count_what_each_reaches() {
        let mut sale = round_sale();
        sale.edge_caches = 20.0;
        let plan = plan(&sale);
        // 10,000 visitors every 5 s, holds, orders; the webhook does not pass the edge.
        assert_eq!(plan.edge_requests, 2_000.0 + 1_000.0 + 500.0);
        // holds, orders, webhooks, one product read a second per CloudFront cache.
        assert_eq!(plan.api_requests, 1_000.0 + 500.0 + 500.0 + 20.0);
        assert_eq!(plan.busiest_route, ("POST /api/holds", 1_000.0));
        assert!(!check(&plan, "api-route-rps").exceeded()); // 1,000 of 1,000

        sale.waiting_room = true;
        let plan = super::plan(&sale);
        assert_eq!(plan.entry_reads, 2_000.0);
        assert_eq!(plan.edge_requests, 4_000.0 + 1_500.0);
        assert_eq!(plan.api_requests, 2_000.0 + 2_000.0 + 40.0);
        assert_eq!(
            plan.busiest_route,
            ("GET /api/products/{id}/queue", 2_000.0)
        );
    }

    #[test]
    fn scheduler_calls_follow_holds_and_orders_and_its_backlog_the_excess() {
        let plan = plan(&round_sale());
        assert_eq!(plan.create_schedules, 1_500.0);
        assert_eq!(plan.delete_schedules, 500.0);
        assert_eq!(plan.scheduler_invocations, 500.0);
        assert_eq!(plan.expiry_backlog_seconds, 0.0);
        // 120 s of holds and 60 s of orders alive at the end of a 60 s peak.
        assert_eq!(plan.schedules_alive, 1_000.0 * 60.0 + 500.0 * 60.0);

        let mut sale = round_sale();
        sale.holds_per_second = 5_000.0;
        sale.order_share = 0.5;
        let plan = super::plan(&sale);
        // 2,500 triggers a second against 1,000 for 60 s: 90,000 waiting, 90 s of work.
        assert_eq!(plan.expiry_backlog_seconds, 90.0);
        assert!(check(&plan, "scheduler-invocations-tps").exceeded());
        assert!(check(&plan, "create-schedule-tps").exceeded()); // 7,500 of 5,000
        assert!(render(&sale, &plan).contains("triggers fall up to 90 s behind"));
    }

    #[test]
    fn events_and_webhooks_follow_orders_and_expiries() {
        let plan = plan(&round_sale());
        assert_eq!(plan.put_events, 500.0 + 500.0 + 500.0);
        assert_eq!(plan.webhooks, 500.0);
        assert_eq!(check(&plan, "sqs-fifo-tps").available, 70_000.0);
        // Every container's cold start in the opening second, then a read every 5 minutes each.
        assert_eq!(plan.secret_reads_opening, 130.0);
        assert_eq!(plan.secret_reads_steady, 130.0 / 300.0);
    }

    #[test]
    fn writer_cpu_is_rate_times_cost_and_acus_follow_from_the_cpu_allowed() {
        let plan = plan(&round_sale());
        // 1,000 × 1 ms + 500 × 3 ms = 2.5 vCPU-seconds a second.
        assert_eq!(plan.writer_vcpus, 2.5);
        // 2.5 / (0.25 vCPU an ACU × 70%).
        assert!((plan.writer_capacity - 2.5 / 0.175).abs() < 1e-9);
        assert!(check(&plan, "database-max-acu").exceeded());

        let mut sale = round_sale();
        sale.writer_ms_per_order = None; // an order is 3.1 holds
        assert!((super::plan(&sale).writer_vcpus - (1.0 + 500.0 * 3.1 / 1_000.0)).abs() < 1e-9);

        sale.instance_class = "db.r6g.2xlarge".to_owned();
        let plan = super::plan(&sale);
        assert_eq!(check(&plan, "instance-vcpus").available, 8.0);
        assert_eq!(plan.max_connections, 3_000.0);
        assert!(
            plan.checks
                .iter()
                .all(|check| check.key() != "database-max-acu")
        );
    }

    #[test]
    fn connections_in_use_are_round_trips_and_the_writers_time() {
        let plan = plan(&round_sale());
        // 1,000 × 1 + 500 × 9 + 500 × 7 + 500 × 7 round trips of 1 ms, plus 2.5 s of CPU.
        assert_eq!(plan.connections_in_use, 1.0 + 4.5 + 3.5 + 3.5 + 2.5);
        assert_eq!(plan.max_connections, 135.0); // 4 ACUs
        assert_eq!(plan.proxy_connections, 121.0); // 90%
        assert_eq!(check(&plan, "max-connections").needed, 17.0); // 15 / 0.9, whole
    }

    #[test]
    fn buckets_cover_the_lock_time_of_holds_and_of_the_orders_and_expiries_that_settle() {
        let plan = plan(&round_sale());
        // Holds: 1,000 × 1 ms = 1 s of lock a second; orders and expiries: 1,000 × (1 + 1) ms.
        assert_eq!(plan.hold_lock_seconds, 1.0);
        assert_eq!(plan.settle_lock_seconds, 2.0);
        assert_eq!(plan.buckets_for_holds, 2.0); // 1 s at most 50% busy
        assert_eq!(plan.buckets, 6.0);
        let mut sale = round_sale();
        sale.hot_share = 0.25;
        assert_eq!(super::plan(&sale).buckets, 2.0); // 0.75 s / 0.5
        sale.holds_per_second = 50_000.0;
        sale.hot_share = 1.0;
        let plan = super::plan(&sale);
        assert_eq!(plan.buckets, 300.0);
        assert!(check(&plan, "stock-buckets").exceeded()); // of 64
    }
}
