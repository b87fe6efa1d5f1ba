"""Fresh contexts in isolates that ran cells before: realms.

A cell needs a context of its own (a global object and intrinsics no other cell
touched), not an isolate of its own. Yet mini-racer makes one context per isolate, and
an isolate costs most of a short cell's CPU: measured here, making and freeing one
takes ~2.5 ms (its heap deserialized, a thread started, all of it torn down after)
against ~0.5 ms for a new context with the prelude in an isolate that exists.

V8 makes a context in an existing isolate for `new ShadowRealm()`, through a callback
of the embedder's (`Isolate::SetHostCreateShadowRealmContextCallback`), which mini-racer
leaves unset (V8 then refuses: "Not supported"). `enable` sets ours on an isolate. It
makes a context as the isolate's first was made (from the same snapshot: the prelude's
function is in it), gives it its creator's security token (so that each may use the
other's objects and `eval`, which V8 refuses across tokens), and leaves the new
context's global object on its creator's global as `REALM_GLOBAL`, where the hub's
script takes it at once (`prelude.HUB_SCRIPT`). ShadowRealm's own wrapping is never
used: the hub deletes the constructor before anything else runs, the prelude deletes
it from every cell's global.

V8 is called here by its C++ symbols, as `snapshot.py` does, with the ABI of the V8 in
mini-racer 0.14 (pinned): `Local`s are pointers, passed and returned in registers;
the three callback records `Context::New` takes are two pointers each.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
from typing import Any

log = logging.getLogger(__name__)

SWITCH = "CELLFLEET_V8_REALMS"  # "0": every cell gets an isolate of its own
FLAG = "--harmony-shadow-realm"  # (the constructor, deleted: see above)
REALM_GLOBAL = "__cellfleet_realm_global"

_CONTEXT_NEW = (
    "_ZN2v87Context3NewEPNS_7IsolateEPNS_22ExtensionConfigurationENS_10MaybeLocalINS_14"
    "ObjectTemplateEEENS5_INS_5ValueEEENS_33DeserializeInternalFieldsCallbackEPNS_14Micro"
    "taskQueueENS_30DeserializeContextDataCallbackENS_29DeserializeAPIWrapperCallbackE"
)
_SET_HOOK = (
    "_ZN2v87Isolate39SetHostCreateShadowRealmContextCallbackEPFNS_10MaybeLocalINS_7Context"
    "EEENS_5LocalIS2_EEE"
)
_GET_CURRENT = "_ZN2v87Isolate10GetCurrentEv"
_GET_TOKEN = "_ZN2v87Context16GetSecurityTokenEv"
_SET_TOKEN = "_ZN2v87Context16SetSecurityTokenENS_5LocalINS_5ValueEEE"
_GLOBAL = "_ZN2v87Context6GlobalEv"
_OBJECT_SET = "_ZN2v86Object3SetENS_5LocalINS_7ContextEEENS1_INS_5ValueEEES5_"
_NEW_STRING = "_ZN2v86String11NewFromUtf8EPNS_7IsolateEPKcNS_13NewStringTypeEi"
_HEAP_STATISTICS = "_ZN2v87Isolate17GetHeapStatisticsEPNS_14HeapStatisticsE"
# v8::HeapStatistics: size_t fields, `used_heap_size_` the fifth (a buffer to spare:
# later V8s append fields).
_HEAP_STATISTICS_BYTES = 512
_USED_HEAP_SIZE = 4
_NEW_STRING_NORMAL = 0  # v8::NewStringType::kNormal

_P = ctypes.c_void_p
_HOOK_TYPE = ctypes.CFUNCTYPE(_P, _P)


class _CallbackRecord(ctypes.Structure):
    """`DeserializeInternalFieldsCallback` and its kin: a function and its data."""

    _fields_ = (("callback", _P), ("data", _P))


def wanted() -> bool:
    return os.environ.get(SWITCH, "").strip() != "0"


class _Api:
    """V8's functions this module calls, and the hook (one for every isolate)."""

    def __init__(self, dll: Any) -> None:
        # All but two hold the GIL: quick calls on the isolate's own thread, which wait
        # for no other thread and run no JavaScript (see v8.py's `_holding_gil`). Not
        # `Context::New` (~0.4 ms), nor `Object::Set`, which runs any setter of the name
        # on the creator's global (a JavaScript loop must not hold every thread).
        holding_gil = ctypes.PyDLL(dll._name)

        def function(symbol: str, result: Any, *arguments: Any, library: Any = holding_gil) -> Any:
            found = library[symbol]
            found.restype = result
            found.argtypes = list(arguments)
            return found

        record = _CallbackRecord
        self.context_new = function(
            _CONTEXT_NEW, _P, _P, _P, _P, _P, record, _P, record, record, library=dll
        )
        self.set_hook = function(_SET_HOOK, None, _P, _HOOK_TYPE)
        self.get_current = function(_GET_CURRENT, _P)
        self.get_token = function(_GET_TOKEN, _P, _P)
        self.set_token = function(_SET_TOKEN, None, _P, _P)
        self.global_of = function(_GLOBAL, _P, _P)
        self.object_set = function(_OBJECT_SET, ctypes.c_uint16, _P, _P, _P, _P, library=dll)
        self.new_string = function(_NEW_STRING, _P, _P, ctypes.c_char_p, ctypes.c_int, ctypes.c_int)
        self.heap_statistics = function(_HEAP_STATISTICS, None, _P, _P)
        self.hook = _HOOK_TYPE(self._new_realm_context)  # (alive as long as the process)
        self.key = REALM_GLOBAL.encode()

    def _new_realm_context(self, creator: int) -> int:
        """(V8's callback, on the isolate's thread, in `new ShadowRealm()`.) A fresh
        context, its global left on `creator`'s as `REALM_GLOBAL`; 0 (V8 then throws)
        only if V8 could not make one."""
        isolate = self.get_current()
        context = self.context_new(
            isolate, None, None, None, _CallbackRecord(), None, _CallbackRecord(), _CallbackRecord()
        )
        if not context:
            return 0
        self.set_token(context, self.get_token(creator))
        key = self.new_string(isolate, self.key, _NEW_STRING_NORMAL, len(self.key))
        self.object_set(self.global_of(creator), creator, key, self.global_of(context))
        return int(context)


@functools.cache
def _api(dll: Any) -> _Api | None:
    try:
        return _Api(dll)
    except (AttributeError, ValueError) as error:  # (a mini-racer without these symbols)
        log.warning("cells get an isolate each (no realms: %s)", error)
        return None


def available(dll: Any) -> bool:
    """Whether realms can be made with this library (and are wanted)."""
    return wanted() and _api(dll) is not None


def enable(dll: Any, isolate: int) -> None:
    """Let `new ShadowRealm()` make realms in `isolate` (on its thread, idle or in a
    callback)."""
    api = _api(dll)
    assert api is not None, "realms are not available"
    api.set_hook(isolate, api.hook)


def heap_used_bytes(dll: Any, isolate: int) -> int:
    """The bytes `isolate`'s heap holds, garbage not yet collected included (on its
    thread, in a callback)."""
    api = _api(dll)
    assert api is not None, "realms are not available"
    statistics = (ctypes.c_size_t * (_HEAP_STATISTICS_BYTES // ctypes.sizeof(ctypes.c_size_t)))()
    api.heap_statistics(isolate, ctypes.addressof(statistics))
    return int(statistics[_USED_HEAP_SIZE])
