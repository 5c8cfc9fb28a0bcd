//! Applies payment events delivered by SQS and reports partial batch failures. Within a batch a
//! failed message fails every later message of its message group (its order) as well, so the
//! FIFO order per order survives redelivery.

use std::collections::HashSet;

use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use shared::aws::SdkLoader;
use shared::payments::PaymentEvent;
use shared::ports::EventPublisher;
use shared::{Config, Error, adapters, service};
use sqlx::MySqlPool;

pub struct Deps {
    pub pool: MySqlPool,
    pub publisher: Arc<dyn EventPublisher>,
}

impl Deps {
    pub async fn from_env() -> Result<Self, Error> {
        let config = Config::from_env()?;
        let sdk = SdkLoader::from_env();
        Ok(Self {
            pool: shared::db::lambda_pool(&config)?,
            publisher: adapters::lambda_event_publisher(&config, &sdk).await?,
        })
    }
}

pub async fn handle(deps: &Deps, event: SqsEvent) -> Result<SqsBatchResponse, Error> {
    let mut failed_groups = HashSet::new();
    let mut response = SqsBatchResponse::default();
    for message in event.records {
        let message_id = message.message_id.clone().unwrap_or_default();
        let group = message.attributes.get("MessageGroupId").cloned();
        if group
            .as_ref()
            .is_some_and(|group| failed_groups.contains(group))
        {
            response.batch_item_failures.push(failure(message_id));
            continue;
        }
        let body = message.body.as_deref().unwrap_or_default().as_bytes();
        let applied = match PaymentEvent::from_json(body) {
            Ok(event) => service::apply_payment(&deps.pool, deps.publisher.as_ref(), &event)
                .await
                .map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = applied {
            tracing::warn!(%message_id, ?group, error = %err, "payment message not applied; SQS will redeliver it");
            failed_groups.extend(group);
            response.batch_item_failures.push(failure(message_id));
        }
    }
    Ok(response)
}

fn failure(message_id: String) -> BatchItemFailure {
    let mut failure = BatchItemFailure::default();
    failure.item_identifier = message_id;
    failure
}
