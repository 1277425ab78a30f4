-- Re-drive from the outbox (common.broker_watch): per topic, the highest outbox id up to which every
-- consumer of the topic has committed past the event, so a broker that loses its log needs only the rest.
CREATE TABLE outbox_safe_point (
    topic      text PRIMARY KEY,
    safe_id    bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_topic_id ON outbox (topic, id);
ALTER TABLE outbox ADD COLUMN redriven integer NOT NULL DEFAULT 0;

GRANT SELECT, INSERT, UPDATE ON outbox_safe_point TO @app_role@;
