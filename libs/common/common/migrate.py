"""Applies services' migrations with the administrative URL, apart from the services, so that each service runs
with its least-privilege role's URL alone (`DB_APP_URL`) and never holds credentials that could alter its tables:
the audit log's triggers, for one, can be dropped by the administrator, not by its writer.

    python -m common.migrate audit triage     # migrate each service's schema (DATABASE_URL: the administrator)
    python -m common.migrate --exec audit     # migrate, then become `python -m audit` with DB_APP_URL and
                                              # without DATABASE_URL or DB_APP_PASSWORD in its environment

The schema, the role's password and the administrative URL come from the same settings the services read
(`DB_SCHEMA`, `DB_APP_PASSWORD`, `DATABASE_URL`); each service's migrations are its package's `migrations`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Mapping, Sequence

from common.db import load_migrations, migrate_schema
from common.settings import ServiceSettings

# What the service must not inherit: the administrator's URL, and the password its own URL now carries.
ADMINISTRATIVE = ("DATABASE_URL", "DB_APP_PASSWORD")


async def migrate_service(service: str, settings: ServiceSettings | None = None) -> str:
    """Migrate `service`'s schema; returns its least-privilege role's URL."""
    settings = settings or ServiceSettings(service_name=service)
    return await migrate_schema(settings.database_url, settings.schema_name, load_migrations(f"{service}.migrations"),
                                configured_password=settings.db_app_password)


def service_environment(environ: Mapping[str, str], app_url: str) -> dict[str, str]:
    """The environment a service runs in: its role's URL, and nothing administrative."""
    return {**{k: v for k, v in environ.items() if k not in ADMINISTRATIVE}, "DB_APP_URL": app_url}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m common.migrate",
        description="Apply services' migrations with the administrative URL; with --exec, then run the service as its "
        "own least-privilege role alone.",
    )
    parser.add_argument("--exec", action="store_true", help="then run the (single) service as its own role")
    parser.add_argument("services", nargs="+", help="service packages: intake, triage, notify, audit, web")
    args = parser.parse_args(argv)
    if args.exec and len(args.services) != 1:
        parser.error("--exec runs one service")
    urls = {}
    for service in args.services:
        urls[service] = asyncio.run(migrate_service(service))
        print(f"migrated {service}", file=sys.stderr, flush=True)
    if args.exec:
        (service,) = args.services
        os.execve(sys.executable, [sys.executable, "-m", service],  # noqa: S606 - our own interpreter and package
                  service_environment(os.environ, urls[service]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
