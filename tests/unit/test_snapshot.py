"""The prelude's V8 snapshot (`actors/runtime/snapshot.py`): a context made from it is
the context the whole prelude makes, and anything unsound leaves the built-in snapshot
in place. Each case runs in a process of its own (the snapshot is chosen when V8
starts, once per process)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.cli_support import REPO

PROBES = """
import json, sys
from cellfleet.actors.runtime import pool, snapshot
prepared = pool.prepare_context()
pool.warm(prepared)
probes = {
    "globals": "Object.getOwnPropertyNames(globalThis).join()",
    "descriptors": "JSON.stringify(Object.getOwnPropertyDescriptors(globalThis), (k, v) =>"
                   " typeof v === 'function' ? String(v).slice(0, 40) : v)",
    "hidden": "[typeof __cellfleet_factory, typeof __cellfleet_mailbox,"
              " typeof __cellfleet_post, typeof __cellfleet_tools].join()",
    "depth": "let d = 0; function f() { d++; f(); } try { f() } catch (e) {} String(d)",
    "stack": "try { null.x } catch (e) { e.stack }",
    "text": "String(text) + String(Object.keys(tools))",
}
out = {name: prepared.context.eval_sync(source) for name, source in probes.items()}
out["in_use"] = snapshot.in_use()
out["identity"] = pool.runtime_identity()
prepared.context.dispose()
print(json.dumps(out))
"""


def _probe(tmp_path: Path, **env: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-c", PROBES],
        env={**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return dict(json.loads(run.stdout.splitlines()[-1]))


def test_a_context_from_the_snapshot_is_the_one_the_prelude_makes(tmp_path: Path) -> None:
    whole = _probe(tmp_path, CELLFLEET_V8_SNAPSHOT="0")
    snapped = _probe(tmp_path)
    assert (whole.pop("in_use"), snapped.pop("in_use")) == (False, True)
    assert snapped.pop("identity") == whole.pop("identity") + " from a snapshot"
    assert snapped == whole
    assert whole["hidden"] == "undefined,undefined,undefined,undefined"


def test_an_unsound_cached_snapshot_is_built_again(tmp_path: Path) -> None:
    assert _probe(tmp_path)["in_use"]
    (blob,) = (tmp_path / "cellfleet" / "v8-snapshots").glob("*.blob")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # corrupt, with a digest that agrees: V8's checksum sees it
    blob.write_bytes(bytes(data))
    digest = blob.with_suffix(".sha256")
    digest.write_text(hashlib.sha256(bytes(data)).hexdigest())
    assert _probe(tmp_path)["in_use"]
    assert blob.read_bytes() != bytes(data)  # (built again)
    blob.write_bytes(b"torn")  # a digest that disagrees: built again before V8 sees it
    assert _probe(tmp_path)["in_use"]


@pytest.mark.parametrize("offset", [0, 4])
def test_a_header_that_v8s_checksum_leaves_out_is_checked_too(tmp_path: Path, offset: int) -> None:
    """The count of contexts and the rehash word: V8 aborts on a wrong one, unchecked."""
    assert _probe(tmp_path)["in_use"]
    (blob,) = (tmp_path / "cellfleet" / "v8-snapshots").glob("*.blob")
    data = bytearray(blob.read_bytes())
    data[offset] ^= 0x02
    blob.write_bytes(bytes(data))
    blob.with_suffix(".sha256").write_text(hashlib.sha256(bytes(data)).hexdigest())
    assert _probe(tmp_path)["in_use"]  # (built again: the process lives)


def test_threads_that_start_v8_together_agree_on_its_snapshot(tmp_path: Path) -> None:
    """One asks V8's version while another makes a context: the second must wait until
    the first chose the snapshot (an isolate of the built-in one made meanwhile, next to
    ours later, aborted the process)."""
    script = (
        "import threading\n"
        "from cellfleet.actors.runtime import pool, snapshot, v8\n"
        "start = threading.Barrier(2)\n"
        "kept = []\n"
        "def version(): start.wait(); v8.v8_version()\n"
        "def context(): start.wait(); kept.append(pool.prepare_context())\n"
        "threads = [threading.Thread(target=version), threading.Thread(target=context)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "later = pool.prepare_context()\n"
        "print(snapshot.in_use(), later.context.eval_sync('typeof text'))\n"
    )
    for attempt in range(3):  # (an empty cache each time: the build is the window)
        run = subprocess.run(
            [sys.executable, "-c", script],
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "XDG_CACHE_HOME": str(tmp_path / str(attempt)),
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert (run.returncode, run.stdout.split()) == (0, ["True", "function"]), run.stderr[-800:]


def test_v8_started_by_someone_else_keeps_its_own_snapshot(tmp_path: Path) -> None:
    """Its isolates may be alive: one of ours next to them would abort the process."""
    script = (
        "from py_mini_racer import MiniRacer\n"
        "racer = MiniRacer()\n"
        "from cellfleet.actors.runtime import snapshot\n"
        "from cellfleet.actors.runtime.v8 import V8Context\n"
        "V8Context(memory_limit_bytes=0).dispose()\n"
        "print(snapshot.in_use())\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert run.stdout.split() == ["False"]


FAILING_BUILD = """
import sys
from cellfleet.actors.runtime import pool, snapshot
snapshot._BUILDER = "import sys; open(%r, 'a').write('x'); sys.exit('no V8 here')"
prepared = pool.prepare_context()
print(snapshot.in_use())
"""


def test_a_failed_build_is_not_tried_again_by_every_process(tmp_path: Path) -> None:
    """A build that fails (or hangs until its timeout) leaves a note: the processes that
    start within the hour use the built-in snapshot without trying again (each paid for
    the same failure: up to the build's timeout); after the hour, one tries again."""
    runs = tmp_path / "runs"

    def start() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", FAILING_BUILD % str(runs)],
            env={**os.environ, "PYTHONPATH": str(REPO), "XDG_CACHE_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )

    first, second = start(), start()
    assert (first.stdout, second.stdout) == ("False\n", "False\n")
    assert runs.read_text() == "x"  # (built once)
    assert "no V8 here" in first.stderr
    assert "no V8 here" in second.stderr
    assert "it is tried again an hour after" in second.stderr
    (note,) = (tmp_path / "cellfleet" / "v8-snapshots").glob("*.failed")
    an_hour_ago = note.stat().st_mtime - 3601
    os.utime(note, (an_hour_ago, an_hour_ago))
    assert start().stdout == "False\n"
    assert runs.read_text() == "xx"  # (tried again)
