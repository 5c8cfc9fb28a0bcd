-- flash-sale schema. Runs on MySQL 8 / Aurora MySQL 3 and MariaDB >= 10.6: no vendor-only syntax.
-- All timestamps are UTC from the database clock, millisecond precision.
-- Idempotency keys compare case-sensitively (ascii_bin); ids are canonical lowercase UUIDs.
--
-- Lock order (every transaction takes row locks in this order, so none can deadlock another):
--   rows it inserts (holds, orders, payment_events) -> holds -> orders -> products
-- The product row is always locked last and held only until commit.

CREATE TABLE products (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name            VARCHAR(200) NOT NULL,
    price_cents     BIGINT NOT NULL,
    total_stock     INT NOT NULL,
    -- The counters move together in one UPDATE. reserved_stock still includes holds that lapsed
    -- but were not settled yet; readers correct for those (see stock.rs), settling moves them back.
    available_stock INT NOT NULL,
    reserved_stock  INT NOT NULL DEFAULT 0,
    sold_stock      INT NOT NULL DEFAULT 0,
    created_at      DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT products_price_positive CHECK (price_cents > 0),
    CONSTRAINT products_stock_adds_up CHECK (
        available_stock >= 0 AND reserved_stock >= 0 AND sold_stock >= 0
        AND available_stock + reserved_stock + sold_stock = total_stock
    )
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

CREATE TABLE holds (
    id              CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    product_id      BIGINT UNSIGNED NOT NULL,
    qty             INT UNSIGNED NOT NULL,
    status          ENUM('active', 'redeemed', 'expired') NOT NULL,
    -- A client's Idempotency-Key: a unique index makes concurrent repeats wait for the first.
    idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NULL,
    created_at      DATETIME(3) NOT NULL,
    expires_at      DATETIME(3) NOT NULL,
    settled_at      DATETIME(3) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY holds_idempotency_key (idempotency_key),
    -- Readers and settlement of one product: the lapsed-but-active holds are a short range.
    KEY holds_product_status_expiry (product_id, status, expires_at),
    -- The sweeper: every product's overdue holds.
    KEY holds_status_expiry (status, expires_at),
    CONSTRAINT holds_qty_positive CHECK (qty > 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- No foreign keys on the hot tables: an FK check takes a shared lock on the product row, which the
-- same transaction then upgrades to exclusive, and two such upgrades deadlock each other.
CREATE TABLE orders (
    id              CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    hold_id         CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    product_id      BIGINT UNSIGNED NOT NULL,
    qty             INT UNSIGNED NOT NULL,
    amount_cents    BIGINT NOT NULL,
    status          ENUM('pending_payment', 'paid', 'cancelled') NOT NULL,
    created_at      DATETIME(3) NOT NULL,
    updated_at      DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    -- A hold is redeemed exactly once.
    UNIQUE KEY orders_hold (hold_id),
    KEY orders_product_status (product_id, status)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- Every payment event applied, keyed by the provider's idempotency key, with what it did.
CREATE TABLE payment_events (
    idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    order_id        CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    status          ENUM('paid', 'failed') NOT NULL,
    outcome         VARCHAR(32) NOT NULL,
    applied_at      DATETIME(3) NOT NULL,
    PRIMARY KEY (idempotency_key),
    KEY payment_events_order (order_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

-- The durable payment queue of deployments without SQS (the local server): a webhook answers 202
-- only after its row is committed here; workers lease rows like an SQS visibility timeout.
CREATE TABLE payment_inbox (
    id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    order_id        CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
    status          ENUM('paid', 'failed') NOT NULL,
    state           ENUM('pending', 'done', 'dead') NOT NULL DEFAULT 'pending',
    receive_count   INT UNSIGNED NOT NULL DEFAULT 0,
    visible_at      DATETIME(3) NOT NULL,
    enqueued_at     DATETIME(3) NOT NULL,
    last_error      VARCHAR(500) NULL,
    PRIMARY KEY (id),
    -- FIFO per order: a message is taken only when no earlier one of its order is pending.
    KEY payment_inbox_order_state (order_id, state, id),
    KEY payment_inbox_state_visible (state, visible_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;
