-- The evidence log: one hash chain per school (audit.chain). Append-only at the database level:
-- the tables belong to the NOLOGIN owner role, the service's role may only INSERT and SELECT, and
-- triggers refuse UPDATE, DELETE and TRUNCATE for every role. ENABLE ALWAYS keeps them firing under
-- session_replication_role = replica. A superuser can still disable them: the chain and the signed
-- checkpoints (kept outside the database too) are what detect that.
CREATE TABLE audit_records (
    pos         bigint GENERATED ALWAYS AS IDENTITY,          -- order of arrival (what verification reads)
    school_id   text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 1),
    event_id    text NOT NULL UNIQUE,
    topic       text NOT NULL,
    event       bytea NOT NULL,                                -- the event's canonical bytes
    hash        bytea NOT NULL CHECK (length(hash) = 32),
    prev_hash   bytea NOT NULL CHECK (length(prev_hash) = 32),
    recorded_at timestamptz NOT NULL,
    PRIMARY KEY (school_id, seq)
);
CREATE INDEX audit_records_pos ON audit_records (school_id, pos);
CREATE INDEX audit_records_recorded_at ON audit_records (school_id, recorded_at);

CREATE TABLE audit_checkpoints (
    school_id text NOT NULL,
    size      bigint NOT NULL CHECK (size >= 0),
    root_hash bytea NOT NULL CHECK (length(root_hash) = 32),
    note      text NOT NULL,                                   -- C2SP signed note of the tlog-checkpoint
    signed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (school_id, size)
);

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % on % is refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_records_no_update_delete BEFORE UPDATE OR DELETE ON audit_records
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_update_delete BEFORE UPDATE OR DELETE ON audit_checkpoints
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoints_no_truncate BEFORE TRUNCATE ON audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

ALTER TABLE audit_records ENABLE ALWAYS TRIGGER audit_records_no_update_delete;
ALTER TABLE audit_records ENABLE ALWAYS TRIGGER audit_records_no_truncate;
ALTER TABLE audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_no_update_delete;
ALTER TABLE audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_no_truncate;

REVOKE ALL ON audit_records, audit_checkpoints FROM PUBLIC;
GRANT INSERT, SELECT ON audit_records, audit_checkpoints TO @app_role@;

-- The live incident projection (rebuilt from the log by replay to show they agree): ordinary state.
CREATE TABLE incident_projection (
    incident_id text PRIMARY KEY,
    school_id   text NOT NULL,
    state       jsonb NOT NULL,
    last_seq    bigint NOT NULL
);
CREATE INDEX incident_projection_school ON incident_projection (school_id);
GRANT INSERT, SELECT, UPDATE ON incident_projection TO @app_role@;

