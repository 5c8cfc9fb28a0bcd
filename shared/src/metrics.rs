//! Metrics as CloudWatch Embedded Metric Format lines on stdout: Lambda ships stdout to
//! CloudWatch Logs, which turns each line into a metric, with no API call and no agent.
//!
//! The names below are the whole set: template.yaml's dashboard and alarms use the same ones.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

pub const NAMESPACE: &str = "flash-sale";

/// A hold was created (not a replay of an Idempotency-Key).
pub const HOLDS_CREATED: &str = "HoldsCreated";
/// A hold was refused for want of stock (409).
pub const HOLDS_REFUSED: &str = "HoldsRefused";
/// A hold was redeemed into a new order.
pub const ORDERS_CREATED: &str = "OrdersCreated";
/// A payment event settled its order (paid, or failed and cancelled).
pub const PAYMENTS_APPLIED: &str = "PaymentsApplied";
/// A payment event changed nothing: a repeat, or its order had settled already.
pub const PAYMENTS_IGNORED: &str = "PaymentsIgnored";
/// Money to give back: `paid` for an order already cancelled (or received after its deadline),
/// or a second `paid` for a paid order.
pub const REFUNDS_REQUIRED: &str = "RefundsRequired";
/// A payment event whose amount is not its order's: the order is unchanged; a person decides.
pub const PAYMENT_AMOUNT_MISMATCHES: &str = "PaymentAmountMismatches";
/// An operation committed but its side effects (schedule, publish) ran out of their time budget;
/// the client got its answer, the sweeper covers for what did not happen.
pub const SIDE_EFFECTS_TIMED_OUT: &str = "SideEffectsTimedOut";
/// A payment event was given up on after its retry budget.
pub const PAYMENTS_DEAD_LETTERED: &str = "PaymentsDeadLettered";
/// Milliseconds from a hold's or order's deadline to the trigger that settled it.
pub const EXPIRY_LAG: &str = "ExpiryLag";
/// Holds and orders the sweeper settled because no trigger had.
pub const SWEEPER_SETTLED: &str = "SweeperSettled";
/// Products whose settlement failed in a sweep (each logged with its error); the sweep settled
/// the others and ran its other steps, then failed its invocation.
pub const SWEEP_PRODUCT_FAILURES: &str = "SweepProductFailures";
/// A deadline trigger could not be scheduled (the sweeper covers for it).
pub const DEADLINE_SCHEDULE_FAILED: &str = "DeadlineScheduleFailed";
/// Stock buckets (or product totals) whose counters differ from their rows, per reconciliation.
pub const STOCK_DRIFT: &str = "StockDrift";
/// Buckets a reconciliation asked to repair did repair.
pub const STOCK_DRIFT_REPAIRED: &str = "StockDriftRepaired";

/// Every name above: what the template's dashboard and alarms may refer to.
pub const ALL: &[&str] = &[
    HOLDS_CREATED,
    HOLDS_REFUSED,
    ORDERS_CREATED,
    PAYMENTS_APPLIED,
    PAYMENTS_IGNORED,
    REFUNDS_REQUIRED,
    PAYMENT_AMOUNT_MISMATCHES,
    PAYMENTS_DEAD_LETTERED,
    EXPIRY_LAG,
    SWEEPER_SETTLED,
    SWEEP_PRODUCT_FAILURES,
    DEADLINE_SCHEDULE_FAILED,
    SIDE_EFFECTS_TIMED_OUT,
    STOCK_DRIFT,
    STOCK_DRIFT_REPAIRED,
];

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Stops printing metric lines in this process: for the benchmark, whose load would print
/// thousands a second among its own output.
pub fn disable() {
    ENABLED.store(false, Ordering::Relaxed);
}

/// A count of zero prints nothing: an idle sweep would otherwise print a line per counter every
/// run. CloudWatch then has no data point rather than a 0, which changes no alarm: every alarm on
/// these counts in template.yaml fills missing data with 0 (`FILL(…, 0)`) and treats it as not
/// breaching (`TreatMissingData: notBreaching`).
pub fn count(metric: &str, value: u64) {
    if let Some(line) = count_line(metric, value) {
        print(&line);
    }
}

pub fn milliseconds(metric: &str, value: u64) {
    print(&emf_line(metric, "Milliseconds", value));
}

fn print(line: &serde_json::Value) {
    if ENABLED.load(Ordering::Relaxed) {
        println!("{line}");
    }
}

fn count_line(metric: &str, value: u64) -> Option<serde_json::Value> {
    (value > 0).then(|| emf_line(metric, "Count", value))
}

fn emf_line(metric: &str, unit: &str, value: u64) -> serde_json::Value {
    let timestamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".to_owned());
    json!({
        "_aws": {
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Function"]],
                "Metrics": [{"Name": metric, "Unit": unit}],
            }],
        },
        "Function": function,
        metric: value,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_is_an_emf_document_naming_its_metric_and_unit() {
        let line = super::emf_line(super::EXPIRY_LAG, "Milliseconds", 1250);
        assert_eq!(line["ExpiryLag"], 1250);
        let definition = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(definition["Namespace"], "flash-sale");
        assert_eq!(definition["Metrics"][0]["Name"], "ExpiryLag");
        assert_eq!(definition["Metrics"][0]["Unit"], "Milliseconds");
        assert!(line["_aws"]["Timestamp"].as_u64().is_some_and(|t| t > 0));
    }

    #[test]
    fn a_count_of_zero_is_not_a_line() {
        assert_eq!(super::count_line(super::SWEEPER_SETTLED, 0), None);
        let line = super::count_line(super::SWEEPER_SETTLED, 2).expect("a line for 2");
        assert_eq!(line["SweeperSettled"], 2);
        assert_eq!(
            line["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Count"
        );
    }
}
