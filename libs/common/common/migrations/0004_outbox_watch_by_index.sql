-- The broker watch reads, every few seconds, where publishing stands: the first row not yet placed on the broker
-- (unpublished, or re-driven) among every retained row (seven days of them by default). Without an index for
-- that predicate each read was a scan of the whole table: 0.7 s at 300,000 rows. These rows are few.
CREATE INDEX outbox_not_placed ON outbox (id) WHERE published_at IS NULL OR partition IS NULL;

-- The check made under the relay lock (the relay publishes nothing meanwhile) looks only at the passes published
-- since the outbox was read: found by their pass number, not by reading every row not yet known safe (50-100 ms
-- at 500 reports/s into triage, once a check).
CREATE INDEX outbox_by_publish_pass ON outbox (published_pass) WHERE published_pass IS NOT NULL;
