//! The payment queue as an SQS FIFO queue: one message group per order keeps each order's
//! events in order; the deduplication id comes from the provider's idempotency key.

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::DisplayErrorContext;
use sha2::{Digest, Sha256};

use crate::domain::payment::PaymentEvent;
use crate::error::Error;
use crate::ports::PaymentQueue;

pub struct SqsPaymentQueue {
    client: Client,
    queue_url: String,
}

impl SqsPaymentQueue {
    pub fn new(client: Client, queue_url: String) -> Self {
        Self { client, queue_url }
    }
}

/// At most 128 characters of a restricted set: a hash of the key fits whatever the key holds.
pub fn deduplication_id(idempotency_key: &str) -> String {
    hex::encode(Sha256::digest(idempotency_key.as_bytes()))
}

#[async_trait]
impl PaymentQueue for SqsPaymentQueue {
    async fn enqueue(&self, event: &PaymentEvent) -> Result<(), Error> {
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(event.to_queue_message())
            .message_group_id(event.order_id.as_str())
            .message_deduplication_id(deduplication_id(&event.idempotency_key))
            .send()
            .await
            .map_err(|err| Error::QueueUnavailable(DisplayErrorContext(&err).to_string()))?;
        Ok(())
    }
}
