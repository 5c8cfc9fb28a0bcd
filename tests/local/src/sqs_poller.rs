//! What Lambda's SQS event source mapping does, for a local server pointed at a real queue:
//! receive a batch, hand it to the payment processor as an SQS event, delete what it applied.
//! What it reports as failed stays invisible until the visibility timeout, then comes back;
//! after the queue's `maxReceiveCount` SQS moves it to the dead-letter queue.

use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use aws_sdk_sqs::types::{Message, MessageSystemAttributeName};
use serde_json::json;

/// Long polling: an idle poller waits on the queue instead of hammering it.
const WAIT_SECONDS: i32 = 1;
const BATCH: i32 = 10;

/// Receives and processes one batch; returns how many messages were deleted (applied).
pub async fn poll_once(
    client: &Client,
    queue_url: &str,
    processor: &payment_processor::Deps,
) -> Result<usize, String> {
    let received = client
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(BATCH)
        .wait_time_seconds(WAIT_SECONDS)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .map_err(|err| DisplayErrorContext(&err).to_string())?;
    let messages = received.messages();
    if messages.is_empty() {
        return Ok(0);
    }
    let event = sqs_event(messages, queue_url)?;
    let response = payment_processor::handle(processor, event)
        .await
        .map_err(|err| err.to_string())?;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    let mut deleted = 0;
    for message in messages {
        if failed.contains(&message.message_id().unwrap_or_default()) {
            continue;
        }
        if let Some(handle) = message.receipt_handle() {
            client
                .delete_message()
                .queue_url(queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(|err| DisplayErrorContext(&err).to_string())?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

pub async fn poll_forever(client: Client, queue_url: String, processor: payment_processor::Deps) {
    loop {
        if let Err(err) = poll_once(&client, &queue_url, &processor).await {
            tracing::warn!(error = %err, "SQS poll failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The event Lambda would deliver for these messages.
fn sqs_event(messages: &[Message], queue_url: &str) -> Result<SqsEvent, String> {
    let records: Vec<serde_json::Value> = messages
        .iter()
        .map(|message| {
            let attributes: serde_json::Map<String, serde_json::Value> = message
                .attributes()
                .map(|attributes| {
                    attributes
                        .iter()
                        .map(|(name, value)| (name.as_str().to_owned(), json!(value)))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "messageId": message.message_id(),
                "receiptHandle": message.receipt_handle(),
                "body": message.body(),
                "md5OfBody": message.md5_of_body(),
                "attributes": attributes,
                "messageAttributes": {},
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_url,
            })
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).map_err(|err| err.to_string())
}
