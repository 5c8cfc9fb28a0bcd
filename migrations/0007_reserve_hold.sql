-- A hold's fast path as one statement: the application sends `CALL reserve_hold(…)` as text, one
-- round trip, and the procedure runs the whole reservation inside the server, so no row lock is
-- ever held across the network and nothing is prepared (RDS Proxy pins a connection that prepares
-- a statement; calling a procedure does not pin). This is the one place the reservation rule is
-- written; shared/src/store/holds.rs only calls it, and consolidates buckets when it reports that
-- no single bucket has the units.
--
-- The rule, in the lock order of shared/src/store/mod.rs (buyer limit row -> hold -> bucket):
--   1. the product's bucket count, sale terms and the database clock, read without a lock;
--      the sale window is checked against that clock;
--   2. a product with a per-buyer limit: the buyer's (product, buyer) row is locked, then their
--      active holds and their orders not cancelled are counted (lapsed ones do not count);
--      an anonymous buyer ('') cannot be counted, so such a product refuses them;
--   3. the hold row is inserted (a taken Idempotency-Key fails here, before any stock lock);
--   4. one conditional UPDATE per bucket, starting at bucket `p_pick MOD buckets` and going round,
--      until one has `p_qty` available: an UPDATE whose condition fails takes no lock at READ
--      COMMITTED, and the one that succeeds is followed at once by COMMIT;
--   5. no bucket has enough: everything is rolled back (the hold row goes).
-- Any error rolls the transaction back before it reaches the client (the EXIT handler), so a
-- connection never goes back to a pool inside a transaction.
--
-- It answers one row: outcome ('held', 'product_not_found', 'sale_not_started', 'sale_ended',
-- 'buyer_limit_reached' or 'no_bucket_has_enough'), the hold's bucket and expiry, the clock it
-- judged by, the sale terms and the units the buyer already had.
--
-- The parameters carry their columns' character sets and collations: a parameter is compared as
-- a column is (neither can be coerced to the other), so one of the database's default utf8mb4
-- would turn `buyer_id = p_buyer_id` into a conversion of every row's ascii value, and no index
-- on holds could serve it.
CREATE PROCEDURE reserve_hold(
    IN p_hold_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci,
    IN p_product_id BIGINT UNSIGNED,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_qty INT UNSIGNED,
    IN p_idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_ttl_ms BIGINT UNSIGNED,
    IN p_pick SMALLINT UNSIGNED
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_found INT DEFAULT 0;
    DECLARE v_buckets SMALLINT UNSIGNED;
    DECLARE v_limit INT UNSIGNED;
    DECLARE v_starts DATETIME(3);
    DECLARE v_ends DATETIME(3);
    DECLARE v_held BIGINT DEFAULT 0;
    DECLARE v_offset SMALLINT UNSIGNED DEFAULT 0;
    DECLARE v_bucket SMALLINT UNSIGNED;
    DECLARE v_expires DATETIME(3);
    DECLARE v_outcome VARCHAR(24) DEFAULT 'no_bucket_has_enough';
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;

    attempt: BEGIN
        -- Aggregates answer one row even for a missing product (no "no data" warning).
        SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at), MAX(sale_ends_at)
          INTO v_found, v_buckets, v_limit, v_starts, v_ends
          FROM products WHERE id = p_product_id;
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

        START TRANSACTION;
        IF v_limit IS NOT NULL THEN
            IF p_buyer_id = '' THEN
                ROLLBACK;
                SET v_outcome = 'buyer_limit_reached';
                LEAVE attempt;
            END IF;
            INSERT INTO buyer_limits (product_id, buyer_id) VALUES (p_product_id, p_buyer_id)
                ON DUPLICATE KEY UPDATE buyer_id = buyer_id;
            SELECT COALESCE(SUM(qty), 0) INTO v_held FROM holds
             WHERE buyer_id = p_buyer_id AND product_id = p_product_id
               AND status = 'active' AND expires_at > UTC_TIMESTAMP(3);
            SELECT v_held + COALESCE(SUM(qty), 0) INTO v_held FROM orders
             WHERE buyer_id = p_buyer_id AND product_id = p_product_id
               AND (status = 'paid' OR (status = 'pending_payment' AND cancel_at > UTC_TIMESTAMP(3)));
            IF v_held + p_qty > v_limit THEN
                ROLLBACK;
                SET v_outcome = 'buyer_limit_reached';
                LEAVE attempt;
            END IF;
        END IF;

        SET v_bucket = p_pick MOD v_buckets;
        SET v_expires = v_now + INTERVAL p_ttl_ms * 1000 MICROSECOND;
        INSERT INTO holds (id, product_id, buyer_id, bucket, qty, status, idempotency_key, created_at, expires_at)
        VALUES (p_hold_id, p_product_id, p_buyer_id, v_bucket, p_qty, 'active', p_idempotency_key, v_now, v_expires);

        WHILE v_offset < v_buckets DO
            SET v_bucket = (p_pick + v_offset) MOD v_buckets;
            UPDATE stock_buckets
               SET available_stock = available_stock - p_qty, reserved_stock = reserved_stock + p_qty
             WHERE product_id = p_product_id AND bucket = v_bucket AND available_stock >= p_qty;
            IF ROW_COUNT() = 1 THEN
                IF v_offset > 0 THEN
                    UPDATE holds SET bucket = v_bucket WHERE id = p_hold_id;
                END IF;
                COMMIT;
                SET v_outcome = 'held';
                LEAVE attempt;
            END IF;
            SET v_offset = v_offset + 1;
        END WHILE;
        ROLLBACK;
    END attempt;

    SELECT v_outcome AS outcome, v_bucket AS bucket, v_expires AS expires_at, v_now AS db_now,
           v_limit AS max_per_buyer, v_starts AS sale_starts_at, v_ends AS sale_ends_at,
           v_held AS held;
END;
