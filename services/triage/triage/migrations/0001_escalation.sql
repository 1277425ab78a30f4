-- Triage's state: each incident with its FROZEN escalation chain (copied from the policy at triage time,
-- with the policy's content hash), its fencing token (generation) and cursor (level, repeat, next_due_at),
-- the reminders of its class with their due times, the notices sent, and signals that came before the report.

CREATE TABLE incidents (
    id              text PRIMARY KEY,
    reference       text NOT NULL,
    school_id       text NOT NULL,
    correlation_id  text NOT NULL,
    incident_class  text NOT NULL,
    urgency         text NOT NULL,
    risk_area       text NOT NULL,
    policy_version  text NOT NULL,
    chain           jsonb NOT NULL,
    context         jsonb NOT NULL,
    generation      integer NOT NULL DEFAULT 1,
    status          text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'closed')),
    level           integer NOT NULL,
    repeat          integer NOT NULL DEFAULT 0,
    next_due_at     timestamptz,
    exhausted       boolean NOT NULL DEFAULT false,
    triaged_at      timestamptz NOT NULL,
    acknowledged_at timestamptz,
    acknowledged_by text,
    closed_at       timestamptz,
    updated_at      timestamptz NOT NULL
);
-- The escalation timers: due rows of open incidents.
CREATE INDEX incidents_due ON incidents (next_due_at) WHERE status = 'open' AND next_due_at IS NOT NULL;

CREATE TABLE reminders (
    incident_id     text NOT NULL REFERENCES incidents (id),
    code            text NOT NULL,
    text            text NOT NULL,
    owner_role      text NOT NULL,
    owner           jsonb,
    due_at          timestamptz,
    period_seconds  double precision,
    next_notify_at  timestamptz,
    notified_count  integer NOT NULL DEFAULT 0,
    closed_at       timestamptz,
    closed_by       text,
    PRIMARY KEY (incident_id, code)
);
CREATE INDEX reminders_due ON reminders (next_notify_at) WHERE closed_at IS NULL AND next_notify_at IS NOT NULL;

CREATE TABLE notifications (
    notification_id text PRIMARY KEY,
    incident_id     text NOT NULL REFERENCES incidents (id),
    kind            text NOT NULL CHECK (kind IN ('escalation', 'reminder')),
    level           integer NOT NULL,
    repeat          integer NOT NULL,
    role            text NOT NULL,
    generation      integer NOT NULL,
    requested_at    timestamptz NOT NULL,
    failed_at       timestamptz
);
CREATE INDEX notifications_incident ON notifications (incident_id);

-- An acknowledgement or action that arrived before its incident was triaged (topics are not ordered
-- with each other); applied when the report is triaged.
CREATE TABLE early_signals (
    event_id    text PRIMARY KEY,
    incident_id text NOT NULL,
    topic       text NOT NULL,
    event       jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX early_signals_incident ON early_signals (incident_id);

GRANT SELECT, INSERT, UPDATE ON incidents, reminders, notifications TO @app_role@;
GRANT SELECT, INSERT, DELETE ON early_signals TO @app_role@;
