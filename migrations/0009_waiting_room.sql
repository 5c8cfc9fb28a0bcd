-- Waiting rooms (issue 22): a product's queue of buyers in front of its sale, admitted by rate.
--
-- A product's waiting room: its admission TTL and its admission schedule (the anchors of
-- shared/src/domain/waiting_room.rs: the rate from the start, and one per change of the rate),
-- as JSON written and read by the application only. NULL: no waiting room.
ALTER TABLE products ADD COLUMN waiting_room TEXT NULL;

-- One place per buyer and product. The id is the ticket: after the start, entry `id` has position
-- P + (id - D), where P and D are its product's draw (below); ids are a table-wide AUTO_INCREMENT,
-- so a product's positions skip the ids other products' queues (and repeated joins) took.
CREATE TABLE queue_entries (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    product_id  BIGINT UNSIGNED NOT NULL,
    buyer_id    VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    joined_at   DATETIME(3) NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY queue_entries_buyer (product_id, buyer_id),
    -- (product_id, id): the product's last ticket in one index dive, and its entries in id order.
    KEY queue_entries_product (product_id)
) ENGINE = InnoDB;

-- The draw of a product's pre-queue, made once at the start: the entries up to `last_pre_queue_id`
-- (D; `pre_queue_size` of them, P) take positions 1..P in the order of SHA-256(seed, id).
-- The row is inserted first, to claim the draw (a second drawer fails on the key before reading
-- anything); P and D are NULL until its drawer has counted the pre-queue. `finished_at` is set
-- once every position is written; `claimed_at` is when its drawer last started, so that another
-- may take over a drawer that died.
CREATE TABLE queue_draws (
    product_id          BIGINT UNSIGNED NOT NULL,
    seed                BINARY(16) NOT NULL,
    pre_queue_size      BIGINT UNSIGNED NULL,
    last_pre_queue_id   BIGINT UNSIGNED NULL,
    claimed_at          DATETIME(3) NOT NULL,
    finished_at         DATETIME(3) NULL,
    PRIMARY KEY (product_id)
) ENGINE = InnoDB;

-- The drawn positions of pre-queue entries, written in position order in chunks (append-only).
CREATE TABLE queue_positions (
    entry_id    BIGINT UNSIGNED NOT NULL,
    position    BIGINT UNSIGNED NOT NULL,
    PRIMARY KEY (entry_id)
) ENGINE = InnoDB;

-- join_queue: a buyer's join, in one round trip. Reads the buyer's entry first, so a repeated
-- join takes no id (an INSERT that fails on the unique key would take one, and leave a position
-- no one holds); inserts it when there is none (a concurrent join of the same buyer inserting
-- first makes this one fail on the unique key and answer with that one). Answers one row: the
-- entry with its drawn position and its product's draw, whether this call made it (`joined`),
-- and the database's clock. Every statement commits on its own (autocommit): nothing is locked
-- past it.
CREATE PROCEDURE join_queue(
    IN p_product_id BIGINT UNSIGNED,
    IN p_buyer_id VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin
)
BEGIN
    DECLARE v_id BIGINT UNSIGNED DEFAULT NULL;
    DECLARE v_joined TINYINT DEFAULT 0;
    SELECT id INTO v_id FROM queue_entries
     WHERE product_id = p_product_id AND buyer_id = p_buyer_id;
    IF v_id IS NULL THEN
        BEGIN
            DECLARE CONTINUE HANDLER FOR 1062 SET v_joined = 0;
            SET v_joined = 1;
            INSERT INTO queue_entries (product_id, buyer_id, joined_at)
            VALUES (p_product_id, p_buyer_id, UTC_TIMESTAMP(3));
        END;
        IF v_joined = 1 THEN
            SET v_id = LAST_INSERT_ID();
        ELSE
            SELECT id INTO v_id FROM queue_entries
             WHERE product_id = p_product_id AND buyer_id = p_buyer_id;
        END IF;
    END IF;
    SELECT e.id, e.joined_at, q.position AS drawn_position, d.pre_queue_size, d.last_pre_queue_id,
           d.product_id IS NOT NULL AS draw_claimed, v_joined AS joined, UTC_TIMESTAMP(3) AS db_now
      FROM queue_entries e
      LEFT JOIN queue_positions q ON q.entry_id = e.id
      LEFT JOIN queue_draws d ON d.product_id = e.product_id
     WHERE e.id = v_id;
END;
