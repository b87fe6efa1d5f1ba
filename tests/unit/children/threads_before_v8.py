"""Run cells from threads that were started before the process's first V8 isolate.

Run as a child process by `tests/unit/test_v8.py`: on a CPU with memory protection keys,
V8 crashes the whole process (SIGSEGV) when such a thread creates or runs an isolate, so
the test reads this process's exit status and output. With `--bare`, the same pattern
with plain mini-racer, which shows the hazard is real on the machine at hand.
"""

from __future__ import annotations

import faulthandler
import sys
import threading

from py_mini_racer import MiniRacer, _dll

from cellfleet.actors.runtime.local import LocalCell
from cellfleet.actors.runtime.pool import ContextPool
from cellfleet.actors.runtime.protocol import CellSpec, Finished, OutputItem, RuntimeTool
from cellfleet.broker.contract.tools import ToolKind

# Hot enough for V8 to compile machine code: freeing an isolate that has some is what
# crashes on a thread without the key.
SOURCE = """
await new Promise((resolve) => setTimeout(resolve, 1));
const fib = (n) => (n < 2 ? n : fib(n - 1) + fib(n - 2));
const answer = await tools.echo({ n: fib(20) });
text(`cell ${answer.cell}: ${answer.n}`);
"""


def run_cell(pool: ContextPool, cell_id: str) -> str:
    spec = CellSpec(
        cell_id=cell_id,
        source=SOURCE,
        tools=[RuntimeTool(name="echo", description="", kind=ToolKind.FUNCTION)],
        clock_ms=0.0,
    )
    cell = LocalCell(spec, pool, tools={"echo": lambda value: {**value, "cell": cell_id}})
    end = cell.wait(30)
    assert isinstance(end, Finished), end
    assert end.error_text is None, end.error_text
    return " | ".join(event.item["text"] for event in cell.events if isinstance(event, OutputItem))


def with_cellfleet() -> None:

    go = threading.Event()
    results: list[str] = []

    def early_thread() -> None:
        go.wait()
        results.append(run_cell(early_pool, "2"))  # a warm context from the early pool
        results.append(run_cell(ContextPool(0), "3"))  # a context created on this thread

    # Threads that exist before any isolate: this one, and the early pool's own threads.
    early = threading.Thread(target=early_thread)
    early.start()
    early_pool = ContextPool(2)
    results.append(run_cell(ContextPool(0), "1"))  # the process's first isolate, made here
    go.set()
    early.join(60)
    early_pool.close()
    print("\n".join(results))


def bare_mini_racer() -> None:
    go = threading.Event()
    answers: list[object] = []

    def early_thread() -> None:
        go.wait()
        answers.append(MiniRacer().eval("6 * 7"))  # crashes where the CPU has the keys

    early = threading.Thread(target=early_thread)
    early.start()
    first = MiniRacer()  # the process's first isolate, alive while the other is made
    answers.append(first.eval("6 * 7"))
    go.set()
    early.join(60)
    print(answers)


if __name__ == "__main__":
    faulthandler.enable()
    assert _dll._dll_handle is None, "V8 must not exist before the early threads start"
    bare_mini_racer() if "--bare" in sys.argv else with_cellfleet()
