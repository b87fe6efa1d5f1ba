"""Record what the reference host answers to every scenario (`recorded.json`).

    python -m tests.host.record [--check N] [-k NAME]

The binary: env CODEX_HOST_BIN, else `../shared/reference/fetch-codex-host`'s cache
(`cellfleet.ops.bench.host.reference_binary`, which the benchmark uses too).
Each scenario is played `--check` times (default 2); one whose frames differ between
runs is reported and the file is not written.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cellfleet.ops.bench.host import reference_binary
from tests.host.scenarios import SCENARIOS
from tests.host.wire import run_scenario

RECORDED = Path(__file__).with_name("recorded.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", type=int, default=2)
    parser.add_argument("-k", dest="only")
    args = parser.parse_args(argv)
    binary = reference_binary()
    if binary is None:
        print("no reference host: run ../shared/reference/fetch-codex-host", file=sys.stderr)
        return 2
    recorded = json.loads(RECORDED.read_text()) if RECORDED.exists() else {}
    unstable = []
    for name, steps in SCENARIOS.items():
        if args.only and args.only not in name:
            continue
        runs = [run_scenario([binary], steps) for _ in range(args.check)]
        if any(run != runs[0] for run in runs[1:]):
            unstable.append(name)
            print(f"{name}: UNSTABLE", file=sys.stderr)
            continue
        recorded[name] = {"steps": steps, **runs[0]}
        print(f"{name}: {len(runs[0]['frames'])} frames, status {runs[0]['status']}")
    if unstable:
        return 1
    RECORDED.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
