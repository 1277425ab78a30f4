-- The web app's own state: one-time sign-in links and signed-in sessions. Only SHA-256 digests of the
-- secrets are kept, so a copy of this table signs nobody in.

CREATE TABLE signin_links (
    token_sha256 text PRIMARY KEY,
    email        text NOT NULL,
    school_id    text NOT NULL,
    role         text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz
);

CREATE TABLE sessions (
    session_sha256 text PRIMARY KEY,
    email          text NOT NULL,
    name           text,
    school_id      text NOT NULL,
    role           text NOT NULL,
    created_at     timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);

GRANT SELECT, INSERT, UPDATE ON signin_links TO @app_role@;
GRANT SELECT, INSERT, DELETE ON sessions TO @app_role@;
