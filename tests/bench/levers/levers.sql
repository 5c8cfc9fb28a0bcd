-- The shapes `levers.py` measures, created beside the service's own schema (migrations applied
-- first) in the levers' database. Each is one way to make a hold of one unit of product 1; the
-- service's own shape is `CALL reserve_hold_v2`, from the migrations. Not the product: a
-- laboratory, each shape cut down to what it needs to show one lever. Run by the mariadb client.

-- The classic row-lock design's tables, as the bench's `rowlock-*` baselines make them.
CREATE TABLE rowlock_products (
    id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
    available INT NOT NULL,
    reserved INT NOT NULL,
    CONSTRAINT rowlock_available CHECK (available >= 0)
) ENGINE = InnoDB;
CREATE TABLE rowlock_holds (
    id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
    product_id BIGINT UNSIGNED NOT NULL,
    qty INT UNSIGNED NOT NULL,
    status ENUM('active', 'expired') NOT NULL,
    created_at DATETIME(3) NOT NULL,
    expires_at DATETIME(3) NOT NULL,
    KEY rowlock_holds_status_expiry (status, expires_at)
) ENGINE = InnoDB;

-- The service's holds with fewer indexes: without the sweeper's (status, expires_at) and the
-- per-buyer limit's (buyer, product, status, expires_at): three left; then without the
-- Idempotency-Key's unique index too: two left (the primary key and the readers' range).
CREATE TABLE holds_three_indexes LIKE holds;
ALTER TABLE holds_three_indexes DROP KEY holds_status_expiry, DROP KEY holds_buyer_product;
CREATE TABLE holds_two_indexes LIKE holds_three_indexes;
ALTER TABLE holds_two_indexes DROP KEY holds_buyer_idempotency_key;

-- A per-buyer counter of units, for the lever that would replace the limit's two sums.
CREATE TABLE buyer_units (
    product_id BIGINT UNSIGNED NOT NULL,
    buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    units INT UNSIGNED NOT NULL,
    PRIMARY KEY (product_id, buyer_id)
) ENGINE = InnoDB;

-- Bodies below end with // (the mariadb client's DELIMITER), their statements with ;.
DELIMITER //

-- The one-statement shape (../shared/HOT-PATH.md): an autocommitted INSERT whose BEFORE INSERT
-- trigger takes the units, or refuses the row.
CREATE TABLE holds_by_trigger LIKE holds;
CREATE TRIGGER holds_by_trigger_reserve BEFORE INSERT ON holds_by_trigger FOR EACH ROW
BEGIN
    UPDATE stock_buckets
       SET available_stock = available_stock - NEW.qty, reserved_stock = reserved_stock + NEW.qty
     WHERE product_id = NEW.product_id AND bucket = NEW.bucket AND available_stock >= NEW.qty;
    IF ROW_COUNT() = 0 THEN
        SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'insufficient_stock';
    END IF;
END //

-- The least a procedure can do for a hold: no terms read, no limit, no walk, no checks; the
-- transaction, the row, the units, the commit and the answer. `p_table` picks the holds table.
CREATE PROCEDURE hold_bare(
    IN p_hold_id CHAR(36) CHARACTER SET ascii,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_table TINYINT
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_expires DATETIME(3) DEFAULT v_now + INTERVAL 600 SECOND;
    START TRANSACTION;
    IF p_table = 5 THEN
        INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
        VALUES (p_hold_id, 1, p_buyer_id, 0, 1, 'active', v_now, v_expires);
    ELSEIF p_table = 3 THEN
        INSERT INTO holds_three_indexes (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
        VALUES (p_hold_id, 1, p_buyer_id, 0, 1, 'active', v_now, v_expires);
    ELSE
        INSERT INTO holds_two_indexes (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
        VALUES (p_hold_id, 1, p_buyer_id, 0, 1, 'active', v_now, v_expires);
    END IF;
    UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1
     WHERE product_id = 1 AND bucket = 0 AND available_stock >= 1;
    COMMIT;
    SELECT 'held' AS outcome, 0 AS bucket, v_expires AS expires_at, v_now AS db_now;
END //

-- hold_bare with the product's terms read first, as any hold must (the sale window, the limit,
-- the bucket count): what that one read costs inside a procedure.
CREATE PROCEDURE hold_bare_with_terms(
    IN p_hold_id CHAR(36) CHARACTER SET ascii,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_expires DATETIME(3) DEFAULT v_now + INTERVAL 600 SECOND;
    DECLARE v_found INT;
    DECLARE v_buckets SMALLINT UNSIGNED;
    DECLARE v_limit INT UNSIGNED;
    DECLARE v_starts DATETIME(3);
    DECLARE v_ends DATETIME(3);
    SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at), MAX(sale_ends_at)
      INTO v_found, v_buckets, v_limit, v_starts, v_ends
      FROM products WHERE id = 1;
    START TRANSACTION;
    INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
    VALUES (p_hold_id, 1, p_buyer_id, 0, 1, 'active', v_now, v_expires);
    UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1
     WHERE product_id = 1 AND bucket = 0 AND available_stock >= 1;
    COMMIT;
    SELECT 'held' AS outcome, 0 AS bucket, v_expires AS expires_at, v_now AS db_now;
END //

-- hold_bare_with_terms with what reserve_hold_v2 does around it on the way to a hold: the
-- handler, the window's checks, the bucket picked, the outcome, the answer of nine columns.
CREATE PROCEDURE hold_checked(
    IN p_hold_id CHAR(36) CHARACTER SET ascii,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_expires DATETIME(3) DEFAULT v_now + INTERVAL 600 SECOND;
    DECLARE v_found INT;
    DECLARE v_buckets SMALLINT UNSIGNED;
    DECLARE v_limit INT UNSIGNED;
    DECLARE v_starts DATETIME(3);
    DECLARE v_ends DATETIME(3);
    DECLARE v_bucket SMALLINT UNSIGNED;
    DECLARE v_outcome VARCHAR(24) DEFAULT 'no_bucket_has_enough';
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;
    attempt: BEGIN
        SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at), MAX(sale_ends_at)
          INTO v_found, v_buckets, v_limit, v_starts, v_ends
          FROM products WHERE id = 1;
        IF v_found = 0 THEN
            SET v_outcome = 'product_not_found';
            LEAVE attempt;
        END IF;
        IF v_starts IS NOT NULL AND v_now < v_starts THEN
            SET v_outcome = 'sale_not_started';
            LEAVE attempt;
        END IF;
        IF v_ends IS NOT NULL AND v_now >= v_ends THEN
            SET v_outcome = 'sale_ended';
            LEAVE attempt;
        END IF;
        SET v_bucket = 7 MOD v_buckets;
        START TRANSACTION;
        INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
        VALUES (p_hold_id, 1, p_buyer_id, v_bucket, 1, 'active', v_now, v_expires);
        UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1
         WHERE product_id = 1 AND bucket = v_bucket AND available_stock >= 1;
        IF ROW_COUNT() = 1 THEN
            COMMIT;
            SET v_outcome = 'held';
            LEAVE attempt;
        END IF;
        ROLLBACK;
    END attempt;
    SELECT v_outcome AS outcome, v_bucket AS bucket, v_expires AS expires_at, v_now AS db_now,
           v_limit AS max_per_buyer, v_starts AS sale_starts_at, v_ends AS sale_ends_at,
           0 AS held, NULL AS available;
END //

-- hold_bare_with_terms on product 2, whose limit is kept as reserve_hold_v2 keeps it: the buyer's
-- row locked (here always a new one), then their active holds and live orders summed.
CREATE PROCEDURE hold_limited_by_sums(
    IN p_hold_id CHAR(36) CHARACTER SET ascii,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_expires DATETIME(3) DEFAULT v_now + INTERVAL 600 SECOND;
    DECLARE v_found INT;
    DECLARE v_buckets SMALLINT UNSIGNED;
    DECLARE v_limit INT UNSIGNED;
    DECLARE v_starts DATETIME(3);
    DECLARE v_ends DATETIME(3);
    DECLARE v_held BIGINT DEFAULT 0;
    SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at), MAX(sale_ends_at)
      INTO v_found, v_buckets, v_limit, v_starts, v_ends
      FROM products WHERE id = 2;
    START TRANSACTION;
    INSERT INTO buyer_limits (product_id, buyer_id) VALUES (2, p_buyer_id)
        ON DUPLICATE KEY UPDATE buyer_id = buyer_id;
    SELECT COALESCE(SUM(qty), 0) INTO v_held FROM holds
     WHERE buyer_id = p_buyer_id AND product_id = 2 AND status = 'active' AND expires_at > UTC_TIMESTAMP(3);
    SELECT v_held + COALESCE(SUM(qty), 0) INTO v_held FROM orders
     WHERE buyer_id = p_buyer_id AND product_id = 2
       AND (status = 'paid' OR (status = 'pending_payment' AND cancel_at > UTC_TIMESTAMP(3)));
    INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
    VALUES (p_hold_id, 2, p_buyer_id, 0, 1, 'active', v_now, v_expires);
    UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1
     WHERE product_id = 2 AND bucket = 0 AND available_stock >= 1;
    COMMIT;
    SELECT 'held' AS outcome, 0 AS bucket, v_expires AS expires_at, v_now AS db_now;
END //

-- The same limit from a counter of the buyer's units, added to in the statement that locks the
-- buyer's row (a design the service does not have: see the bench README for what it would take).
CREATE PROCEDURE hold_limited_by_counter(
    IN p_hold_id CHAR(36) CHARACTER SET ascii,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_expires DATETIME(3) DEFAULT v_now + INTERVAL 600 SECOND;
    DECLARE v_found INT;
    DECLARE v_buckets SMALLINT UNSIGNED;
    DECLARE v_limit INT UNSIGNED;
    DECLARE v_starts DATETIME(3);
    DECLARE v_ends DATETIME(3);
    SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at), MAX(sale_ends_at)
      INTO v_found, v_buckets, v_limit, v_starts, v_ends
      FROM products WHERE id = 2;
    START TRANSACTION;
    INSERT INTO buyer_units (product_id, buyer_id, units) VALUES (2, p_buyer_id, 1)
        ON DUPLICATE KEY UPDATE units = IF(units + VALUES(units) <= v_limit, units + VALUES(units), units);
    INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
    VALUES (p_hold_id, 2, p_buyer_id, 0, 1, 'active', v_now, v_expires);
    UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1
     WHERE product_id = 2 AND bucket = 0 AND available_stock >= 1;
    COMMIT;
    SELECT 'held' AS outcome, 0 AS bucket, v_expires AS expires_at, v_now AS db_now;
END //

-- hold_limited_by_sums with both sums in one statement.
CREATE PROCEDURE hold_limited_by_one_sum(
    IN p_hold_id CHAR(36) CHARACTER SET ascii,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_expires DATETIME(3) DEFAULT v_now + INTERVAL 600 SECOND;
    DECLARE v_found INT;
    DECLARE v_buckets SMALLINT UNSIGNED;
    DECLARE v_limit INT UNSIGNED;
    DECLARE v_starts DATETIME(3);
    DECLARE v_ends DATETIME(3);
    DECLARE v_held BIGINT DEFAULT 0;
    SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at), MAX(sale_ends_at)
      INTO v_found, v_buckets, v_limit, v_starts, v_ends
      FROM products WHERE id = 2;
    START TRANSACTION;
    INSERT INTO buyer_limits (product_id, buyer_id) VALUES (2, p_buyer_id)
        ON DUPLICATE KEY UPDATE buyer_id = buyer_id;
    SELECT (SELECT COALESCE(SUM(qty), 0) FROM holds
             WHERE buyer_id = p_buyer_id AND product_id = 2 AND status = 'active' AND expires_at > v_now)
         + (SELECT COALESCE(SUM(qty), 0) FROM orders
             WHERE buyer_id = p_buyer_id AND product_id = 2
               AND (status = 'paid' OR (status = 'pending_payment' AND cancel_at > v_now)))
      INTO v_held;
    INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, created_at, expires_at)
    VALUES (p_hold_id, 2, p_buyer_id, 0, 1, 'active', v_now, v_expires);
    UPDATE stock_buckets SET available_stock = available_stock - 1, reserved_stock = reserved_stock + 1
     WHERE product_id = 2 AND bucket = 0 AND available_stock >= 1;
    COMMIT;
    SELECT 'held' AS outcome, 0 AS bucket, v_expires AS expires_at, v_now AS db_now;
END //

DELIMITER ;
