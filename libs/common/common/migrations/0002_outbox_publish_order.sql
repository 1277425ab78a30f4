-- The order in which the relay published rows: each publishing pass takes the next number, and publishes its
-- rows in id order. Ids alone are not that order: a transaction that took its id first may commit after a
-- later one was published (common.broker_watch reads offsets in this order, not in id order).
CREATE SEQUENCE outbox_publish_pass;
ALTER TABLE outbox ADD COLUMN published_pass bigint;

GRANT USAGE ON SEQUENCE outbox_publish_pass TO @app_role@;
