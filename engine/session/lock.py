"""One owner per output folder: an exclusive flock on `OUTPUT/.osstune.lock`.

The front-end's session takes it before it writes anything there (config.yaml included) and
hands the same open file to the engine it starts (`pass_fds`), so the lock lives as long as the
engine does, whether or not the front-end survives. The engine checks it is the owner
(`claim_for_engine`): a direct `python -m osstune.engine.trainer.train` takes the lock itself,
a launched one recognises its launcher's token (torchrun's workers do not inherit the file, their
agent holds it). The file holds who owns it (pid, host, start time), for the refusal message.

flock is released by the kernel when its last holder dies, so a lock whose owner is gone is free;
details left behind by a run that died are reported as a stale lock taken over. Torch-free.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

LOCK_FILE = ".osstune.lock"
TOKEN_ENV = "OSSTUNE_LOCK_TOKEN"


class RunLocked(RuntimeError):
    """Another live run owns the output folder."""


@dataclass(frozen=True)
class Owner:
    pid: int
    host: str
    started: float
    token: str

    def describe(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"pid {self.pid} on {self.host}, started {when}"


def _read_owner(fd: int) -> Owner | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw) if raw.strip() else None
        return Owner(int(data["pid"]), str(data["host"]), float(data["started"]),
                     str(data["token"])) if isinstance(data, dict) else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutputLock:
    """Held while the object lives (or until `release`); `fd` is what a launched engine inherits."""

    def __init__(self, path: Path, fd: int, owner: Owner, stale: Owner | None) -> None:
        self.path, self.fd, self.owner, self.stale = path, fd, owner, stale

    @classmethod
    def acquire(cls, output_dir: str | os.PathLike[str]) -> OutputLock:
        """Take the folder's lock or raise RunLocked naming the live run."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_owner(fd)
            os.close(fd)
            raise RunLocked(live_run_message(out, holder)) from None
        stale = _read_owner(fd)
        owner = Owner(os.getpid(), socket.gethostname(), time.time(), uuid.uuid4().hex)
        lock = cls(path, fd, owner, stale)
        lock.record(owner)
        return lock

    def record(self, owner: Owner) -> None:
        """Write who owns the folder (the launcher updates the pid to the engine's)."""
        self.owner = owner
        data = json.dumps(asdict(owner)).encode()
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def set_pid(self, pid: int) -> None:
        self.record(Owner(pid, self.owner.host, self.owner.started, self.owner.token))

    def stale_warning(self) -> str | None:
        if self.stale is None:
            return None
        return (f"took over the lock of {self.path.parent} from {self.stale.describe()}: that run "
                "ended without releasing it")

    def release(self) -> None:
        """Forget the owner and unlock (the engine may still hold its inherited copy)."""
        if self.fd < 0:
            return
        with contextlib.suppress(OSError):
            recorded = _read_owner(self.fd)
            if recorded is not None and recorded.token == self.owner.token:  # not a newer run's
                os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.fd = -1


def live_run_message(output_dir: Path, holder: Owner | None) -> str:
    who = holder.describe() if holder else "details unknown"
    return (f"output directory {output_dir} is in use by a live run ({who}); wait for it, stop "
            f"it (Ctrl-C in its terminal, or kill -INT {holder.pid if holder else 'PID'}), or "
            "use another --output")


def owner_of(output_dir: str | os.PathLike[str]) -> Owner | None:
    """The live run that holds the folder, or None when it is free."""
    path = Path(output_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_owner(fd) or Owner(0, "?", 0.0, "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def claim_for_engine(output_dir: str | os.PathLike[str]) -> OutputLock:
    """The engine's side: own the folder for the process's whole life or raise RunLocked.

    Launched by a session: the launcher holds the lock (this process or torchrun inherited it)
    and passed its token; the engine records its own pid. Run directly: take the lock. Returns
    the lock to keep alive until the process ends.
    """
    out = Path(output_dir)
    token = os.environ.get(TOKEN_ENV)
    try:
        lock = OutputLock.acquire(out)
    except RunLocked:
        if not token:
            raise
        fd = os.open(out / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
        holder = _read_owner(fd)
        if holder is None or holder.token != token:
            os.close(fd)
            raise RunLocked(live_run_message(out, holder)) from None
        adopted = OutputLock(out / LOCK_FILE, fd, holder, None)
        adopted.set_pid(os.getpid())
        return adopted
    if token:  # the launcher is gone and the lock with it: the engine owns the folder now
        lock.record(Owner(os.getpid(), lock.owner.host, lock.owner.started, token))
        lock.stale = None
    return lock
