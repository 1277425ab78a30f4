"""`python -m chaos` (what `make chaos` calls): the whole stack under a steady load while its broker, PostgreSQL
and services are killed with SIGKILL one at a time, then checked from the outside. Exit code 1 if a check fails."""

from __future__ import annotations

import argparse
import asyncio
import sys

from chaos.kill import COMPONENTS
from chaos.run import ChaosConfig, run
from chaos.table import render


def _components(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown components {unknown}; choose from {', '.join(COMPONENTS)}")
    return names


def main(argv: list[str] | None = None) -> int:
    defaults = ChaosConfig()
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=defaults.duration,
                        help="seconds of load (default %(default)s)")
    parser.add_argument("--rate", type=float, default=defaults.rate, help="reports per second (default %(default)s)")
    parser.add_argument("--kills", type=int, default=defaults.kills, help="SIGKILLs in all (default %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="chooses the moments and the order")
    parser.add_argument("--components", type=_components, default=defaults.components,
                        help=f"comma-separated, from {','.join(COMPONENTS)} (default: all)")
    parser.add_argument("--drain-timeout", type=float, default=defaults.drain_timeout,
                        help="seconds allowed after the load for everything to come through (default %(default)s)")
    parser.add_argument("--throttle-window", type=float, default=defaults.throttle_window,
                        help="notify's digest window in seconds (product default 120; default here %(default)s)")
    parser.add_argument("--send-lease", type=float, default=defaults.send_lease,
                        help="notify's send lease in seconds (product default 120; default here %(default)s)")
    parser.add_argument("--keep-var", action="store_true", help="keep the stack's var dir for a look afterwards")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.kills < 0:
        parser.error("--duration and --rate must be positive and --kills at least 0")
    config = ChaosConfig(
        duration=args.duration, rate=args.rate, kills=args.kills, seed=args.seed, components=args.components,
        drain_timeout=args.drain_timeout, throttle_window=args.throttle_window, send_lease=args.send_lease,
        keep_var=args.keep_var,
    )
    result = asyncio.run(run(config, log=lambda text: print(text, file=sys.stderr, flush=True)))
    print("\n".join(render(result)))
    return 1 if result.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
