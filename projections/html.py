"""A session's events as one self-contained HTML page: `cellfleet trace --format html`.

The page carries its data (`html_cells.page_data`) as JSON in a non-executed script
element and builds itself with its own script (`html_page.js`, styled by
`html_page.css`), which touches text only through `textContent`: sources, outputs and
tool inputs come from the model and stay text. Its content security policy admits that
script and style alone (by hash) and images from `data:` URLs: the page fetches nothing,
and nothing injected could run.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cellfleet.broker.events import AnyEvent
from cellfleet.projections.html_cells import page_data

_HERE = Path(__file__).parent

# Inside a script element, `<` could close it (`</script>`, `<!--`); `>` and `&` are
# escaped too so that the data never reads as markup. (U+2028/2029, which end a line in
# older JavaScript, and lone surrogates, which UTF-8 cannot hold, leave `json.dumps`
# escaped already: it writes ASCII.) Each is an escape of the same character in JSON.
_JSON_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"})


def render(session: str, events: Iterable[AnyEvent]) -> str:
    """The page of `session`, whose log holds `events`."""
    script, style = _assets()
    policy = (
        "default-src 'none'; img-src data:; "
        f"style-src '{_digest(style)}'; script-src '{_digest(script)}'"
    )
    return "".join(
        (
            "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n",
            f'<meta http-equiv="Content-Security-Policy" content="{policy}">\n',
            "<meta name='viewport' content='width=device-width, initial-scale=1'>\n",
            "<link rel='icon' href='data:,'>\n",  # (no request for /favicon.ico)
            f"<title>cellfleet trace {html.escape(session)}</title>\n",
            f"<style>{style}</style>\n</head>\n<body>\n",
            "<noscript>This page builds itself with its script: allow JavaScript.</noscript>\n",
            "<main id='app'></main>\n",
            "<script type='application/json' id='trace-data'>",
            embedded_json(page_data(session, events)),
            f"</script>\n<script>{script}</script>\n</body>\n</html>\n",
        )
    )


def embedded_json(data: Any) -> str:
    """`data` as JSON text that is safe inside a `<script>` element."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return text.translate(_JSON_ESCAPES)


def _digest(text: str) -> str:
    """A CSP source expression that admits exactly the inline element holding `text`."""
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


@functools.cache
def _assets() -> tuple[str, str]:
    """The page's script and style, as shipped next to this module."""
    read = functools.partial(Path.read_text, encoding="utf-8")
    return read(_HERE / "html_page.js"), read(_HERE / "html_page.css")
