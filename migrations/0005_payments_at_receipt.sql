-- Payments are judged by when the provider's event was received, not when it was applied: a `paid`
-- received before an order's payment_due_at pays it however late it is applied (retries, lock
-- waits, a backlog). So that such an event never finds its order cancelled because we were slow, an
-- unpaid order lapses (reads as cancelled, and the sweeper and its trigger cancel it) only at
-- cancel_at = payment_due_at + PAYMENT_GRACE_SECONDS, fixed when the order is created. Orders made
-- before this migration keep the rule they were made under: they lapse at their payment_due_at.
ALTER TABLE orders ADD COLUMN cancel_at DATETIME(3) NULL AFTER payment_due_at;
UPDATE orders SET cancel_at = payment_due_at WHERE cancel_at IS NULL;
ALTER TABLE orders MODIFY COLUMN cancel_at DATETIME(3) NOT NULL;
ALTER TABLE orders DROP KEY orders_product_status_due, ADD KEY orders_product_status_cancel (product_id, status, cancel_at);
ALTER TABLE orders DROP KEY orders_status_due, ADD KEY orders_status_cancel (status, cancel_at);

-- When the webhook received each event (the provider's own time is not ours to trust), and the
-- amount it reported, if any. Events queued before this migration were received at the latest
-- when they were queued.
ALTER TABLE payment_inbox ADD COLUMN received_at DATETIME(3) NULL, ADD COLUMN amount_cents BIGINT NULL;
UPDATE payment_inbox SET received_at = enqueued_at WHERE received_at IS NULL;
ALTER TABLE payment_inbox MODIFY COLUMN received_at DATETIME(3) NOT NULL;

ALTER TABLE payment_events ADD COLUMN received_at DATETIME(3) NULL AFTER status,
                           ADD COLUMN amount_cents BIGINT NULL AFTER received_at;
UPDATE payment_events SET received_at = applied_at WHERE received_at IS NULL;
ALTER TABLE payment_events MODIFY COLUMN received_at DATETIME(3) NOT NULL;
