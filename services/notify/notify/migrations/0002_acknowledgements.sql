-- Acknowledged incidents, from incidents.acknowledged: a notice of such an incident that has not gone out yet,
-- and was requested before the acknowledgement, is withheld rather than sent (illegal-class notices excepted),
-- so nobody is woken for an incident someone already has in hand. requested_at is the request event's time.

CREATE TABLE acknowledgements (
    incident_id      text PRIMARY KEY,
    acknowledged_at  timestamptz NOT NULL,
    by_role          text NOT NULL
);

ALTER TABLE deliveries ADD COLUMN requested_at timestamptz;
ALTER TABLE deliveries DROP CONSTRAINT deliveries_state_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_state_check
    CHECK (state IN ('pending', 'held', 'sending', 'sent', 'failed', 'withheld'));

GRANT SELECT, INSERT, UPDATE ON acknowledgements TO @app_role@;
