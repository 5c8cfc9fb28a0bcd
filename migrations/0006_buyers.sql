-- Buyers: a hold and an order belong to the buyer who made them (the JWT's `sub`; '' for an
-- anonymous one when BUYER_AUTH=none). Idempotency keys are per buyer: the same key from two
-- buyers makes two holds. A hold may be released by its buyer.
ALTER TABLE holds ADD COLUMN buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '' AFTER product_id;
ALTER TABLE holds MODIFY COLUMN status ENUM('active', 'redeemed', 'expired', 'released') NOT NULL;
ALTER TABLE holds DROP KEY holds_idempotency_key,
                  ADD UNIQUE KEY holds_buyer_idempotency_key (buyer_id, idempotency_key);
-- A buyer's units of a product (the per-buyer limit): their active holds, a short range.
ALTER TABLE holds ADD KEY holds_buyer_product (buyer_id, product_id, status, expires_at);

ALTER TABLE orders ADD COLUMN buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '' AFTER product_id;
-- …and their orders not cancelled.
ALTER TABLE orders ADD KEY orders_buyer_product (buyer_id, product_id, status, cancel_at);

-- A product's sale: at most max_per_buyer units per buyer (held or bought), between
-- sale_starts_at and sale_ends_at; NULL is no limit, no start, no end.
ALTER TABLE products ADD COLUMN max_per_buyer INT UNSIGNED NULL AFTER stock_buckets,
                     ADD COLUMN sale_starts_at DATETIME(3) NULL AFTER max_per_buyer,
                     ADD COLUMN sale_ends_at DATETIME(3) NULL AFTER sale_starts_at;

-- One row per (product, buyer) with a limit to keep: a reservation locks it before it counts the
-- buyer's units, so two reservations of one buyer are serialised across every instance and
-- container, while other buyers' reservations never wait on it. It is locked before the hold and
-- the stock bucket rows, and only by reservations.
CREATE TABLE buyer_limits (
    product_id      BIGINT UNSIGNED NOT NULL,
    buyer_id        VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    PRIMARY KEY (product_id, buyer_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
