"""`cellfleet trace --format html` in a real browser: a recorded session reads as it ran,
text from the log stays text, and a page of 1,000 cells opens fast."""

from __future__ import annotations

import json
import time
from pathlib import Path

from playwright.sync_api import expect

from cellfleet.broker import events as ev
from cellfleet.ops.host import Host
from cellfleet.projections import html
from tests.browser.conftest import SAVED, Visit
from tests.integration.cli_support import run_cellfleet

INJECTED = '<img src=x onerror="window.pwned = 1">'
ESCAPE = "</script><script>window.pwned = 2</script>"
PNG = (  # 1 x 1 pixel
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQ"
    "DwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _record(redis_url: str) -> str:
    """A session of four cells, shut down: its id. Cell 2 yields, waits on a timer and
    calls a tool; cell 3 fails; cell 4's source and output try to become markup."""
    host = Host(redis_url, handlers={"echo": lambda value: value})
    try:
        session = host.open_session()
        session.exec("a", "store('k', { n: 1 }); text('plain output'); notify('hi')")
        session.exec(
            "b",
            "yield_control(); await new Promise((r) => setTimeout(r, 5));\n"
            "const r = await tools.echo({ x: load('k'), tag: '<b>bold</b>' });\n"
            "text(JSON.stringify(r));",
        )
        session.wait('{"cell_id": "2", "yield_time_ms": 10000}')
        session.exec("c", "const x = 1;\nthrow new Error('boom <i>here</i>');")
        injected = json.dumps(INJECTED)
        source = f"// {INJECTED}\n// {ESCAPE}\ntext({injected}); image({json.dumps(PNG)});"
        session.exec("d", source)
        session.shutdown()
        return session.id
    finally:
        host.close()


def _open(visit: Visit, path: Path, anchor: str = "") -> float:
    """Open `path` and wait for its load event: the seconds that took."""
    began = time.perf_counter()
    visit.page.goto(path.as_uri() + anchor, wait_until="load")
    return time.perf_counter() - began


def _save_screenshot(visit: Visit, path: Path, what: str, *, whole: bool = True) -> None:
    """The page (`whole`: from its top, all of it; else what the window shows)."""
    if whole:  # a window as tall as the page: rows out of sight are not drawn
        height = visit.page.evaluate("document.documentElement.scrollHeight")
        visit.page.set_viewport_size({"width": 1280, "height": height})
    visit.page.screenshot(path=path)
    SAVED.append(f"{path}: {what}")
    print(f"screenshot: {path}")


def test_a_recorded_session_reads_as_it_ran(
    redis_url: str, tmp_path: Path, visit: Visit, artifacts: Path
) -> None:
    session = _record(redis_url)
    out = tmp_path / "trace.html"
    made = run_cellfleet(
        ["trace", session, "--format", "html", "-o", str(out)], tmp_path, redis_url
    )
    assert made.returncode == 0, made.stderr
    _open(visit, out)
    page = visit.page
    expect(page.locator("details.cell")).to_have_count(4)
    header = page.locator("header.summary")
    expect(header).to_contain_text(session)
    expect(header).to_contain_text("4 (3 ok, 1 failed)")
    expect(header).to_contain_text("shut down at +")
    # The timeline: cell 2 yielded, waited on a timer and a tool; cell 1 notified.
    expect(page.locator("#cell-2 > summary .seg.yielded")).to_have_count(1)
    expect(page.locator("#cell-2 > summary .mark.timer")).to_have_count(1)
    expect(page.locator("#cell-2 > summary .mark.tool")).to_have_count(1)
    expect(page.locator("#cell-1 > summary .mark.note")).to_have_count(1)
    expect(page.locator(".cell .body")).to_have_count(0)  # built when opened

    page.locator("#cell-1 > summary").click()
    expect(page.locator("#cell-1 .output pre.text")).to_have_text("plain output")
    expect(page.locator("#cell-1 .writes")).to_contain_text('{"n":1}')

    page.locator("#cell-2 > summary").click()
    call = page.locator("#cell-2 .call")
    expect(call.locator(".call-name")).to_have_text("echo")
    expect(call.locator(".call-outcome")).to_contain_text("completed in ")
    sent = {"x": {"n": 1}, "tag": "<b>bold</b>"}
    assert json.loads(call.locator(".call-input").inner_text()) == sent
    assert json.loads(call.locator(".call-result").inner_text()) == sent
    expect(page.locator("#cell-2 .output pre.text")).to_have_text(
        json.dumps(sent, separators=(",", ":"))
    )

    page.locator("#cell-3 > summary").click()
    expect(page.locator("#cell-3 > summary .badge")).to_have_text("failed")
    expect(page.locator("#cell-3 pre.error")).to_contain_text("Error: boom <i>here</i>")
    expect(page.locator("#cell-3 pre.error")).to_contain_text("exec_main.mjs:2")

    page.locator("#cell-4 > summary").click()
    lines = page.locator("#cell-4 .source li")
    expect(lines.nth(0)).to_have_text(f"// {INJECTED}")
    expect(lines.nth(1)).to_have_text(f"// {ESCAPE}")
    expect(page.locator("#cell-4 .output pre.text")).to_have_text(INJECTED)
    image = page.locator("#cell-4 img.image")
    expect(image).to_have_count(1)
    expect(image).to_have_js_property("naturalWidth", 1)  # decoded
    expect(page.locator("img")).to_have_count(1)  # no image made of the log's text
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert visit.problems == []  # no script error, nothing the page's policy refused
    assert {url.split(":", 1)[0] for url in visit.requests} <= {"file", "data"}
    _save_screenshot(visit, artifacts / "trace_page.png", "a recorded session, cells 1-4 open")


def _synthetic(cells: int) -> list[ev.AnyEvent]:
    """A session of `cells` cells, 10 ms apart: each calls a tool and prints; every tenth
    fails."""
    session = "synthetic"
    made: list[ev.AnyEvent] = [ev.SessionOpened(session=session, seq=1, at_ms=0.0)]
    for number in range(1, cells + 1):
        cell, t = str(number), number * 10.0
        fails = number % 10 == 0
        source = f"// cell {number}\nconst r = await tools.echo({{ n: {number} }});\ntext(r.n);"
        envelope = {"session": session, "cell": cell}
        call = {"call_id": "tool-1"}
        made += [
            ev.CellAdmitted(**envelope, seq=0, at_ms=t, call_id=f"call-{number}", source=source),
            ev.CellStarted(**envelope, seq=1, at_ms=t + 1),
            ev.ToolRequested(
                **envelope, **call, seq=2, at_ms=t + 2, name="echo", kind="function", input=number
            ),
            ev.ToolCompleted(**envelope, **call, at_ms=t + 4, result=number),
            ev.ToolResultDelivered(**envelope, **call, seq=3, at_ms=t + 5, clock_ms=t + 4),
            ev.OutputProduced(
                **envelope, seq=4, at_ms=t + 6, item={"type": "input_text", "text": str(number)}
            ),
            ev.CellCompleted(
                **envelope, seq=5, at_ms=t + 7, error_text=f"Error: {number}" if fails else None
            ),
            ev.ObservationDelivered(
                **envelope, seq=6, at_ms=t + 8, kind=ev.ObservationKind.COMPLETED, outputs=1
            ),
            ev.CellClosed(**envelope, seq=7, at_ms=t + 9),
        ]
    made.append(ev.ShutdownFinished(session=session, seq=2, at_ms=cells * 10.0 + 10))
    return made


def test_a_page_of_1000_cells_opens_fast_and_builds_a_cell_when_it_is_opened(
    tmp_path: Path, visit: Visit, artifacts: Path
) -> None:
    out = tmp_path / "cells.html"
    out.write_text(html.render("synthetic", _synthetic(1000)), encoding="utf-8")
    took = _open(visit, out, "#cell-731")  # a link to one cell opens it
    page = visit.page
    expect(page.locator("details.cell")).to_have_count(1000)
    expect(page.locator(".cell .body")).to_have_count(1)  # the other 999 are not built
    expect(page.locator("#cell-731 .call-input")).to_have_text("731")
    expect(page.locator("#cell-731 .output pre.text")).to_have_text("731")
    built_ms = float(page.evaluate("document.documentElement.dataset.builtMs"))
    size_kb = out.stat().st_size / 1024
    measured = f"1,000 cells: {size_kb:.0f} KiB, load event after {took * 1000:.0f} ms"
    SAVED.append(f"{measured} (page built {built_ms:.0f} ms after navigation began)")
    assert took < 5, measured  # about 0.3 s here: far beyond means rows built eagerly
    shot = artifacts / "trace_page_1000.png"
    _save_screenshot(visit, shot, "1,000 cells, at cell 731 (open)", whole=False)

    page.locator("#filter").select_option("failed")
    expect(page.locator("details.cell:visible")).to_have_count(100)
    expect(page.locator("#cell-500 > summary .badge")).to_have_text("failed")
    page.locator("#cell-500 > summary").click()
    expect(page.locator("#cell-500 pre.error")).to_have_text("Error: 500")
    expect(page.locator(".cell .body")).to_have_count(2)
    assert visit.problems == []
