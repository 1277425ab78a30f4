"""Fixtures for the triage domain tests: the default policy, loaded once."""

from __future__ import annotations

import pytest

from triage.policy import SchoolPolicy, default_policy


@pytest.fixture(scope="session")
def policy() -> SchoolPolicy:
    return default_policy()
