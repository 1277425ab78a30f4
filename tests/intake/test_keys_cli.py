"""`python -m intake.keys new`: a key shown once, and the hashed entry that settings accept."""

from __future__ import annotations

import json
import subprocess
import sys

from intake.config import IntakeSettings, hash_key


def test_new_key_prints_the_key_once_and_a_storable_hashed_entry() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "intake.keys", "new", "--integration", "cpoms-north", "--schools", "school-b,school-a"],
        check=True, capture_output=True, text=True,
    ).stdout
    lines = [line for line in out.splitlines() if line.strip()]
    key = lines[1]
    entry = json.loads(lines[-1])
    assert key.startswith("osk_") and key not in lines[-1]
    assert entry == {"integration_id": "cpoms-north", "key_sha256": hash_key(key), "schools": ["school-a", "school-b"]}
    settings = IntakeSettings(integrations=[entry])
    assert settings.integrations[0].schools == {"school-a", "school-b"}


def test_integrations_come_from_the_environment_and_a_file(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    file = tmp_path / "integrations.yaml"
    file.write_text(f"- integration_id: b\n  key_sha256: {hash_key('kb')}\n  schools: [school-b]\n")
    monkeypatch.setenv("INTAKE_INTEGRATIONS", json.dumps(
        [{"integration_id": "a", "key_sha256": hash_key("ka"), "schools": ["school-a"]}]))
    monkeypatch.setenv("INTAKE_INTEGRATIONS_FILE", str(file))
    settings = IntakeSettings()
    assert settings.service_name == "intake"
    assert [i.integration_id for i in settings.integrations] == ["a", "b"]
