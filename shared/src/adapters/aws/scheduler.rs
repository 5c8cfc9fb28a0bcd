//! Deadlines as EventBridge Scheduler one-time schedules: one per hold (or order), firing the
//! expiry function once, deleted by Scheduler after it ran.

use async_trait::async_trait;
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::DisplayErrorContext;
use aws_sdk_scheduler::types::{
    ActionAfterCompletion, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, Target,
};
use chrono::{NaiveDateTime, Timelike};

use crate::config::SchedulerSettings;
use crate::domain::deadline::Deadline;
use crate::error::Error;
use crate::ports::DeadlineScheduler;

/// Scheduler retries a failed invocation for up to this long, this many times.
const MAX_EVENT_AGE_SECONDS: i32 = 3_600;
const MAX_RETRY_ATTEMPTS: i32 = 10;

pub struct EventBridgeScheduler {
    client: Client,
    group: String,
    role_arn: String,
    hold_expiry_arn: String,
    order_expiry_arn: Option<String>,
}

impl EventBridgeScheduler {
    pub fn new(client: Client, settings: SchedulerSettings) -> Self {
        Self {
            client,
            group: settings.group,
            role_arn: settings.role_arn,
            hold_expiry_arn: settings.hold_expiry_arn,
            order_expiry_arn: settings.order_expiry_arn,
        }
    }

    fn target(&self, deadline: &Deadline) -> Option<(&str, serde_json::Value)> {
        match deadline {
            Deadline::HoldExpiry(id) => {
                Some((&self.hold_expiry_arn, serde_json::json!({"hold_id": id})))
            }
            Deadline::OrderPayment(id) => self
                .order_expiry_arn
                .as_deref()
                .map(|arn| (arn, serde_json::json!({"order_id": id}))),
        }
    }
}

/// `at(yyyy-mm-ddThh:mm:ss)` in UTC, rounded up to the next whole second: a trigger must never
/// be due before the deadline (an early one would find nothing to do).
pub fn at_expression(at: NaiveDateTime) -> String {
    let whole = at.with_nanosecond(0).unwrap_or(at);
    let due = if whole < at {
        whole + chrono::Duration::seconds(1)
    } else {
        whole
    };
    format!("at({})", due.format("%Y-%m-%dT%H:%M:%S"))
}

#[async_trait]
impl DeadlineScheduler for EventBridgeScheduler {
    async fn schedule(&self, deadline: &Deadline, at: NaiveDateTime) -> Result<(), Error> {
        let Some((arn, input)) = self.target(deadline) else {
            tracing::debug!(
                deadline = deadline.name(),
                "no expiry function configured for this deadline; the sweeper settles it"
            );
            return Ok(());
        };
        let invalid = |err: aws_sdk_scheduler::error::BuildError| Error::Internal(err.to_string());
        let target = Target::builder()
            .arn(arn)
            .role_arn(&self.role_arn)
            .input(input.to_string())
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_event_age_in_seconds(MAX_EVENT_AGE_SECONDS)
                    .maximum_retry_attempts(MAX_RETRY_ATTEMPTS)
                    .build(),
            )
            .build()
            .map_err(invalid)?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(invalid)?;
        let name = deadline.name();
        let created = self
            .client
            .create_schedule()
            .name(&name)
            .group_name(&self.group)
            .schedule_expression(at_expression(at))
            .schedule_expression_timezone("UTC")
            .flexible_time_window(window)
            .action_after_completion(ActionAfterCompletion::Delete)
            .target(target)
            // The same token on a retried create makes it idempotent.
            .client_token(&name)
            .send()
            .await;
        match created {
            Ok(_) => Ok(()),
            // Created before (a retry whose first answer was lost): the trigger exists.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conflict_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(Error::Internal(format!(
                "CreateSchedule {name}: {}",
                DisplayErrorContext(&err)
            ))),
        }
    }

    async fn cancel(&self, deadline: &Deadline) -> Result<(), Error> {
        let name = deadline.name();
        let deleted = self
            .client
            .delete_schedule()
            .name(&name)
            .group_name(&self.group)
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            // Never created, fired already, or deleted before: nothing left to cancel.
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(err) => Err(Error::Internal(format!(
                "DeleteSchedule {name}: {}",
                DisplayErrorContext(&err)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.3f").expect("valid")
    }

    #[test]
    fn the_expression_is_utc_seconds_never_before_the_deadline() {
        assert_eq!(
            at_expression(at("2026-11-21 12:02:00.000")),
            "at(2026-11-21T12:02:00)"
        );
        assert_eq!(
            at_expression(at("2026-11-21 12:02:00.001")),
            "at(2026-11-21T12:02:01)"
        );
        assert_eq!(
            at_expression(at("2026-12-31 23:59:59.500")),
            "at(2027-01-01T00:00:00)"
        );
    }

    #[test]
    fn schedule_names_fit_schedulers_rules() {
        let deadline = Deadline::HoldExpiry(crate::domain::ids::HoldId::generate());
        let name = deadline.name();
        assert!((1..=64).contains(&name.len()));
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        );
    }
}
