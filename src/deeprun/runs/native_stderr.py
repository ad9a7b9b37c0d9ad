"""tensorstore (orbax's writer) reports some errors from its C++ threads straight to file descriptor 2, past
Python's hooks: after a failed checkpoint write (a full disk, a read-only folder), one traceback per chunk
still in flight, each ending ``RuntimeError: Event loop is closed``. While checkpoints are written, fd 2
goes through a pipe whose reader drops exactly those tracebacks and passes everything else on unchanged;
the failure itself is reported once, as an OSError (:mod:`deeprun.runs.checkpoints`)."""

from __future__ import annotations

import os
import sys
import threading

_DROPPED = b"RuntimeError: Event loop is closed"


class WriterTracebackFilter:
    """Active from construction until :meth:`close` (which forwards what is left and restores fd 2).
    One per process: use :func:`acquire` and :func:`release`."""

    def __init__(self) -> None:
        sys.stderr.flush()
        self._original = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read,), name="deeprun-stderr", daemon=True)
        self._thread.start()

    def _pump(self, read: int) -> None:
        # Tracebacks of several threads may interleave: a block lasts while any traceback in it is open
        # (each opens with its header and closes with its unindented exception line).
        block: list[bytes] = []
        open_tracebacks, only_dropped = 0, True
        with os.fdopen(read, "rb", buffering=0) as pipe:
            for line in iter(pipe.readline, b""):
                if line.startswith(b"Traceback (most recent call last):"):
                    open_tracebacks += 1
                elif open_tracebacks and not line[:1].isspace():
                    open_tracebacks -= 1
                    only_dropped = only_dropped and line.startswith(_DROPPED)
                elif not open_tracebacks:
                    os.write(self._original, line)
                    continue
                block.append(line)
                if not open_tracebacks:
                    if not only_dropped:
                        os.write(self._original, b"".join(block))
                    block, only_dropped = [], True
        if block:
            os.write(self._original, b"".join(block))

    def close(self) -> None:
        sys.stderr.flush()
        os.dup2(self._original, 2)  # the pipe's last write end closes: the reader sees its end
        self._thread.join(timeout=5)
        os.close(self._original)


_active: WriterTracebackFilter | None = None
_users = 0


def acquire() -> None:
    """Filter fd 2 while at least one checkpoint writer is alive (the fused runs of a sweep share one)."""
    global _active, _users
    if _active is None:
        _active = WriterTracebackFilter()
    _users += 1


def release() -> None:
    global _active, _users
    _users -= 1
    if _users == 0 and _active is not None:
        _active.close()
        _active = None
