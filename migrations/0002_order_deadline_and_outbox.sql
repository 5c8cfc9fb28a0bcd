-- An order must be paid by payment_due_at (ORDER_PAYMENT_TTL_SECONDS after it was created). Like a
-- hold's expiry, the deadline takes effect for readers the moment it passes; a trigger, the sweeper or
-- the payment that arrives too late settles the row (pending_payment -> cancelled, units back).
ALTER TABLE orders ADD COLUMN payment_due_at DATETIME(3) NULL AFTER created_at;
UPDATE orders SET payment_due_at = created_at + INTERVAL 900 SECOND WHERE payment_due_at IS NULL;
ALTER TABLE orders MODIFY COLUMN payment_due_at DATETIME(3) NOT NULL;
ALTER TABLE orders ADD KEY orders_product_status_due (product_id, status, payment_due_at);
ALTER TABLE orders ADD KEY orders_status_due (status, payment_due_at);

-- Domain events, written in the same transaction as the change they describe and published after
-- commit; whatever is still unpublished is published again by the sweeper (at least once; consumers
-- deduplicate by id, which never changes).
CREATE TABLE outbox_events (
    id              CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    event_type      VARCHAR(40) NOT NULL,
    detail          TEXT NOT NULL,
    created_at      DATETIME(3) NOT NULL,
    published_at    DATETIME(3) NULL,
    PRIMARY KEY (id),
    KEY outbox_events_unpublished (published_at, created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
