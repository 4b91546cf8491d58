"""What controls a run from outside: its lock (one writer per run folder) and the stop signals
(SIGINT, SIGTERM) that the driver reads at chunk boundaries."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from pathlib import Path

from .._errors import RunLocked


LOCK = ".lock"


@contextlib.contextmanager
def run_lock(run_dir: Path):
    """Holds `<run_dir>/.lock` (an exclusive `flock`) while a run writes the folder: a second
    writer fails at once, naming the folder and the holder. The kernel releases the lock when its
    holder dies, so a stale lock (holder gone) is taken over, with a message."""
    import fcntl
    import socket

    run_dir.mkdir(parents=True, exist_ok=True)
    handle = open(run_dir / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise RunLocked(f"{run_dir} is being written by {holder}; wait for it or choose another --out.") from None
    handle.seek(0)
    stale = handle.read().strip()
    if stale:
        print(f"[l2lgd] {run_dir}: taking over the lock of {stale}, which is gone.", file=sys.stderr)
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()} ({' '.join(sys.argv[:3])})\n")
    handle.flush()
    try:
        yield
    finally:
        handle.seek(0)
        handle.truncate()  # a clean release leaves an empty lock file
        handle.flush()
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


@contextlib.contextmanager
def stop_signals():
    """SIGINT and SIGTERM set a flag that the driver reads at each chunk boundary; a second
    SIGINT stops at once. Only in the main thread (elsewhere signals cannot be caught)."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return

    def handler(signum, frame):
        if received and signum == signal.SIGINT:
            os._exit(130)
        received.append(signum)
        print(f"\n[l2lgd] {signal.Signals(signum).name}: stopping at the end of this chunk (Ctrl-C again to stop now).",
              file=sys.stderr, flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
