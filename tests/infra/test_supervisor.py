"""The supervisor restarts a dead child with a growing delay, leaves the others alone, and stops everything."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from devstack.components import Backoff, Component, Endpoint
from devstack.ports import free_port
from devstack.process import Output
from devstack.runfiles import AlreadyRunning, RunFiles
from devstack.supervisor import Supervisor

SUPERVISED = textwrap.dedent("""
    import signal, sys
    from pathlib import Path
    from devstack.components import Backoff, Component
    from devstack.runfiles import RunFiles
    from devstack.supervisor import Supervisor

    py = sys.executable
    var = Path(sys.argv[1])
    sleeper = ("import subprocess, sys, time; "
               "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)")
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    components = [
        Component("sleeper", (py, "-c", sleeper), stage=0),
        Component("crasher", (py, "-c", "import sys; sys.exit(3)"), stage=1),
        Component("stubborn", (py, "-c", stubborn), stage=1, stop_timeout=0.5),
    ]
    run_files = RunFiles(var)
    run_files.claim()
    backoff = Backoff(initial=0.1, factor=2.0, maximum=0.4, reset_after=30.0)
    sys.exit(Supervisor(components, backoff=backoff, run_files=run_files, poll_interval=0.02).run())
""")


def _family(pid: int) -> list[psutil.Process]:
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def _gone(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)  # reparented and awaiting its reaper: dead already
    except psutil.NoSuchProcess:
        return True


def _wait_for(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_a_dead_child_is_restarted_with_backoff_and_sigterm_leaves_no_process(tmp_path: Path) -> None:
    script = tmp_path / "supervised.py"
    script.write_text(SUPERVISED)
    var = tmp_path / "var"
    proc = subprocess.Popen([sys.executable, str(script), str(var)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        _wait_for(lambda: sum("crasher exited with code 3" in line for line in lines) >= 4)
        state = json.loads((var / "devstack.json").read_text())
        sleeper_pid = state["children"]["sleeper"]["pid"]
        _wait_for(lambda: len(_family(sleeper_pid)) == 2)  # the sleeper and its own child
        everything = _family(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    reader.join(timeout=5)

    assert proc.returncode == 0, "".join(lines)
    delays = [float(m.group(1)) for line in lines if (m := re.search(r"crasher .* restarting in ([\d.]+)s", line))]
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4]  # doubling, capped
    assert not any("sleeper exited" in line or "stubborn exited" in line for line in lines)  # others untouched
    assert any("stubborn did not stop in time" in line for line in lines)
    assert len(everything) >= 4  # supervisor, sleeper, its child, stubborn (and maybe a crasher)
    assert all(_gone(p) for p in everything), [p for p in everything if not _gone(p)]
    assert not (var / "devstack.pid").exists() and not (var / "devstack.json").exists()


def test_child_output_is_prefixed_with_its_name() -> None:
    buffer = io.StringIO()
    talker = Component("talker", (sys.executable, "-c", "print('hello from the child')"))
    supervisor = Supervisor([talker], output=Output(stream=buffer), backoff=Backoff(initial=60.0))
    supervisor.start()

    def exited() -> bool:
        supervisor.poll()
        return "restarting in" in buffer.getvalue()

    _wait_for(exited)
    supervisor.stop()

    assert "talker   | hello from the child\n" in buffer.getvalue()


def test_infrastructure_that_dies_before_it_is_ready_fails_the_start_clearly(tmp_path: Path) -> None:
    port = free_port()
    broken = Component("database", (sys.executable, "-c", "import sys; sys.exit(2)"), wait_until_ready=True,
                       endpoint=Endpoint("127.0.0.1", port))
    service = Component("service", (sys.executable, "-c", "import time; time.sleep(60)"), stage=1)
    run_files = RunFiles(tmp_path)
    run_files.claim()

    supervisor = Supervisor([broken, service], run_files=run_files)
    assert supervisor.run() == 1

    state = json.loads((tmp_path / "devstack.json").read_text())
    assert state["status"] == "failed"
    assert "database exited with code 2 before it was ready" in state["error"]
    assert not (tmp_path / "devstack.pid").exists()
    assert supervisor.pids() == {}  # the service was never started


def test_a_stale_pid_file_is_replaced_and_the_dead_supervisors_children_are_stopped(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    (tmp_path / "devstack.pid").write_text(f"{dead.pid}\n")
    (tmp_path / "devstack.json").write_text(json.dumps({"children": {"broker": {
        "pid": orphan.pid, "start_time": psutil.Process(orphan.pid).create_time(),
        "stop_signal": int(signal.SIGTERM), "signal_group": True,
    }}}))
    try:
        messages: list[str] = []
        RunFiles(tmp_path).claim(log=messages.append)

        assert orphan.wait(timeout=5) == -signal.SIGTERM
        assert (tmp_path / "devstack.pid").read_text().strip() == str(os.getpid())
        assert any("stale pid file" in m for m in messages)
    finally:
        orphan.kill()
        orphan.wait()


def test_a_second_supervisor_refuses_to_start_while_the_first_is_alive(tmp_path: Path) -> None:
    # Popen returns as soon as exec begins, before the kernel has set up the new command line (read then, it is
    # empty); the child saying it is up means its command line is there to be read, as a real supervisor's is.
    alive = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)", "devstack", "run"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert alive.stdout is not None and alive.stdout.readline() == "up\n"
        (tmp_path / "devstack.pid").write_text(f"{alive.pid}\n")
        with pytest.raises(AlreadyRunning, match=f"pid {alive.pid}"):
            RunFiles(tmp_path).claim()
    finally:
        alive.kill()
        alive.wait()


def test_backoff_doubles_up_to_its_ceiling() -> None:
    backoff = Backoff(initial=0.5, factor=2.0, maximum=30.0)

    assert [backoff.delay(n) for n in range(1, 9)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
