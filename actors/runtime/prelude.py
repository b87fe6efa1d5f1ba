"""The prelude's source (`prelude.js`) and the script that installs it in a context: the
whole prelude, or (when V8's startup snapshot holds the prelude, `snapshot.py`) a call
of the prelude's function that the snapshot compiled ahead.

Both keep the prelude's own line numbers (its frames show in stack traces), name the
script `cellfleet-prelude.js`, bind the host interface to a random lexical name, and
leave the log's buffer as the script's value.
"""

from __future__ import annotations

import hashlib
from importlib import resources

import orjson

from cellfleet.actors.runtime.mailbox import INBOX_BYTES

PRELUDE_SOURCE = resources.files(__package__).joinpath("prelude.js").read_text("utf-8")
MAILBOX_BYTES = 256 * 1024 + INBOX_BYTES  # the log, then the host's inbox (mailbox.py)
_HOST_BINDING = "const __cellfleet_host ="  # renamed in each context
_HEAD = "const __cellfleet_host = (function (post, mailbox, toolNames) {"
_CALL = "})(__cellfleet_post, __cellfleet_mailbox, __cellfleet_tools);"
_SOURCE_URL = "//# sourceURL=cellfleet-prelude.js"
FACTORY = "__cellfleet_factory"  # the snapshot's global: the prelude's function, uncalled
# The prelude's inputs, set as globals that it deletes: on its first line (a comment),
# so that its line numbers stay its own.
_INPUTS = (
    "globalThis.__cellfleet_mailbox = new ArrayBuffer({bytes}); globalThis.__cellfleet_tools"
    " = {tools}; "
)


def prelude_digest() -> str:
    return hashlib.sha256(PRELUDE_SOURCE.encode()).hexdigest()[:12]


def context_script(host_name: str, tools_literal: str, *, from_snapshot: bool) -> str:
    """The script that installs the prelude in a new context (`__cellfleet_post` set)."""
    if not from_snapshot:
        inputs = _INPUTS.format(bytes=MAILBOX_BYTES, tools=tools_literal)
        return inputs + PRELUDE_SOURCE.replace(_HOST_BINDING, f"const {host_name} =", 1)
    return (  # (no name of this script's stays reachable but the random one)
        f"globalThis.__cellfleet_mailbox = new ArrayBuffer({MAILBOX_BYTES});"
        f" const {host_name} = globalThis.{FACTORY}(globalThis.__cellfleet_post,"
        f" globalThis.__cellfleet_mailbox, {tools_literal}); delete globalThis.{FACTORY};"
        " delete globalThis.__cellfleet_post; { const mailbox = globalThis.__cellfleet_mailbox;"
        f" delete globalThis.__cellfleet_mailbox; mailbox; }}\n{_SOURCE_URL}\n"
    )


def factory_source() -> str:
    """What the snapshot runs: the prelude's function stored, uncalled, as a configurable,
    non-enumerable global (each context calls it and deletes it), every line where the
    prelude has it."""
    head = (
        f'Object.defineProperty(globalThis, "{FACTORY}", {{ configurable: true,'
        " value: (function (post, mailbox, toolNames) {"
    )
    assert PRELUDE_SOURCE.count(_HEAD) == 1, "prelude.js: its head changed"
    assert PRELUDE_SOURCE.count(_CALL) == 1, "prelude.js: its call changed"
    body = PRELUDE_SOURCE.replace(_HEAD, head, 1)
    end = body.index(_CALL)
    lines_after = body[end:].count("\n")
    # (line 1 is a comment in the prelude too: the inputs go there)
    return "//" + body[:end] + "}) });" + "\n" * (lines_after - 1) + _SOURCE_URL + "\n"


# ---- hubs: isolates whose cells each run in a realm of their own (realms.py) ----------
HUB = "__cellfleet_hub"  # the hub's interface, a lexical binding of its own context's
REALMS = "__cellfleet_realms"  # each realm's host interface, by the realm's name
_HUB_SCRIPT = """const __cellfleet_realms = Object.create(null);
const __cellfleet_hub = (function (post) {
  "use strict";
  const hub = globalThis;
  const NewRealm = hub.ShadowRealm; // (only to have V8 call the hook: realms.py)
  delete hub.ShadowRealm;
  delete hub.__cellfleet_post;
  post(); // the host learns this isolate, and lets it make realms
  const compilers = new WeakMap(); // a realm's host -> its own eval and SyntaxError
  let current = null;
  return Object.freeze({
    // A new realm, its prelude installed as __cellfleet_realms[name] (the previous
    // realm's dropped): the value is its log's buffer.
    realm(name, bytes, tools, factorySource) {
      if (current !== null) delete __cellfleet_realms[current];
      current = null;
      new NewRealm();
      const realm = hub.REALM_GLOBAL;
      delete hub.REALM_GLOBAL;
      if (factorySource !== null) realm.eval(factorySource);
      const mailbox = new realm.ArrayBuffer(bytes);
      const host = realm.FACTORY(post, mailbox, tools);
      delete realm.FACTORY;
      compilers.set(host, [realm.eval, realm.SyntaxError]);
      __cellfleet_realms[name] = host;
      current = name;
      return mailbox;
    },
    // The cell's function, compiled in its realm; or, if it does not compile, the
    // text of the SyntaxError.
    compile(host, code) {
      const [evaluate, SyntaxErrorCtor] = compilers.get(host);
      try {
        return evaluate(code);
      } catch (error) {
        if (error instanceof SyntaxErrorCtor) return "SyntaxError: " + error.message;
        throw error;
      }
    },
  });
})(globalThis.__cellfleet_post);
0
"""


def hub_script() -> str:
    """The script that makes an isolate a hub (`__cellfleet_post` set)."""
    from cellfleet.actors.runtime.realms import REALM_GLOBAL  # noqa: PLC0415 - (a leaf)

    return (
        _HUB_SCRIPT.replace("REALM_GLOBAL", REALM_GLOBAL).replace("FACTORY", FACTORY)
        + "//# sourceURL=cellfleet-host.js\n"
    )


def realm_script(name: str, tools_literal: str, *, from_snapshot: bool) -> str:
    """The script that makes a new realm in a hub; its value is the realm's log buffer."""
    factory = "null" if from_snapshot else orjson.dumps(factory_source()).decode()
    return f'{HUB}.realm("{name}", {MAILBOX_BYTES}, {tools_literal}, {factory}); '
