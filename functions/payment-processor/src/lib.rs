//! Applies payment events delivered by SQS and reports partial batch failures. Within a batch a
//! failed message fails every later message of its message group (its order) as well, so the
//! FIFO order per order survives redelivery.

use std::collections::{HashMap, HashSet};

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use shared::adapters::aws::LambdaStartup;
use shared::domain::payment::PaymentEvent;
use shared::ports::EventPublisher;
use shared::{Error, metrics, service};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
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
    let mut failed_groups = HashSet::new();
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let message_id = message.message_id.clone().unwrap_or_default();
        let group = message.attributes.get("MessageGroupId").cloned();
        let receive_count: u32 = message
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|count| count.parse().ok())
            .unwrap_or(1);
        let failed = if group
            .as_ref()
            .is_some_and(|group| failed_groups.contains(group))
        {
            Err(Error::Internal(
                "an earlier message of its group failed in this batch".into(),
            ))
        } else {
            let body = message.body.as_deref().unwrap_or_default().as_bytes();
            match PaymentEvent::from_queue_message(body, sent_at(&message.attributes)) {
                Ok(event) => {
                    service::payments::process_payment(&deps.pool, deps.publisher.as_ref(), &event)
                        .await
                        .map(drop)
                }
                Err(err) => Err(err),
            }
        };
        let Err(err) = failed else {
            continue;
        };
        // A failed last delivery, the message's own or one held back behind its group, goes to
        // the dead-letter queue.
        if receive_count >= deps.max_attempts {
            metrics::count(metrics::PAYMENTS_DEAD_LETTERED, 1);
            tracing::error!(%message_id, ?group, receive_count, error = %err, "payment message failed its last delivery; SQS moves it to the dead-letter queue");
        } else {
            tracing::warn!(%message_id, ?group, receive_count, error = %err, "payment message not applied; SQS will redeliver it");
        }
        failed_groups.extend(group);
        response.batch_item_failures.push(failure(message_id));
    }
    Ok(response)
}

/// When SQS accepted the message (`SentTimestamp`, epoch milliseconds): the receipt time of a
/// message queued before messages carried their own.
fn sent_at(attributes: &HashMap<String, String>) -> Option<chrono::NaiveDateTime> {
    let millis = attributes.get("SentTimestamp")?.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(millis).map(|at| at.naive_utc())
}

fn failure(message_id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    failure
}
