//! Applies payment events delivered by SQS and reports partial batch failures. Within a batch a
//! failed message fails every later message of its message group (its order) as well, so the
//! FIFO order per order survives redelivery.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use shared::adapters::aws::LambdaStartup;
use shared::domain::payment::PaymentEvent;
use shared::ports::EventPublisher;
use shared::store::pool::Pool;
use shared::{Error, metrics, service};

pub struct Deps {
    pub pool: Pool,
    pub publisher: Arc<dyn EventPublisher>,
    /// The queue's `maxReceiveCount` (`PAYMENT_MAX_ATTEMPTS`): a message failing its last
    /// delivery goes to the dead-letter queue.
    pub max_attempts: u32,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let lambda = LambdaStartup::from_env()?;
        Ok(Self {
            pool: lambda.pool().await?,
            publisher: lambda.publisher().await?,
            max_attempts: lambda.config.webhook.max_attempts,
        })
    }
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    let mut batch = BatchFailures::default();
    for message in event.records {
        let delivery = Delivery::of(&message);
        let applied = match batch.verdict(delivery.group.as_deref()) {
            Verdict::Apply => apply(deps, &message).await,
            Verdict::HoldBack => Err(Error::Internal(
                "an earlier message of its group failed in this batch".into(),
            )),
        };
        let Err(err) = applied else {
            continue;
        };
        report_failure(deps, &delivery, &err);
        batch.fail(delivery.message_id, delivery.group);
    }
    Ok(batch.into_response())
}

async fn apply(deps: &Deps, message: &SqsMessage) -> Result<(), Error> {
    let body = message.body.as_deref().unwrap_or_default().as_bytes();
    let event = PaymentEvent::from_queue_message(body, sent_at(&message.attributes))?;
    service::payments::process_payment(&deps.pool, deps.publisher.as_ref(), &event)
        .await
        .map(drop)
}

/// A failed last delivery, the message's own or one held back behind its group, goes to the
/// dead-letter queue.
fn report_failure(deps: &Deps, delivery: &Delivery, err: &Error) {
    let Delivery {
        message_id,
        group,
        receive_count,
    } = delivery;
    if *receive_count >= deps.max_attempts {
        metrics::count(metrics::PAYMENTS_DEAD_LETTERED, 1);
        tracing::error!(%message_id, ?group, receive_count, error = %err, "payment message failed its last delivery; SQS moves it to the dead-letter queue");
    } else {
        tracing::warn!(%message_id, ?group, receive_count, error = %err, "payment message not applied; SQS will redeliver it");
    }
}

/// What SQS says of one delivery of a message.
#[derive(Debug, PartialEq, Eq)]
struct Delivery {
    message_id: String,
    /// The FIFO queue's `MessageGroupId`: the order the event is for.
    group: Option<String>,
    /// `ApproximateReceiveCount`: 1 on the first delivery.
    receive_count: u32,
}

impl Delivery {
    fn of(message: &SqsMessage) -> Self {
        Self {
            message_id: message.message_id.clone().unwrap_or_default(),
            group: message.attributes.get("MessageGroupId").cloned(),
            receive_count: message
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|count| count.parse().ok())
                .unwrap_or(1),
        }
    }
}

/// Whether to apply a message of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Apply,
    /// Fail it unapplied: an earlier message of its group failed in this batch, and applying this
    /// one first would break the group's order when SQS redelivers that one.
    HoldBack,
}

/// The batch's rule, message by message in the batch's order: a failed message, applied or held
/// back, is reported as a batch item failure and holds back every later message of its group. A
/// message without a group holds back nothing.
#[derive(Debug, Default)]
pub struct BatchFailures {
    failed_groups: HashSet<String>,
    response: SqsBatchResponse,
}

impl BatchFailures {
    pub fn verdict(&self, group: Option<&str>) -> Verdict {
        if group.is_some_and(|group| self.failed_groups.contains(group)) {
            Verdict::HoldBack
        } else {
            Verdict::Apply
        }
    }

    pub fn fail(&mut self, message_id: String, group: Option<String>) {
        self.failed_groups.extend(group);
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = message_id;
        self.response.batch_item_failures.push(failure);
    }

    pub fn into_response(self) -> SqsBatchResponse {
        self.response
    }
}

/// When SQS accepted the message (`SentTimestamp`, epoch milliseconds): the receipt time of a
/// message queued before messages carried their own.
fn sent_at(attributes: &HashMap<String, String>) -> Option<chrono::NaiveDateTime> {
    let millis = attributes.get("SentTimestamp")?.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(millis).map(|at| at.naive_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The identifiers reported for a batch of (message id, group) in which the messages named in
    /// `failing` fail when applied: the loop of `handle` with applying stubbed out.
    fn reported(batch: &[(&str, Option<&str>)], failing: &[&str]) -> Vec<String> {
        let mut failures = BatchFailures::default();
        for &(message_id, group) in batch {
            let failed = match failures.verdict(group) {
                Verdict::Apply => failing.contains(&message_id),
                Verdict::HoldBack => true,
            };
            if failed {
                failures.fail(message_id.to_owned(), group.map(str::to_owned));
            }
        }
        failures
            .into_response()
            .batch_item_failures
            .into_iter()
            .map(|failure| failure.item_identifier)
            .collect()
    }

    #[test]
    fn a_batch_that_applies_reports_nothing() {
        let batch = [("a1", Some("a")), ("b1", Some("b")), ("a2", Some("a"))];
        assert_eq!(reported(&batch, &[]), Vec::<String>::new());
        assert_eq!(reported(&[], &[]), Vec::<String>::new());
    }

    #[test]
    fn a_failed_first_message_fails_the_rest_of_its_group_only() {
        let batch = [
            ("a1", Some("a")),
            ("a2", Some("a")),
            ("b1", Some("b")),
            ("a3", Some("a")),
        ];
        assert_eq!(reported(&batch, &["a1"]), ["a1", "a2", "a3"]);
    }

    #[test]
    fn interleaved_groups_fail_from_their_own_first_failure_on() {
        let batch = [
            ("a1", Some("a")),
            ("b1", Some("b")),
            ("a2", Some("a")),
            ("b2", Some("b")),
            ("c1", Some("c")),
            ("a3", Some("a")),
            ("b3", Some("b")),
        ];
        assert_eq!(reported(&batch, &["b2", "a2"]), ["a2", "b2", "a3", "b3"]);
        // A held-back message is never applied: whether it would have failed changes nothing.
        assert_eq!(reported(&batch, &["a2", "a3"]), reported(&batch, &["a2"]));
    }

    #[test]
    fn a_message_without_a_group_fails_alone() {
        let batch = [("x", None), ("y", None), ("a1", Some("a"))];
        assert_eq!(reported(&batch, &["x"]), ["x"]);
        let mut failures = BatchFailures::default();
        failures.fail("x".into(), None);
        assert_eq!(failures.verdict(None), Verdict::Apply);
        assert_eq!(failures.verdict(Some("a")), Verdict::Apply);
    }

    /// The sample batch: two messages of one order, one of another, and one that is not JSON.
    #[test]
    fn the_poison_message_fails_its_group_and_no_other() {
        let batch: SqsEvent =
            serde_json::from_str(include_str!("../../../events/payment-processor.batch.json"))
                .expect("an SQS event");
        let deliveries: Vec<Delivery> = batch.records.iter().map(Delivery::of).collect();
        let poison: Vec<&str> = batch
            .records
            .iter()
            .zip(&deliveries)
            .filter(|(message, _)| {
                let body = message.body.as_deref().unwrap_or_default().as_bytes();
                PaymentEvent::from_queue_message(body, sent_at(&message.attributes)).is_err()
            })
            .map(|(_, delivery)| delivery.message_id.as_str())
            .collect();
        assert_eq!(poison, ["3c4d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f"]);
        let batch: Vec<(&str, Option<&str>)> = deliveries
            .iter()
            .map(|delivery| (delivery.message_id.as_str(), delivery.group.as_deref()))
            .collect();
        assert_eq!(reported(&batch, &poison), poison);
        // Were the first message's order unknown, its group would fail with it.
        assert_eq!(
            reported(&batch, &[batch[0].0, poison[0]]),
            [batch[0].0, batch[1].0, poison[0]]
        );
    }

    #[test]
    fn a_delivery_is_read_from_the_attributes_sqs_sends() {
        let batch: SqsEvent =
            serde_json::from_str(include_str!("../../../events/payment-processor.batch.json"))
                .expect("an SQS event");
        assert_eq!(
            Delivery::of(&batch.records[0]),
            Delivery {
                message_id: "0f1e2d3c-4b5a-4968-8778-695a4b3c2d1e".to_owned(),
                group: Some("9d2f8a61-7c4b-4e1a-8f3d-2b6c5e4a1f70".to_owned()),
                receive_count: 1,
            }
        );
        assert_eq!(
            sent_at(&batch.records[0].attributes).map(|at| at.and_utc().timestamp_millis()),
            Some(1_795_262_400_000)
        );
        // A standard queue's message: no group; a missing count is a first delivery.
        let bare = SqsMessage::default();
        assert_eq!(
            Delivery::of(&bare),
            Delivery {
                message_id: String::new(),
                group: None,
                receive_count: 1,
            }
        );
        assert_eq!(sent_at(&bare.attributes), None);
    }
}
