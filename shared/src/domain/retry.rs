//! How a payment event that could not be applied is retried: exponential backoff, then dead.

use std::time::Duration;

const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Deliveries before an event is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the second delivery; doubles each time, up to a minute.
    pub base_delay: Duration,
}

impl RetryPolicy {
    pub fn delay_after(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
        self.base_delay.saturating_mul(factor).min(MAX_RETRY_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_doubles_up_to_a_minute() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(500),
        };
        assert_eq!(policy.delay_after(1), Duration::from_millis(500));
        assert_eq!(policy.delay_after(2), Duration::from_secs(1));
        assert_eq!(policy.delay_after(4), Duration::from_secs(4));
        assert_eq!(policy.delay_after(30), Duration::from_secs(60));
    }
}
