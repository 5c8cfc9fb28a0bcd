//! Domain events published to an EventBridge bus with source `flash-sale`.

use async_trait::async_trait;
use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::error::DisplayErrorContext;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::domain::events::DomainEvent;
use crate::error::Error;
use crate::ports::EventPublisher;

pub const SOURCE: &str = "flash-sale";

pub struct EventBridgePublisher {
    client: Client,
    bus_name: String,
}

impl EventBridgePublisher {
    pub fn new(client: Client, bus_name: String) -> Self {
        Self { client, bus_name }
    }
}

#[async_trait]
impl EventPublisher for EventBridgePublisher {
    async fn publish(&self, events: &[DomainEvent]) -> Result<Vec<String>, Error> {
        let entries = events
            .iter()
            .map(|event| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(SOURCE)
                    .detail_type(&event.event_type)
                    .detail(event.detail.to_string())
                    .build()
            })
            .collect();
        let output = self
            .client
            .put_events()
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|err| Error::Internal(format!("PutEvents: {}", DisplayErrorContext(&err))))?;
        // Results come back in the order of the entries; a failed one carries an error code.
        let accepted = events
            .iter()
            .zip(output.entries())
            .filter(|(_, result)| result.error_code().is_none())
            .map(|(event, _)| event.id.clone())
            .collect::<Vec<_>>();
        if output.failed_entry_count() > 0 {
            tracing::warn!(
                failed = output.failed_entry_count(),
                "EventBridge refused some events; they stay in the outbox"
            );
        }
        Ok(accepted)
    }
}
