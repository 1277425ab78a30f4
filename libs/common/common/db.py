"""PostgreSQL access: one schema and one least-privilege role per service, versioned SQL migrations.

Migrations run with the administrative URL, as a NOLOGIN owner role of the schema; the service then
works through a login role that has only the grants its migrations give it. The audit log relies on
this: its writer can INSERT and SELECT, and cannot ALTER or DISABLE TRIGGER what it does not own. Given
only that role's URL (`DB_APP_URL`), a service never holds the administrative credentials at all: someone
else migrates first (`common.migrate`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from common.settings import ServiceSettings

# A connection as handlers receive it: straight from asyncpg or borrowed from a pool.
Connection = asyncpg.Connection | PoolConnectionProxy

# Failures that pass: the database restarting or unreachable for a moment, a lost connection, a serialisation
# conflict. Work that meets one is retried, never treated as bad input.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    # A backend terminated while its connection sat idle in the pool leaves asyncpg consuming the server's
    # FATAL message; the next statement on it fails with "cannot switch to state ...; another operation (2) is
    # in progress". The connection is dead, and the pool discards it on release.
    asyncpg.exceptions.InternalClientError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
)


def unnest_columns(rows: Iterable[Sequence[object]], width: int | None = None) -> list[list[object]]:
    """Rows as the arrays a set-wise statement's `unnest($1::t[], $2::u[], ...)` takes, one per column.

    No rows give no columns unless `width` says how many: a statement given none fails with "the server expects 4
    arguments for this query, 1 was passed", which does not say why. Callers whose rows may be none pass it."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    if width is None:
        if not columns:
            raise ValueError("no rows to unnest: pass width= where there may be none")
        return columns
    if columns and len(columns) != width:
        raise ValueError(f"rows of {len(columns)} columns where {width} were expected")
    return columns or [[] for _ in range(width)]


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: str
    sql: str


@dataclass(frozen=True)
class SchemaRoles:
    schema: str

    @property
    def owner(self) -> str:
        return f"{self.schema}_owner"

    @property
    def app(self) -> str:
        return f"{self.schema}_app"


def load_migrations(package: str) -> list[Migration]:
    """Every `NNNN_name.sql` file in a package, in version order."""
    files = [f for f in resources.files(package).iterdir() if f.name.endswith(".sql")]
    return [Migration(f.name.removesuffix(".sql"), f.read_text()) for f in sorted(files, key=lambda f: f.name)]


def common_migrations() -> list[Migration]:
    """The outbox and inbox tables that every service has in its own schema."""
    return load_migrations("common.migrations")


def check_identifier(name: str) -> str:
    if not _IDENT.match(name):
        raise MigrationError(f"invalid schema name {name!r}: lower-case letters, digits and _ only")
    return name


def app_password(admin_dsn: str, role: str, configured: str | None) -> str:
    """The app role's password: configured, or derived from the admin credentials (never stored)."""
    if configured:
        return configured
    secret = (urlsplit(admin_dsn).password or "").encode()
    return hmac.new(secret, role.encode(), hashlib.sha256).hexdigest()[:40]


def dsn_for_role(admin_dsn: str, role: str, password: str) -> str:
    parts = urlsplit(admin_dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(role)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _render(sql: str, roles: SchemaRoles) -> str:
    return sql.replace("@schema@", roles.schema).replace("@app_role@", roles.app).replace(
        "@owner_role@", roles.owner
    )


async def migrate(admin_dsn: str, schema: str, migrations: list[Migration], password: str) -> None:
    """Create the schema and its roles if needed, then apply each migration not yet applied, once."""
    roles = SchemaRoles(check_identifier(schema))
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", f"migrate:{schema}")
        await _ensure_roles(conn, roles, password)
        await conn.execute(f"SET ROLE {roles.owner}")
        await conn.execute(f"SET search_path = {schema}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        # The app role may read which migrations were applied (`open_migrated` checks), nothing more.
        await conn.execute(f"GRANT SELECT ON schema_migrations TO {roles.app}")
        applied = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for migration in migrations:
            if migration.version in applied:
                continue
            async with conn.transaction():
                try:
                    await conn.execute(_render(migration.sql, roles))
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {migration.version} failed in {schema}: {exc}") from exc
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", migration.version)
        await conn.execute("RESET ROLE")
    finally:
        await conn.close()


async def _ensure_roles(conn: asyncpg.Connection, roles: SchemaRoles, password: str) -> None:
    existing = {r["rolname"] for r in await conn.fetch(
        "SELECT rolname FROM pg_roles WHERE rolname = ANY($1::text[])", [roles.owner, roles.app]
    )}
    if roles.owner not in existing:
        await conn.execute(f"CREATE ROLE {roles.owner} NOLOGIN")
    quoted_password = password.replace("'", "''")
    verb = "ALTER" if roles.app in existing else "CREATE"
    await conn.execute(f"{verb} ROLE {roles.app} LOGIN PASSWORD '{quoted_password}'")
    await conn.execute(f"GRANT {roles.owner} TO CURRENT_USER")
    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {roles.schema} AUTHORIZATION {roles.owner}")
    await conn.execute(f"GRANT USAGE ON SCHEMA {roles.schema} TO {roles.app}")


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces asyncpg's reset on release (`pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`), one
    round trip per use of a connection. The services leave no session state behind: their advisory locks are
    transaction-scoped (the outbox relay's session lock is released at the end of its pass, or its connection
    closed), their settings are startup parameters, and the LISTEN loop unlistens itself. asyncpg
    still rolls back a stray transaction and forgets local listeners before calling this."""


async def create_pool(dsn: str, schema: str, *, max_size: int = 10, min_size: int = 1) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        server_settings={"search_path": check_identifier(schema), "application_name": schema},
        reset=_keep_session,
    )
    assert pool is not None
    return pool


async def prepare_database(
    admin_dsn: str, schema: str, service_migrations: list[Migration], *, configured_password: str | None,
    max_size: int = 10,
) -> asyncpg.Pool:
    """Migrate the service's schema and open a pool as its least-privilege role."""
    app_dsn = await migrate_schema(admin_dsn, schema, service_migrations, configured_password=configured_password)
    return await create_pool(app_dsn, schema, max_size=max_size)


async def migrate_schema(
    admin_dsn: str, schema: str, service_migrations: list[Migration], *, configured_password: str | None
) -> str:
    """Apply the common and the service's migrations to its schema (creating its roles); returns the URL of its
    least-privilege role."""
    role, password = _app_login(admin_dsn, schema, configured_password)
    await migrate(admin_dsn, schema, common_migrations() + service_migrations, password)
    return dsn_for_role(admin_dsn, role, password)


def _app_login(admin_dsn: str, schema: str, configured_password: str | None) -> tuple[str, str]:
    """The schema's least-privilege login role and its password."""
    role = SchemaRoles(check_identifier(schema)).app
    return role, app_password(admin_dsn, role, configured_password)


async def open_migrated(
    app_dsn: str, schema: str, service_migrations: list[Migration], *, max_size: int = 10
) -> asyncpg.Pool:
    """A pool as the service's least-privilege role on a schema that someone else migrated; refuses a schema
    that lacks a migration this code needs (naming them), rather than running on tables it does not expect."""
    pool = await create_pool(app_dsn, schema, max_size=max_size)
    try:
        applied = {r["version"] for r in await pool.fetch("SELECT version FROM schema_migrations")}
    except (asyncpg.UndefinedTableError, asyncpg.InsufficientPrivilegeError):
        applied = set()
    missing = [m.version for m in common_migrations() + service_migrations if m.version not in applied]
    if missing:
        await pool.close()
        raise MigrationError(
            f"schema {schema} lacks migrations {', '.join(missing)}: apply them with the administrative URL first "
            "(python -m common.migrate <service>, with DATABASE_URL set)"
        )
    return pool


def app_dsn_of(settings: ServiceSettings) -> str:
    """The URL of the service's least-privilege role: as given (`DB_APP_URL`), or derived from the administrative
    URL and the role's password."""
    if settings.db_app_url:
        return settings.db_app_url
    role, password = _app_login(settings.database_url, settings.schema_name, settings.db_app_password)
    return dsn_for_role(settings.database_url, role, password)


async def open_database(
    settings: ServiceSettings, service_migrations: list[Migration], *, max_size: int
) -> asyncpg.Pool:
    """The service's pool: with only its role's URL, on a schema migrated beforehand; otherwise migrated here with
    the administrative URL first (tests, and a service run alone)."""
    if settings.db_app_url:
        return await open_migrated(settings.db_app_url, settings.schema_name, service_migrations, max_size=max_size)
    return await prepare_database(
        settings.database_url, settings.schema_name, service_migrations,
        configured_password=settings.db_app_password, max_size=max_size,
    )
