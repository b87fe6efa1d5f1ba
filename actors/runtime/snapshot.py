"""A V8 startup snapshot that holds the prelude compiled, so that a context is ready
without parsing it (its 37 KB cost about 1.5 ms of a context's 5).

mini-racer makes every isolate from the snapshot built into its library, and takes no
other; V8 reads it through `v8::internal::Snapshot::DefaultSnapshotBlob()`, a pointer to
a static `StartupData` in read-only memory. So, once per process, right after V8 started
and before its first isolate, that record is pointed at a blob of ours (`install`),
which V8 itself built (`CreateSnapshotDataBlobInternal`, as `mksnapshot --embedded-src`
does) in a child process, with the same library and flags, from `factory_source()`:
each context then finds the prelude's function compiled, calls it, and deletes it.

Every failure here aborts the process inside V8 rather than raising, hence:
- the blob is built in a child process and cached on disk, keyed by everything it
  depends on (library, V8 version, flags, prelude), with a digest beside it;
- before it is installed, V8's own checks run on it (version, checksum: a release
  build skips the latter when it reads a blob, and trusts it);
- a build that failed (or hung) is not tried again for an hour by any process (it
  leaves a note beside the blob's place saying why);
- it is installed only by the process that started V8 (one that found V8 started
  may have isolates of the built-in blob alive: V8 shares one read-only heap among
  live isolates, and a blob of ours next to one of those aborts), and never replaced.
Anything unexpected leaves the built-in snapshot in place: contexts then evaluate the
whole prelude, as they always did. `CELLFLEET_V8_SNAPSHOT=0` turns it off.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from cellfleet.actors.runtime.prelude import factory_source

log = logging.getLogger(__name__)

SWITCH = "CELLFLEET_V8_SNAPSHOT"  # "0": the built-in snapshot, the whole prelude per context
BUILD_TIMEOUT_S = 30.0  # (it takes about 0.5 s)
RETRY_FAILED_BUILD_S = 3600.0  # a failed build is not tried again this long (per key)
_DEFAULT_BLOB = "_ZN2v88internal8Snapshot19DefaultSnapshotBlobEv"
_CREATE_BLOB = (
    "_ZN2v88internal30CreateSnapshotDataBlobInternalENS_15SnapshotCreator"
    "20FunctionCodeHandlingEPKcNS_4base5FlagsINS0_8Snapshot14SerializerFlagEiiEE"
)
_VERSION_IS_VALID = "_ZN2v88internal8Snapshot14VersionIsValidEPKNS_11StartupDataE"
_VERIFY_CHECKSUM = "_ZN2v88internal8Snapshot14VerifyChecksumEPKNS_11StartupDataE"
_KEEP_CODE = 1  # SnapshotCreator::FunctionCodeHandling::kKeep: the compiled prelude too
_HEADER_BYTES = 96  # (counts, checksums, the 64-byte version string, ...)
_installed: list[Any] = []  # the blob V8 reads from (alive as long as the process)


class _StartupData(ctypes.Structure):
    _fields_ = (("data", ctypes.c_void_p), ("raw_size", ctypes.c_int))


def in_use() -> bool:
    """Whether this process's contexts come from the prelude's snapshot."""
    return bool(_installed)


def install(dll: Any, flags: tuple[str, ...]) -> bool:
    """Make this process's isolates start from the prelude's snapshot; call once, right
    after this process started V8 with `flags`, before any isolate. False (nothing
    changed) if it is off or no sound blob could be had."""
    if os.environ.get(SWITCH, "").strip() == "0" or _installed:
        return bool(_installed)
    try:
        data = _sound_blob(dll, flags)
        if data is not None:
            _point_default_blob_at(dll, data)
    except Exception as error:  # (the built-in snapshot is always sound)
        log.warning("the prelude's V8 snapshot is not used: %s", error)
    return bool(_installed)


def _sound_blob(dll: Any, flags: tuple[str, ...]) -> bytes | None:
    """The cached blob, built now if missing; None if it fails V8's checks twice."""
    path = _cache_dir() / f"prelude-{_key(dll, flags)}.blob"
    failed = path.with_suffix(".failed")
    _refuse_if_failed_recently(failed)
    for _ in range(2):
        if not _cached(path):
            try:
                _build(path, flags)
            except Exception as error:
                _remember_failure(failed, error)
                raise
            failed.unlink(missing_ok=True)
        data = path.read_bytes()
        problem = _problem(dll, data)
        if problem is None:
            return data
        log.warning("the prelude's V8 snapshot %s is unsound (%s): built again", path, problem)
        path.unlink(missing_ok=True)
    return None


def _refuse_if_failed_recently(note: Path) -> None:
    """Raise if a process's build of this blob failed less than an hour ago (each
    process would pay for the same failure again: up to the build's timeout)."""
    try:
        age = time.time() - note.stat().st_mtime
        why = note.read_text("utf-8", errors="replace").strip()
    except OSError:  # (none: no failure known)
        return
    if 0 <= age < RETRY_FAILED_BUILD_S:
        raise OSError(
            f"its build failed {age:.0f} s ago ({why}); it is tried again an hour after, "
            f"or once {note} is deleted"
        )


def _remember_failure(note: Path, error: BaseException) -> None:
    with contextlib.suppress(OSError):  # (a full disk, say: the next process tries again)
        note.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        note.write_text(str(error)[-400:] or type(error).__name__, "utf-8")


def _key(dll: Any, flags: tuple[str, ...]) -> str:
    library = Path(dll._name)
    stat = library.stat()
    digest = hashlib.sha256()
    parts = (
        str(library.resolve()), str(stat.st_size), str(stat.st_mtime_ns),
        dll.mr_v8_version().decode(), " ".join(flags), factory_source(), _BUILDER,
    )  # fmt: skip
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:24]


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # (as the XDG spec says: a relative one is ignored)
        base = str(Path.home() / ".cache")
    return Path(base) / "cellfleet" / "v8-snapshots"


def _cached(path: Path) -> bool:
    """Whether `path` holds the blob its digest file names (a torn or edited one: no),
    and only this user could have written it (V8 trusts the code in it)."""
    sidecar = path.with_suffix(".sha256")
    try:
        for written in (path.parent, path, sidecar):
            stat = written.stat()
            if stat.st_uid != os.getuid() or stat.st_mode & 0o022:
                raise OSError(f"{written} is writable by others")
        return hashlib.sha256(path.read_bytes()).hexdigest() == sidecar.read_text().strip()
    except FileNotFoundError:
        return False


def _build(path: Path, flags: tuple[str, ...]) -> None:
    """Have a child process build the blob (a failure in V8 kills the child only). It is
    given the source and the flags, and imports nothing of cellfleet's (isolated: no
    `cellfleet/` of its working directory can stand in for ours)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        built, source = Path(scratch) / path.name, Path(scratch) / "prelude.js"
        source.write_text(factory_source(), "utf-8")
        child = [sys.executable, "-I", "-c", _BUILDER, str(source), str(built), *flags]
        try:
            run = subprocess.run(
                child, cwd=scratch, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=BUILD_TIMEOUT_S, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise OSError(f"its build did not end within {BUILD_TIMEOUT_S:.0f} s") from None
        if run.returncode != 0:
            raise OSError(f"its build failed ({run.returncode}): {run.stderr.strip()[-400:]}")
        digest = hashlib.sha256(built.read_bytes()).hexdigest()
        sidecar = Path(scratch) / "digest"
        sidecar.write_text(digest)
        for written in (built, sidecar):  # (whatever the umask: see `_cached`)
            written.chmod(0o644)
        os.replace(built, path)  # (atomic: processes building at once agree)
        os.replace(sidecar, path.with_suffix(".sha256"))


def _problem(dll: Any, data: bytes) -> str | None:
    """Why V8 would abort on `data` (or trust it wrongly), or None. (V8's checksum leaves
    out the header's first words: the count of contexts, and whether it rehashes.)"""
    if len(data) < _HEADER_BYTES:
        return "too short"
    contexts, rehashable = struct.unpack_from("<II", data)
    if contexts != 1 or rehashable not in (0, 1):
        return "a header not of ours"
    blob = _StartupData(ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value, len(data))
    for symbol, problem in ((_VERSION_IS_VALID, "another V8"), (_VERIFY_CHECKSUM, "corrupt")):
        check = dll[symbol]
        check.restype = ctypes.c_bool
        check.argtypes = [ctypes.POINTER(_StartupData)]
        if not check(ctypes.byref(blob)):
            return problem
    return None


def _point_default_blob_at(dll: Any, data: bytes) -> None:
    default = dll[_DEFAULT_BLOB]
    default.restype = ctypes.POINTER(_StartupData)
    default.argtypes = []
    record = default().contents
    kept = ctypes.create_string_buffer(data, len(data))
    address = ctypes.addressof(record)
    page = address & ~(mmap.PAGESIZE - 1)
    end = address + ctypes.sizeof(_StartupData)
    length = (end - page + mmap.PAGESIZE - 1) & ~(mmap.PAGESIZE - 1)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    if libc.mprotect(page, length, mmap.PROT_READ | mmap.PROT_WRITE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect: the snapshot's record stays read-only")
    record.data = ctypes.addressof(kept)
    record.raw_size = len(data)
    _installed.append(kept)
    libc.mprotect(page, length, mmap.PROT_READ)


# The child of `_build` (argv: source, blob, flags...): V8 started with those flags builds
# the blob (`SnapshotCreator::FunctionCodeHandling::kKeep`, 1: the compiled prelude too;
# the result, 16 bytes, comes back in two registers; V8's copy is left, once).
_BUILDER = f"""
import ctypes, sys
from py_mini_racer import init_mini_racer
class StartupData(ctypes.Structure):
    _fields_ = (("data", ctypes.c_void_p), ("raw_size", ctypes.c_int))
source, out, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
create = init_mini_racer(flags=flags)[{_CREATE_BLOB!r}]
create.restype = StartupData
create.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
blob = create({_KEEP_CODE}, open(source, "rb").read(), 0)
if not blob.data or blob.raw_size <= 0:
    sys.exit("V8 could not build the prelude's snapshot")
open(out, "wb").write(ctypes.string_at(blob.data, blob.raw_size))
"""
