"""`python -m audit.cli verify|replay|export`: the audit log from a terminal (settings from the environment).

    verify  [--school S]                          chain and checkpoints of one school (or every school)
    replay  --school S (--incident ID | --from T --to T) [--publish TOPIC | --rebuild]
                                                  print the timeline in order; or re-publish the events to a
                                                  topic; or rebuild incident state and compare with the live one
    export  --school S --out DIR [--from T --to T]  JSON Lines + checkpoints + public key, for offline_verify

Times are ISO 8601; one without an offset (2026-04-01, 2026-04-01T09:00) is UTC. Every command is recorded in the
school's own log as a read (as the HTTP API's reads are), by `cli:<user>@<host>`.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import asyncpg

from audit.checkpoints import checkpoint_school, signer_for
from audit.config import AuditSettings
from audit.export import export_period
from audit.replay import compare_with_live, load_events, republish, timeline_lines
from audit.store import record_read, schools
from audit.verify import verify_school
from common.db import app_dsn_of, check_identifier


def moment(text: str) -> datetime:
    """An ISO 8601 time; without an offset it is UTC (the log's times are all aware: a naive one cannot even be
    compared with them)."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m audit.cli", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--school")
    r = sub.add_parser("replay")
    r.add_argument("--school", required=True)
    r.add_argument("--incident")
    r.add_argument("--from", dest="start", type=moment)
    r.add_argument("--to", dest="end", type=moment)
    mode = r.add_mutually_exclusive_group()
    mode.add_argument("--publish", metavar="TOPIC", help="physical topic name to re-publish to")
    mode.add_argument("--rebuild", action="store_true")
    e = sub.add_parser("export")
    e.add_argument("--school", required=True)
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--from", dest="start", type=moment)
    e.add_argument("--to", dest="end", type=moment)
    return p


async def connect(settings: AuditSettings) -> asyncpg.Connection:
    """As the service's own least-privilege role: the CLI can read and append, never rewrite."""
    conn: asyncpg.Connection = await asyncpg.connect(
        app_dsn_of(settings), server_settings={"search_path": check_identifier(settings.schema_name)},
    )
    return conn


async def run_cli(argv: Sequence[str], settings: AuditSettings, out: TextIO | None = None) -> int:
    args = parser().parse_args(list(argv))

    def write(line: str) -> None:
        print(line, file=out)

    signer = signer_for(settings)
    conn = await connect(settings)
    try:
        for school in [args.school] if args.school else await schools(conn):
            await _record(conn, school, args)
        if args.command == "verify":
            ok = True
            for school in [args.school] if args.school else await schools(conn):
                result = await verify_school(conn, settings, signer.verifier, school)
                ok = ok and result["intact"]
                extra = f"; checkpoints: {result['checkpoint_problem']}" if result["checkpoint_problem"] else ""
                write(f"{school}: {result['message']}; {result['checkpoints_verified']} checkpoints verified{extra}")
            return 0 if ok else 1
        if args.command == "replay":
            if args.rebuild:
                result = await compare_with_live(conn, args.school, incident_id=args.incident,
                                                 start=args.start, end=args.end)
                write(json.dumps(result["rebuilt"], indent=2, sort_keys=True, default=str))
                write(f"rebuilt {result['incidents']} incident(s) from the log: "
                      + ("equal to the live projection" if result["equal"]
                         else f"DIFFERENT from the live projection: {result['differences']}"))
                return 0 if result["equal"] else 1
            events = await load_events(conn, args.school, incident_id=args.incident, start=args.start, end=args.end)
            if args.publish:
                sent = await republish(events, settings.kafka_bootstrap_servers, args.publish)
                write(f"re-published {sent} event(s) in log order to {args.publish}")
                return 0
            for line in timeline_lines(events):
                write(line)
            return 0
        if args.command == "export":
            if args.end is None:  # bring the newest records under a signed checkpoint first
                await checkpoint_school(conn, settings, signer, args.school)
            manifest = await export_period(conn, signer, args.school, args.out, start=args.start, end=args.end)
            write(f"exported {manifest['records']} records and {manifest['checkpoints']} checkpoints to {args.out}; "
                  f"check with: python -m audit.offline_verify {args.out} --key '{signer.verifier.encode()}' "
                  "(give the reviewer the key apart from the export: whoever can rewrite one can rewrite both)")
            return 0
    finally:
        await conn.close()
    return 2


async def _record(conn: asyncpg.Connection, school: str, args: argparse.Namespace) -> None:
    """The read, in the school's log, before it is made: who ran which command with what."""
    params = {k: (v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, Path) else v)
              for k, v in vars(args).items() if k != "command"}
    await record_read(conn, school_id=school, person_id=f"cli:{getpass.getuser()}@{socket.gethostname()}",
                      role="operator", action=f"cli.{args.command}", params=params)


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(run_cli(sys.argv[1:] if argv is None else argv, AuditSettings()))


if __name__ == "__main__":
    raise SystemExit(main())
