-- One row per requested notification: its state, where it is in its channel list, and when to try next.
-- Retries are rows, not timers in memory, so a restart in the middle of a backoff resumes it.
-- 'sending' is the in-flight state: next_attempt_at is then the lease's end, after which another worker
-- may send again (the stable message id lets the receiver drop the repeat).

CREATE TABLE deliveries (
    notification_id  text PRIMARY KEY,
    incident_id      text NOT NULL,
    school_id        text NOT NULL,
    event_id         text NOT NULL,
    correlation_id   text NOT NULL,
    request          jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                         CHECK (state IN ('pending', 'held', 'sending', 'sent', 'failed')),
    channel_index    integer NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,   -- on the current channel
    total_attempts   integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL,
    received_at      timestamptz NOT NULL,
    last_error       text,
    errors           jsonb NOT NULL DEFAULT '[]'::jsonb,
    sent_channel     text,
    provider_id      text,
    message_id       text,
    finished_at      timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state IN ('pending', 'held', 'sending');

-- When each address was last sent to, for the throttling window.
CREATE TABLE address_sends (
    address_key   text PRIMARY KEY,
    last_sent_at  timestamptz NOT NULL
);

GRANT SELECT, INSERT, UPDATE ON deliveries TO @app_role@;
GRANT SELECT, INSERT, UPDATE ON address_sends TO @app_role@;
