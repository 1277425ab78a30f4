"""Start-up and the running loop: a bad policy file stops triage naming where; the timer loop fires on its
own clock; the sweep counts timers overdue beyond the grace period."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.helpers import eventually
from support.triage_service import FakeClock, fetch, handle, reported_event, runtime_for, settings_for

from triage.main import TriageRuntime
from triage.policy import DEFAULT_POLICY_FILE, PolicyError


def _bad_policy(directory: Path) -> tuple[Path, int]:
    text = DEFAULT_POLICY_FILE.read_text().replace("school_id: default", "school_id: school-b")
    marker = "      - {roles: [deputy_dsl], ack_timeout_minutes: 15}"
    assert marker in text
    text = text.replace(marker, "      - {roles: [deputy_dls], ack_timeout_minutes: 15}", 1)
    file = directory / "school-b.yaml"
    file.write_text(text)
    return file, text[: text.index("deputy_dls")].count("\n") + 1


def test_a_policy_file_with_an_error_is_refused_at_start_up_naming_where(tmp_path):
    file, line = _bad_policy(tmp_path)
    settings = settings_for(type("S", (), {"admin_dsn": "postgresql://nowhere/x", "bootstrap": "nowhere:1"}),
                            "tbadpolicy", policy_dir=tmp_path)
    with pytest.raises(PolicyError) as refused:
        TriageRuntime(settings)
    assert f"{file}:{line}: chains.illegal.levels[1].roles[0]: unknown role 'deputy_dls'" in str(refused.value)


def test_python_dash_m_triage_exits_with_the_policy_error(tmp_path):
    file, line = _bad_policy(tmp_path)
    env = {**os.environ, "POLICY_DIR": str(tmp_path), "DATABASE_URL": "postgresql://nowhere/x"}
    done = subprocess.run([sys.executable, "-m", "triage"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert f"{file}:{line}: chains.illegal.levels[1].roles[0]" in done.stderr


def test_a_good_policy_directory_is_used_for_its_school(stack, isolation, tmp_path):
    text = DEFAULT_POLICY_FILE.read_text().replace("school_id: default", "school_id: school-c")
    (tmp_path / "school-c.yaml").write_text(text.replace("Example Primary School", "Oak Lane Primary"))
    runtime = TriageRuntime(settings_for(stack, isolation, policy_dir=tmp_path))
    assert runtime.policies.for_school("school-c").school_name == "Oak Lane Primary"
    assert runtime.policies.for_school("elsewhere").school_id == "default"


async def test_the_timer_loop_fires_by_itself_and_late_timers_are_counted(stack, isolation):
    clock = FakeClock()
    runtime = runtime_for(stack, isolation, clock, timer_poll_seconds=0.05, timer_grace_seconds=60)
    runtime.spec.background.append(runtime._timer_loop)  # the loop as it runs in service
    await runtime.start()
    schema = f"{isolation}_triage"
    try:
        await handle(runtime, "incidents.reported", reported_event("inc-loop-1"))
        clock.at(15)

        async def at_level(level: int) -> bool:
            rows = await fetch(stack.admin_dsn, f"SELECT level FROM {schema}.incidents")  # noqa: S608
            return bool(rows[0]["level"] == level)

        await eventually(lambda: at_level(1), timeout=10, what="the loop to escalate")
        assert runtime.metrics()["timers_overdue_beyond_grace_total"] == 0
        # The loop was away for a long time (a lost wake-up): the sweep counts it, and it still fires.
        clock.at(15 + 15 + 5)
        await eventually(lambda: at_level(2), timeout=10, what="the late timer to fire")
        assert runtime.metrics()["timers_overdue_beyond_grace_total"] >= 1
    finally:
        await runtime.stop()
