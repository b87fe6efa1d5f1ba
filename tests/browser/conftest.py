"""Fixtures of the browser tests: Debian's chromium (`ops/setup.sh` installs it) driven
headless by Playwright, and the folder for what a person should look at afterwards.

Artifacts (screenshots, measurements) go to `$CELLFLEET_TEST_ARTIFACTS`, by default
`.artifacts/` in the checkout (git-ignored); the run's summary lists them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Request, sync_playwright

REPO = Path(__file__).parents[2]
SAVED: list[str] = []  # one line per artifact, for the summary


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SAVED:
        terminalreporter.write_sep("-", "browser test artifacts")
        for line in SAVED:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def artifacts() -> Path:
    folder = Path(os.environ.get("CELLFLEET_TEST_ARTIFACTS") or REPO / ".artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("no chromium on PATH: `sh ops/setup.sh` installs Debian's")
    # Chromium refuses to run as root inside its sandbox.
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=args)
        yield browser
        browser.close()


@dataclass
class Visit:
    """A page opened in a fresh browser context, and what it did besides rendering."""

    page: Page
    requests: list[str] = field(default_factory=list)  # every URL it asked for
    problems: list[str] = field(default_factory=list)  # script errors, refusals by its CSP


@pytest.fixture
def visit(browser: Browser) -> Iterator[Visit]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    seen = Visit(page)

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            seen.problems.append(message.text)

    def request(asked: Request) -> None:
        seen.requests.append(asked.url)

    page.on("console", console)
    page.on("pageerror", lambda error: seen.problems.append(str(error)))
    page.on("request", request)
    yield seen
    context.close()
