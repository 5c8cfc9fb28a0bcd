-- Split stock: a product's counters move to one or more bucket rows, so holds on one hot product
-- can lock different rows. A hold or order remembers its bucket; every unit moves only inside its
-- bucket, except when the reservation slow path consolidates buckets (locking all of them, in
-- bucket order). Each bucket keeps its own total, so the "adds up" CHECK stays a per-row guarantee;
-- the product's total_stock is the sum of its buckets' totals.
CREATE TABLE stock_buckets (
    product_id      BIGINT UNSIGNED NOT NULL,
    bucket          SMALLINT UNSIGNED NOT NULL,
    total_stock     INT NOT NULL,
    available_stock INT NOT NULL,
    reserved_stock  INT NOT NULL DEFAULT 0,
    sold_stock      INT NOT NULL DEFAULT 0,
    PRIMARY KEY (product_id, bucket),
    CONSTRAINT stock_buckets_adds_up CHECK (
        available_stock >= 0 AND reserved_stock >= 0 AND sold_stock >= 0
        AND available_stock + reserved_stock + sold_stock = total_stock
    )
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_unicode_ci;

INSERT INTO stock_buckets (product_id, bucket, total_stock, available_stock, reserved_stock, sold_stock)
SELECT id, 0, total_stock, available_stock, reserved_stock, sold_stock FROM products;

ALTER TABLE products ADD COLUMN stock_buckets SMALLINT UNSIGNED NOT NULL DEFAULT 1 AFTER total_stock;
ALTER TABLE products DROP CONSTRAINT products_stock_adds_up;
ALTER TABLE products DROP COLUMN available_stock, DROP COLUMN reserved_stock, DROP COLUMN sold_stock;

ALTER TABLE holds ADD COLUMN bucket SMALLINT UNSIGNED NOT NULL DEFAULT 0 AFTER product_id;
ALTER TABLE orders ADD COLUMN bucket SMALLINT UNSIGNED NOT NULL DEFAULT 0 AFTER product_id;
