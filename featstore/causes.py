"""The one line that names why a job failed: a Spark failure walked down to its root cause.

A failed Spark write reaches the driver as a ``Py4JJavaError`` ("An error occurred while
calling o159.parquet") whose text is hundreds of lines of Java stack; what went wrong is a few
``Caused by:`` levels down (``java.io.IOException: No space left on device``), and the path is
in another level's message (``Task failed while writing rows to file:/...``). :func:`root_cause`
walks the Java cause chain (through py4j) and the Python one (``__cause__``/``__context__``),
and names the first known cause with the deepest path it finds."""

from __future__ import annotations

import errno
import re

#: (what the line says, patterns of the chain's messages that mean it), most specific first
KNOWN: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("No space left on device", re.compile(r"No space left on device|ENOSPC|Disk quota exceeded")),
    ("Read-only file system", re.compile(r"Read-only file system|EROFS")),
    ("Permission denied", re.compile(r"Permission denied|AccessDeniedException|EACCES")),
    (
        "out of memory",
        re.compile(
            r"OutOfMemoryError|Java heap space|GC overhead limit|"
            r"MemoryError|Cannot allocate memory"
        ),
    ),
    (
        "a worker died",
        re.compile(
            r"Python worker exited unexpectedly|worker (?:crashed|died)|"
            r"ExecutorLostFailure|Connection reset|EOFException|"
            r"killed by signal|exit code 137|SIGKILL"
        ),
    ),
)
_ERRNO = {
    errno.ENOSPC: "No space left on device",
    errno.EDQUOT: "No space left on device",
    errno.EROFS: "Read-only file system",
    errno.EACCES: "Permission denied",
    errno.EPERM: "Permission denied",
    errno.ENOMEM: "out of memory",
}
_PATH = re.compile(r"(?:file:)?(/(?:[^\s'\",;()\[\]]+/)*[^\s'\",;:()\[\]]+)")
_JAVA_NOISE = re.compile(r"^\s+at |^\s+\.\.\. \d+ more|^Driver stacktrace:")


def _java_chain(exc: BaseException) -> list[str]:
    """``Class: message`` of a Py4JJavaError's Java exception and each of its causes."""
    out: list[str] = []
    java = getattr(exc, "java_exception", None)
    seen = 0
    while java is not None and seen < 32:
        try:
            out.append(f"{java.getClass().getName()}: {java.getMessage()}")
            java = java.getCause()
        except Exception:  # the JVM is gone: the text of the Python side still has the trace
            break
        seen += 1
    return out


def chain(exc: BaseException) -> list[str]:
    """Every message of the failure, outermost first: the Python chain, each Java chain in it,
    then the lines of the text (a trace printed into an exception's message)."""
    out: list[str] = []
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _ERRNO:
            where = e.filename or ""
            out.append(f"{_ERRNO[e.errno]}: {where}".rstrip(": "))
        out += _java_chain(e)
        out += [
            ln.strip() for ln in str(e).splitlines() if ln.strip() and not _JAVA_NOISE.match(ln)
        ]
        e = e.__cause__ or e.__context__
    return out


def root_cause(exc: BaseException) -> str | None:
    """One line, ``<cause> (<path>)``, for a failure whose cause is known (:data:`KNOWN`):
    the disk is full, a file is not writable, memory ran out, a worker died. None otherwise."""
    lines = chain(exc)
    for label, pattern in KNOWN:
        hits = [i for i, ln in enumerate(lines) if pattern.search(ln)]
        if not hits:
            continue
        detail = _detail(lines[hits[-1]], label)
        path = _path(lines, hits)
        return f"{label}{f': {path}' if path else ''}{f' ({detail})' if detail else ''}"
    return None


def _detail(line: str, label: str) -> str:
    """What the cause's own line adds (e.g. the Python worker's exit), without repeating it."""
    text = re.sub(r"^[\w.$]+(?:Error|Exception|Failure)?: ", "", line).strip()
    if label.lower() in text.lower() or len(text) > 160:
        return ""
    return text


def _path(lines: list[str], hits: list[int]) -> str | None:
    """The path the failure is about: in the cause's own line first, else the deepest path of
    the chain (a task's "writing rows to file:/..." names the file being written)."""
    for i in [*reversed(hits), *range(len(lines) - 1, -1, -1)]:
        if lines[i].startswith("File "):  # a Python traceback's frame, not the data
            continue
        found = [
            p
            for p in _PATH.findall(lines[i])
            if not p.startswith("/tmp/spark-")
            and p.count("/") > 1
            and not p.endswith((".py", ".jar", ".java"))
        ]
        if found:
            return found[-1].rstrip(".")  # "... to file:/x/out." ends a sentence
    return None
