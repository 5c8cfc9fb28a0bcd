-- reserve_hold_v2: reserve_hold (0007) that also refuses, in the same one round trip, a
-- reservation the product cannot serve, and that can be told the product is probably sold out,
-- so that once a sale sells out a refusal costs the writer a few non-locking reads: no
-- transaction, no row inserted and rolled back, no bucket locked, no second statement from the
-- application. It is the one place the reservation rule is written (0007's text explains the
-- rest of it); reserve_hold stays for the code a deploy is replacing (migrations run before the
-- functions are updated), and a later migration drops it.
--
-- The rule, in the lock order of shared/src/store/mod.rs (buyer limit row -> hold -> bucket):
--   1. the product's bucket count, sale terms and the database clock, read without a lock;
--      the sale window is checked against that clock;
--   2. only when the caller expects too few units (`p_check_stock_first`: this process's last
--      reservation of the product was refused for want of them), the stock check of step 7
--      first, read with the terms in the same statement, so that a refusal is that one read
--      and locks and writes nothing; when it finds enough, on to step 3.
--      While a sale is selling, a hold pays nothing for this: no read of its hot bucket row
--      beyond the UPDATE's own;
--   3. a product with a per-buyer limit: the buyer's (product, buyer) row is locked, then their
--      active holds and their orders not cancelled are counted (lapsed ones do not count);
--      an anonymous buyer ('') cannot be counted, so such a product refuses them;
--   4. the hold row is inserted (a taken Idempotency-Key fails here, before any stock lock);
--   5. one conditional UPDATE of bucket `p_pick MOD buckets`; when it finds too few units, the
--      next bucket round from there that a read without a lock finds with enough, and so on
--      (each bucket at most once), until one UPDATE succeeds, followed at once by COMMIT. Not a
--      blind walk round the ring: on MariaDB a primary-key UPDATE waits for a row another
--      transaction holds even when its condition cannot match, and once it has waited and then
--      failed it keeps the lock to the end of its transaction, so two walks from different
--      starts deadlocked (tests/e2e/tests/e2e/buckets.rs shows it). A bucket read empty is not
--      touched;
--   6. no bucket has enough: everything is rolled back (the hold row goes);
--   7. the stock check, once (with the terms read again): the product's units as every reader
--      counts them, in one statement (one snapshot): the buckets' available units plus those of lapsed holds and of unpaid
--      orders past their deadline (get_product's sum). Fewer than p_qty: 'insufficient_stock'.
--      Enough, but in lapsed holds or orders not settled yet, or spread over buckets:
--      'no_bucket_has_enough' (the application settles and gathers, then calls again).
-- A refusal of a request whose Idempotency-Key already made a hold is 'replay' instead: the key's
-- hold is read with a shared lock, so a first request with it still in flight is waited for, as
-- the INSERT of step 4 would wait for it.
-- Any error rolls the transaction back before it reaches the client (the EXIT handler), so a
-- connection never goes back to a pool inside a transaction.
--
-- It answers one row: outcome ('held', 'replay', 'product_not_found', 'sale_not_started',
-- 'sale_ended', 'insufficient_stock', 'buyer_limit_reached' or 'no_bucket_has_enough'), the
-- hold's bucket and expiry, the clock it judged by, the sale terms, the units the buyer already
-- had and the units available (with 'insufficient_stock').
CREATE PROCEDURE reserve_hold_v2(
    IN p_hold_id CHAR(36) CHARACTER SET ascii COLLATE ascii_general_ci,
    IN p_product_id BIGINT UNSIGNED,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_qty INT UNSIGNED,
    IN p_idempotency_key VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin,
    IN p_ttl_ms BIGINT UNSIGNED,
    IN p_pick SMALLINT UNSIGNED,
    IN p_check_stock_first TINYINT
)
BEGIN
    DECLARE v_now DATETIME(3) DEFAULT UTC_TIMESTAMP(3);
    DECLARE v_found INT DEFAULT 0;
    DECLARE v_buckets SMALLINT UNSIGNED;
    DECLARE v_limit INT UNSIGNED;
    DECLARE v_starts DATETIME(3);
    DECLARE v_ends DATETIME(3);
    DECLARE v_held BIGINT DEFAULT 0;
    DECLARE v_counted BIGINT DEFAULT 0;
    DECLARE v_lapsed BIGINT DEFAULT 0;
    DECLARE v_available BIGINT DEFAULT NULL;
    DECLARE v_keyed INT DEFAULT 0;
    DECLARE v_reserved_first TINYINT DEFAULT 0;
    DECLARE v_offset SMALLINT UNSIGNED DEFAULT 0;
    DECLARE v_next SMALLINT UNSIGNED;
    DECLARE v_bucket SMALLINT UNSIGNED;
    DECLARE v_expires DATETIME(3);
    DECLARE v_outcome VARCHAR(24) DEFAULT 'no_bucket_has_enough';
    DECLARE EXIT HANDLER FOR SQLEXCEPTION
    BEGIN
        ROLLBACK;
        RESIGNAL;
    END;

    attempt: BEGIN
        -- At most twice round: the stock check first when the caller expects too few units,
        -- else the reservation first and the check only once it found no bucket with enough.
        stock: LOOP
            -- The product's terms, with its stock when it is to be checked, in one statement
            -- (one snapshot). Aggregates answer one row even for a missing product (no "no data"
            -- warning).
            IF p_check_stock_first OR v_reserved_first THEN
                SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at),
                       MAX(sale_ends_at),
                       (SELECT CAST(COALESCE(SUM(b.available_stock), 0) AS SIGNED)
                          FROM stock_buckets b WHERE b.product_id = p_product_id),
                       (SELECT COALESCE(SUM(h.qty), 0) FROM holds h
                         WHERE h.product_id = p_product_id AND h.status = 'active'
                           AND h.expires_at <= v_now)
                       + (SELECT COALESCE(SUM(o.qty), 0) FROM orders o
                           WHERE o.product_id = p_product_id AND o.status = 'pending_payment'
                             AND o.cancel_at <= v_now)
                  INTO v_found, v_buckets, v_limit, v_starts, v_ends, v_counted, v_lapsed
                  FROM products WHERE id = p_product_id;
            ELSE
                SELECT COUNT(*), MAX(stock_buckets), MAX(max_per_buyer), MAX(sale_starts_at),
                       MAX(sale_ends_at)
                  INTO v_found, v_buckets, v_limit, v_starts, v_ends
                  FROM products WHERE id = p_product_id;
            END IF;
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

            IF p_check_stock_first OR v_reserved_first THEN
                SET v_available = v_counted + v_lapsed;
                IF v_available < p_qty THEN
                    SET v_outcome = 'insufficient_stock';
                    LEAVE attempt;
                END IF;
                -- Lapsed units make up the rest (no bucket has them until they are settled), or
                -- the reservation found them spread over buckets: the application gathers.
                IF v_counted < p_qty OR v_reserved_first THEN
                    LEAVE attempt;
                END IF;
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

            WHILE v_bucket IS NOT NULL AND v_offset < v_buckets DO
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
                -- The next bucket round from the pick that has the units, by a read without a
                -- lock: never an UPDATE of a bucket another transaction holds empty, which would
                -- wait for it and then keep its lock (see step 5).
                SELECT MIN((bucket + v_buckets - p_pick MOD v_buckets) MOD v_buckets) INTO v_next
                  FROM stock_buckets
                 WHERE product_id = p_product_id AND available_stock >= p_qty
                   AND bucket <> v_bucket;
                SET v_bucket = (v_next + p_pick) MOD v_buckets;
            END WHILE;
            ROLLBACK;
            SET v_bucket = NULL, v_expires = NULL;
            IF p_check_stock_first THEN
                LEAVE attempt;
            END IF;
            SET v_reserved_first = 1;
        END LOOP stock;
    END attempt;

    IF p_idempotency_key IS NOT NULL
       AND v_outcome IN ('sale_not_started', 'sale_ended', 'insufficient_stock', 'buyer_limit_reached') THEN
        SELECT COUNT(*) INTO v_keyed FROM holds
         WHERE buyer_id = p_buyer_id AND idempotency_key = p_idempotency_key LOCK IN SHARE MODE;
        IF v_keyed > 0 THEN
            SET v_outcome = 'replay';
        END IF;
    END IF;

    SELECT v_outcome AS outcome, v_bucket AS bucket, v_expires AS expires_at, v_now AS db_now,
           v_limit AS max_per_buyer, v_starts AS sale_starts_at, v_ends AS sale_ends_at,
           v_held AS held, IF(v_outcome = 'insufficient_stock', v_available, NULL) AS available;
END;
