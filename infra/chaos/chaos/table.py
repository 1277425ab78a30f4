"""The chaos run's table, as Markdown (readable in a terminal, pasteable into bench/RESULTS.md)."""

from __future__ import annotations

from chaos.kill import COMPONENTS
from chaos.run import ChaosResult, machine


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def render(result: ChaosResult) -> list[str]:
    c = result.config
    refused = ", ".join(f"{n}x {'no answer' if s == 0 else s}" for s, n in sorted(result.not_accepted.items()))
    lines = [
        f"machine: {machine()}",
        f"run: {c.duration:.0f} s of load at {c.rate:g} reports/s, {len(result.kills)} kills (SIGKILL), seed {c.seed};"
        f" notify throttle window {c.throttle_window:g} s, send lease {c.send_lease:g} s",
        "",
        "| check | value | must be |",
        "| --- | --- | --- |",
        f"| reports sent / accepted (202) | {result.sent} / {result.accepted}"
        + (f" (not accepted: {refused})" if refused else "") + " | |",
        f"| notifications requested | {result.notifications_requested} | |",
        f"| reports lost (accepted, never triaged) | {result.reports_lost} | 0 |",
        f"| reports triaged more than once | {result.reports_triaged_twice} | 0 |",
        f"| notifications lost (requested, not in the SMTP sink) | {result.notifications_lost} | 0 |",
        f"| audit gaps (published, not in the log) | {result.audit_gaps} | 0 |",
        f"| audit duplicates | {result.audit_duplicates} | 0 |",
        f"| audit chains verified | {'all intact' if not result.chain_problems else '; '.join(result.chain_problems)}"
        " | all intact |",
        f"| dead letters | {result.dead_letters} | 0 |",
        f"| drained after the load stopped | {_seconds(result.drained_after)} | |",
        "",
        "| component | kills | back (answering) after, longest | restart to caught up, longest |"
        " duplicate deliveries (by Message-ID) | allowed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for component in COMPONENTS:
        kills = [k for k in result.kills if k.component == component]
        if not kills and component not in c.components:
            continue
        back = max((k.ready_after for k in kills if k.ready_after is not None), default=None)
        caught = [k.caught_up_after for k in kills if k.caught_up_after is not None]
        never = len(kills) - len(caught)
        longest = _seconds(max(caught)) if caught else "-"
        if never:
            longest += f" ({never} of {len(kills)} never: something accepted before the kill never came through)"
        allowed = len(kills) if component == "notify" else 0
        lines.append(f"| {component} | {len(kills)} | {_seconds(back)} | {longest} |"
                     f" {result.duplicates_by_component.get(component, 0)} | {allowed} |")
    lacking = "; ".join(f"{s} lacks {', '.join(m)}" for s, m in sorted(result.metrics_missing.items()))
    metrics_line = f"metrics: consumer lag and outbox backlog on every service's /metrics: {lacking or 'yes'}"
    unexplained = result.duplicates_by_component.get("none", 0)
    if unexplained:
        lines.append(f"| (no kill) | 0 | - | - | {unexplained} | 0 |")
    lines += ["", metrics_line, "PASS" if not result.failures else "FAIL: " + "; ".join(result.failures)]
    return lines
