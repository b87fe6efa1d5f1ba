"""The real Codex CLI driven offline: a fake model server on 127.0.0.1 plays scripted
model turns (Responses API events over SSE) and records what Codex sends back, and Codex
runs its code mode through whichever `codex-code-mode-host` sits next to its binary
(`../shared/spec/host-protocol.md`, section 4).

A turn is a list of output items (a `custom_tool_call` named `exec`, a `function_call`
named `wait`, ...); after the last scripted turn the model answers with a message, and
the run ends.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

Item = dict[str, Any]
RUN_TIMEOUT_S = 120


def exec_call(call_id: str, source: str) -> Item:
    return {"type": "custom_tool_call", "call_id": call_id, "name": "exec", "input": source}


def wait_call(call_id: str, arguments: dict[str, Any]) -> Item:
    return {
        "type": "function_call",
        "call_id": call_id,
        "name": "wait",
        "arguments": json.dumps(arguments),
    }


def _sse(events: Sequence[Item]) -> bytes:
    return b"".join(
        f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode() for event in events
    )


def _turn(index: int, items: Sequence[Item]) -> bytes:
    response_id = f"resp-{index}"
    events: list[Item] = [{"type": "response.created", "response": {"id": response_id}}]
    for item in items:
        events.append({"type": "response.output_item.added", "item": item})
        events.append({"type": "response.output_item.done", "item": item})
    usage = {
        "input_tokens": 0,
        "input_tokens_details": None,
        "output_tokens": 0,
        "output_tokens_details": None,
        "total_tokens": 0,
    }
    events.append({"type": "response.completed", "response": {"id": response_id, "usage": usage}})
    return _sse(events)


class FakeModel:
    """Serves `turns` in order to `POST /v1/responses`; `requests` holds their bodies."""

    def __init__(self, turns: Sequence[Sequence[Item]]) -> None:
        self.turns = [*turns, [_message("done")]]
        self.requests: list[Any] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                index = len(model.requests)
                model.requests.append(json.loads(body or b"{}"))
                turn = model.turns[min(index, len(model.turns) - 1)]
                payload = _turn(index, turn)
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def outputs(self) -> list[Item]:
        """The tool outputs Codex sent back, in order (each once)."""
        seen: list[Item] = []
        for request in self.requests:
            for item in request.get("input", []):
                kind = item.get("type")
                if kind in ("custom_tool_call_output", "function_call_output") and item not in seen:
                    seen.append(item)
        return seen

    def exec_description(self) -> str | None:
        """The `exec` tool's description in the first request."""
        for tool in self.requests[0].get("tools", []) if self.requests else []:
            if tool.get("name") == "exec":
                return str(tool.get("description"))
        return None


def _message(text: str) -> Item:
    return {
        "type": "message",
        "role": "assistant",
        "id": "msg-1",
        "content": [{"type": "output_text", "text": text}],
    }


def codex_folder(codex: Path, host: Path | None, folder: Path) -> Path:
    """A folder with a hard link of `codex` and `host` beside it as its code-mode host."""
    folder.mkdir(parents=True, exist_ok=True)
    linked = folder / "codex"
    if not linked.exists():
        os.link(codex, linked)
    if host is not None:
        target = folder / "codex-code-mode-host"
        if not target.exists():
            os.link(host, target)
    return linked


def run_codex(
    codex: Path, turns: Sequence[Sequence[Item]], workdir: Path, env: dict[str, str]
) -> tuple[FakeModel, subprocess.CompletedProcess[str]]:
    """Run `codex exec` against a fake model playing `turns`; the model and the run."""
    model = FakeModel(turns)
    home = workdir / "codex-home"
    home.mkdir(parents=True, exist_ok=True)
    provider = (
        f'{{name="fake",base_url="http://127.0.0.1:{model.port}/v1",wire_api="responses",'
        "request_max_retries=0,stream_max_retries=0,supports_websockets=false}"
    )
    command = [
        str(codex), "exec", "--skip-git-repo-check", "--ephemeral", "--json",
        "-c", "model=gpt-5.5", "-c", "model_provider=fake",
        "-c", f"model_providers.fake={provider}",
        "-c", "approval_policy=never", "-c", "sandbox_mode=danger-full-access",
        "-c", "suppress_unstable_features_warning=true",
        "--enable", "code_mode", "--disable", "code_mode_host_grpc",
        "--disable", "enable_request_compression", "--disable", "plugins", "--disable", "apps",
        "run the scripted cells",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command,
            cwd=workdir,
            env={**env, "CODEX_HOME": str(home)},
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            check=False,
        )
    finally:
        model.close()
    return model, done
