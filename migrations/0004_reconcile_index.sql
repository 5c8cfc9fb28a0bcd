-- Reconciliation sums the live orders (every order ever paid) per stock bucket on every sweep:
-- this index carries every column it reads, so the sum never touches the rows. Holds need none:
-- active holds are few and holds_status_expiry finds them.
ALTER TABLE orders ADD KEY orders_status_product_bucket (status, product_id, bucket, qty);
