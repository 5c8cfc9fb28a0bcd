//! Metrics as CloudWatch Embedded Metric Format lines on stdout: Lambda ships stdout to
//! CloudWatch Logs, which turns each line into a metric, with no API call and no agent.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

pub const NAMESPACE: &str = "flash-sale";

pub fn count(metric: &str, value: u64) {
    println!("{}", emf_line(metric, value));
}

fn emf_line(metric: &str, value: u64) -> serde_json::Value {
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
                "Metrics": [{"Name": metric, "Unit": "Count"}],
            }],
        },
        "Function": function,
        metric: value,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_count_is_an_emf_document_naming_its_metric() {
        let line = super::emf_line("DeadlineScheduleFailed", 1);
        assert_eq!(line["DeadlineScheduleFailed"], 1);
        let definition = &line["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(definition["Namespace"], "flash-sale");
        assert_eq!(definition["Metrics"][0]["Name"], "DeadlineScheduleFailed");
        assert!(line["_aws"]["Timestamp"].as_u64().is_some_and(|t| t > 0));
    }
}
