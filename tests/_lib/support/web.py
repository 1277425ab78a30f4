"""Helpers of the browser tests: real sign-in by the emailed link, mail in the SMTP sink, axe-core in the page,
screenshots at desktop and phone widths, and reports posted as an integration would."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
from playwright.sync_api import Browser, BrowserContext, Page

from devstack.smtp_sink import read_messages

REPO = Path(__file__).resolve().parents[3]
AXE = REPO / "services" / "web" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOTS = REPO / "var" / "screenshots"
WIDTHS = {"desktop": (1280, 900), "phone": (375, 812)}
PUPIL_NAME = "Jasmine Okonkwo-Reid"
PUPIL_UPN = "UPN-A1234"
DESCRIPTION = f"{PUPIL_NAME} shared a nude image of herself in the class group chat."
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], timeout: float, what: str, every: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def mail_to(mail_dir: Path, address: str, subject_part: str = "") -> list[EmailMessage]:
    return [m for m in read_messages(mail_dir)
            if address in str(m.get("To", "")) and subject_part in str(m.get("Subject", ""))]


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def links_in(message: EmailMessage, path: str) -> list[str]:
    return re.findall(r"https?://[^\s\"'<>]+" + re.escape(path) + r"[^\s\"'<>]+", body_of(message))


def report(school_id: str, category: str = "youth_produced_sexual_imagery") -> dict[str, Any]:
    return {
        "school_id": school_id,
        "reporter": {"role": "class teacher"},
        "occurred_at": "2026-11-23T10:15:00+00:00",
        "where": "Year 6 classroom",
        "category": category,
        "risk_area": "conduct",
        "subjects": [{"kind": "pupil", "identifier": PUPIL_UPN, "name": PUPIL_NAME, "year_group": "Year 6"}],
        "description": DESCRIPTION,
        "child_at_immediate_risk": False,
        "evidence": {"device": "pupil's own phone", "location": "headteacher's safe", "isolated_from_network": True},
    }


def post_report(intake_url: str, api_key: str, school_id: str) -> dict[str, Any]:
    answer = httpx.post(f"{intake_url}/v1/incidents", json=report(school_id), headers={"X-API-Key": api_key},
                        timeout=15)
    assert answer.status_code == 202, answer.text
    accepted: dict[str, Any] = answer.json()
    return accepted


def sign_in(browser: Browser, web_url: str, mail_dir: Path, email: str) -> tuple[BrowserContext, Page]:
    """The real thing: ask for a link, read it from the SMTP sink, open it, press the button."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(path=str(AXE))  # axe-core in every page (an init script is not subject to CSP)
    page = context.new_page()
    before = len(mail_to(mail_dir, email, "Sign in"))
    page.goto(f"{web_url}/sign-in")
    page.get_by_label("Your school email address").fill(email)
    page.get_by_role("button", name="Email me a sign-in link").click()
    page.get_by_role("heading", name="Check your email").wait_for()
    messages = wait_for(lambda: (m := mail_to(mail_dir, email, "Sign in"))[before:] and m, 30,
                        f"the sign-in email to {email}")
    [link] = links_in(messages[-1], "/sign-in/")
    page.goto(link)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r".*/(desk|report)$"))
    return context, page


def serious_violations(page: Page) -> list[dict[str, Any]]:
    result = page.evaluate(
        "async () => { const r = await axe.run(document, {runOnly: {type: 'tag', values: "
        "['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']}}); "
        "return r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help, "
        "nodes: v.nodes.map(n => n.target.join(' ')).slice(0, 5)})); }"
    )
    return [v for v in result if v["impact"] in ("serious", "critical")]


def check_page(page: Page, name: str) -> None:
    """axe-core at desktop and phone widths (no serious or critical violation), no sideways scrolling of the
    page itself (WCAG 1.4.10 reflow), and a screenshot at each."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    for width_name, (width, height) in WIDTHS.items():
        page.set_viewport_size({"width": width, "height": height})
        violations = serious_violations(page)
        assert not violations, f"{name} at {width_name} width: {violations}"
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {width_name} width is {overflow}px wider than the screen"
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width_name}.png"), full_page=True)
    page.set_viewport_size({"width": WIDTHS["desktop"][0], "height": WIDTHS["desktop"][1]})
