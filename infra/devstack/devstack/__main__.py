"""`python -m devstack run` (what `make run` calls) and `python -m devstack env` (the running stack's settings)."""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from collections.abc import Mapping

from devstack import stack
from devstack.broker import BrokerVersionMismatch
from devstack.process import Output
from devstack.runfiles import AlreadyRunning, RunFiles, read_state
from devstack.supervisor import Supervisor


def table(supervisor: Supervisor, built: stack.Stack) -> list[str]:
    pids = supervisor.pids()
    rows = [("component", "pid", "listens on", "")]
    for c in supervisor.components:
        rows.append((c.name, str(pids.get(c.name, "-")), str(c.endpoint or "-"), c.note))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]
    return lines + built.notes + ["settings for a shell: `python -m devstack env`; stop with Ctrl-C"]


def run(env: Mapping[str, str] | None = None) -> int:
    """Start the embedded stack in the foreground and supervise it until Ctrl-C or SIGTERM."""
    env = dict(os.environ if env is None else env)
    output = Output(width=9)
    run_files = RunFiles(stack.var_dir(env))
    try:
        run_files.claim(log=lambda text: output.line("devstack", text))
    except AlreadyRunning as exc:
        output.line("devstack", str(exc))
        return 1
    try:
        built = stack.build(env)
    except (stack.StackError, BrokerVersionMismatch, OSError, subprocess.CalledProcessError) as exc:
        output.line("devstack", str(exc))
        run_files.update(status="failed", error=str(exc))
        run_files.release(keep_state=True)
        return 1
    except KeyboardInterrupt:  # Ctrl-C during initdb: nothing is running yet
        run_files.release()
        return 130
    run_files.update(
        env=built.service_env, var_dir=str(built.var_dir),
        mail_dir=str(built.mail_dir) if built.mail_dir else None,
        endpoints={c.name: str(c.endpoint) for c in built.components if c.endpoint},
    )

    def started(supervisor: Supervisor) -> None:
        for line in table(supervisor, built):
            supervisor.log(line)

    supervisor = Supervisor(built.components, output=output, run_files=run_files, on_started=started)
    return supervisor.run()


def print_env(env: Mapping[str, str] | None = None) -> int:
    """Print `export NAME=value` lines for the running stack (DATABASE_URL, KAFKA_BOOTSTRAP_SERVERS, ...)."""
    var = stack.var_dir(dict(os.environ if env is None else env))
    try:
        state = read_state(var)
    except FileNotFoundError:
        print(f"no devstack is running with state in {var}: start one with `make run`", file=sys.stderr)
        return 1
    for name, value in sorted(state.get("env", {}).items()):
        print(f"export {name}={shlex.quote(value)}")
    if state.get("mail_dir"):
        print(f"export DEVSTACK_MAIL_DIR={shlex.quote(state['mail_dir'])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start PostgreSQL, the broker, the SMTP sink and the services; supervise")
    commands.add_parser("env", help="print the running stack's settings as shell exports")
    args = parser.parse_args(argv)
    return run() if args.command == "run" else print_env()


if __name__ == "__main__":
    raise SystemExit(main())
