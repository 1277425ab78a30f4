-- Intake's state: the incidents it accepted with their status projection, what people did about them,
-- the idempotency keys of each integration, and the acknowledgement-link tokens already spent.

CREATE TABLE incidents (
    id                      uuid PRIMARY KEY,
    reference               text NOT NULL UNIQUE,
    school_id               text NOT NULL,
    integration_id          text NOT NULL,
    correlation_id          text NOT NULL,
    category                text NOT NULL,
    risk_area               text NOT NULL,
    child_at_immediate_risk boolean NOT NULL,
    occurred_at             timestamptz NOT NULL,
    report                  jsonb NOT NULL,
    status                  text NOT NULL DEFAULT 'received' CHECK (status IN (
                                'received', 'triaged', 'escalated', 'acknowledged', 'actions_recorded', 'closed')),
    incident_class          text,
    urgency                 text,
    escalation_level        integer,
    received_at             timestamptz NOT NULL,
    updated_at              timestamptz NOT NULL,
    closed_at               timestamptz
);
CREATE INDEX incidents_school_received ON incidents (school_id, received_at);

CREATE TABLE acknowledgements (
    id              uuid PRIMARY KEY,
    incident_id     uuid NOT NULL REFERENCES incidents (id),
    event_id        text NOT NULL UNIQUE,
    by_role         text NOT NULL,
    by_name         text,
    person_id       text,
    via             text NOT NULL,
    notification_id text,
    at              timestamptz NOT NULL
);
CREATE INDEX acknowledgements_incident ON acknowledgements (incident_id, at);

CREATE TABLE incident_actions (
    id          uuid PRIMARY KEY,
    incident_id uuid NOT NULL REFERENCES incidents (id),
    action      text NOT NULL,
    by_role     text NOT NULL,
    by_name     text,
    person_id   text,
    at          timestamptz NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX incident_actions_incident ON incident_actions (incident_id, at);

-- Who has been told, as notify reports it (notifications.*).
CREATE TABLE incident_notifications (
    notification_id text PRIMARY KEY,
    incident_id     uuid NOT NULL REFERENCES incidents (id),
    recipient_role  text NOT NULL,
    level           integer,
    state           text NOT NULL CHECK (state IN ('requested', 'delivered', 'failed')),
    channel         text,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX incident_notifications_incident ON incident_notifications (incident_id);

-- Idempotency-Key per integration: the hash of the first body and the answer it got.
CREATE TABLE idempotency_keys (
    integration_id text NOT NULL,
    key            text NOT NULL,
    request_hash   text NOT NULL,
    status_code    integer NOT NULL,
    response       jsonb NOT NULL,
    created_at     timestamptz NOT NULL,
    PRIMARY KEY (integration_id, key)
);

-- One-time acknowledgement links: a token id here has been used and never works again.
CREATE TABLE used_ack_tokens (
    token_id    text PRIMARY KEY,
    incident_id uuid NOT NULL REFERENCES incidents (id),
    used_at     timestamptz NOT NULL
);

-- The app role writes facts and moves the status projection forward; it never deletes.
GRANT SELECT, INSERT, UPDATE ON incidents, incident_notifications TO @app_role@;
GRANT SELECT, INSERT ON acknowledgements, incident_actions, idempotency_keys, used_ack_tokens TO @app_role@;
