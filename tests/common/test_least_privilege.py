"""A service run as `make run` runs it: migrated with the administrative URL by `common.migrate`, then the service
itself with its least-privilege role's URL alone. The audit service, so run, holds no credential that could
alter its log."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
from support.helpers import eventually

from common.db import (
    MigrationError,
    app_dsn_of,
    app_password,
    common_migrations,
    load_migrations,
    migrate,
    open_migrated,
)
from common.migrate import migrate_service, service_environment
from common.settings import ServiceSettings
from devstack.ports import free_port


def test_the_service_inherits_its_roles_url_and_nothing_administrative() -> None:
    env = service_environment({"DATABASE_URL": "postgresql://postgres:secret@db/x", "DB_APP_PASSWORD": "p",
                               "KAFKA_BOOTSTRAP_SERVERS": "k:9092"}, "postgresql://audit_app:p@db/x")
    assert env == {"KAFKA_BOOTSTRAP_SERVERS": "k:9092", "DB_APP_URL": "postgresql://audit_app:p@db/x"}


async def test_a_service_given_only_its_roles_url_refuses_a_schema_that_lacks_a_migration(stack, isolation) -> None:
    schema = f"{isolation}_audit"
    settings = ServiceSettings(service_name="audit", db_schema=schema, database_url=stack.admin_dsn)
    await migrate(stack.admin_dsn, schema, common_migrations(), app_password(stack.admin_dsn, f"{schema}_app", None))
    audit_migrations = load_migrations("audit.migrations")
    with pytest.raises(MigrationError, match=r"lacks migrations 0001_audit_log, 0002_lock_and_read: apply them"):
        await open_migrated(app_dsn_of(settings), schema, audit_migrations)  # the outbox, but no audit log

    app_url = await migrate_service("audit", settings)
    assert app_url == app_dsn_of(settings)
    pool = await open_migrated(app_url, schema, audit_migrations)
    try:
        assert await pool.fetchval("SELECT current_user") == f"{schema}_app"
    finally:
        await pool.close()


async def test_make_runs_audit_holds_no_credential_that_could_alter_its_log(stack, isolation, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ, "DATABASE_URL": stack.admin_dsn, "DB_SCHEMA": f"{isolation}_audit",
        "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap, "TOPIC_PREFIX": f"{isolation}.", "HTTP_PORT": str(port),
        "HTTP_HOST": "127.0.0.1", "SIGNING_KEY_FILE": str(tmp_path / "key.pem"),
        "CHECKPOINT_DIR": str(tmp_path / "checkpoints"), "TOKEN_SECRET": "t" * 64,
    }
    with (tmp_path / "audit.log").open("wb") as output:
        process = subprocess.Popen([sys.executable, "-m", "common.migrate", "--exec", "audit"],  # noqa: S603
                                   env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            async def ready() -> bool:
                try:
                    return (await client.get("/readyz")).status_code == 200
                except httpx.TransportError:
                    return False

            await eventually(ready, timeout=60, what="audit ready")
        # The same process (exec'd), now holding its role's URL and not the administrator's.
        environ = dict(
            item.split("=", 1) for item in Path(f"/proc/{process.pid}/environ").read_text().split("\0") if "=" in item
        )
        assert "DATABASE_URL" not in environ and "DB_APP_PASSWORD" not in environ
        app_url = environ["DB_APP_URL"]
        assert urlsplit(app_url).username == f"{isolation}_audit_app"
        assert urlsplit(app_url).password != urlsplit(stack.admin_dsn).password
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 30)

    conn = await asyncpg.connect(app_url, server_settings={"search_path": f"{isolation}_audit"})
    try:
        for statement in ("ALTER TABLE audit_records DISABLE TRIGGER ALL",
                          "DROP TRIGGER audit_records_no_update_delete ON audit_records",
                          "UPDATE audit_records SET school_id = 'x'", "DELETE FROM audit_checkpoints",
                          "ALTER ROLE CURRENT_USER SUPERUSER"):
            with pytest.raises(asyncpg.PostgresError):
                await conn.execute(statement)
    finally:
        await conn.close()
