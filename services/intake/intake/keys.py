"""`python -m intake.keys new --integration X --schools a,b`: make an integration's API key.

Prints the key once (give it to the integration) and the line to store in INTAKE_INTEGRATIONS or the
integrations file; only the key's SHA-256 is ever stored.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from intake.config import IntegrationKey, hash_key

KEY_PREFIX = "osk_"


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m intake.keys", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="make a new API key for an integration")
    new.add_argument("--integration", required=True, help="the integration's id, e.g. cpoms-trust-north")
    new.add_argument("--schools", required=True, help="comma-separated school ids it may report for")
    args = parser.parse_args(argv)
    schools = sorted({s.strip() for s in args.schools.split(",") if s.strip()})
    key = new_key()
    entry = IntegrationKey(integration_id=args.integration, key_sha256=hash_key(key), schools=frozenset(schools))
    stored = {"integration_id": entry.integration_id, "key_sha256": entry.key_sha256, "schools": schools}
    sys.stdout.write(
        f"API key (shown once; give it to the integration, send as X-API-Key):\n{key}\n\n"
        f"Store this entry in INTAKE_INTEGRATIONS (a JSON list) or the integrations file:\n"
        f"{json.dumps(stored)}\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
