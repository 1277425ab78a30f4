"""Triage: classifies incident reports and plans their escalation from the school's policy."""
