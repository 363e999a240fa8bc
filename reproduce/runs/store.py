"""The results store: one JSON file per finished run, named by the run's key,
and a claim file per run being trained, so that several sweeps (two
terminals, or machines sharing the folder) never train a run twice.

A record is written whole or not at all (temp file + rename). A claim is a
file `<key>.claim` holding its owner (host, pid, a unique id); its owner
touches it every `heartbeat` seconds while it trains. A claim is stale, and is
taken over, when its owner is a dead process on this host, or when it has not
been touched for `stale_after` seconds (an owner on another machine that
died).

Every change to a claim (creating one, taking over a stale one, releasing
one's own) happens while holding an exclusive `fcntl.lockf` lock on the
store's `.claims.lock`, so of several sweeps racing for the same run exactly
one becomes its owner; the operating system drops the lock of a process that
dies, so a killed sweep never blocks the others. A claim is written to a temp
file first and then linked (or, over a stale one, renamed) into place, so a
claim file is never seen empty or half-written. POSIX locks work on local
disks and on NFS (v4, or v3 with lockd).

Example:

>>> store = RunStore("results/small_batch")
>>> claim = store.claim(config)
>>> if claim:
...     if store.load(config) is None:
...         store.save(config, train_the_run(config))
...     claim.release()
"""

import contextlib
import fcntl
import base64
import dataclasses
import json
import os
import tempfile
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from reproduce.runs.cli import save_atomic

HOST = socket.gethostname()


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One finished run as the store keeps it (`<key>.json`).

    Attributes:
        status: "finished" or "diverged" (a run whose loss became NaN).
        rows: one dict per epoch (updates, batch size, rate, loss, accuracies...).
        wall_time: seconds of training.
        config: the run's `RunConfig` fields, and `key` its content hash.
        threads: the thread budget it trained with.
        test_correct: which test examples the final model classifies right,
            encoded (`encode_correct`; `correct` decodes it, `test_size` counts).
        measures: the figure's measurements after training, if any.

    Example:

    >>> record = Sweep("results/small_batch").load(config)
    >>> record.status, record.rows[-1]["test_accuracy"], record.test_size
    """

    status: str
    rows: list = dataclasses.field(default_factory=list)
    wall_time: float = 0.0
    config: dict = None
    key: str = None
    threads: int = None
    test_correct: str = None
    measures: dict = None

    @classmethod
    def of(cls, data):
        """From the dict `train_record` makes or a JSON file holds (unknown keys
        are kept out; a record from before a field existed reads it as None)."""
        if isinstance(data, cls):
            return data
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def as_dict(self):
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    @property
    def correct(self):
        """The per-example correctness on the test set (bool array), or None."""
        return decode_correct(self.test_correct) if self.test_correct else None

    @property
    def test_size(self):
        """How many test examples the final accuracy is over, or None."""
        return int(self.test_correct.split(":", 1)[0]) if self.test_correct else None

    @property
    def final(self):
        """The last epoch's row ({} for a run that recorded none)."""
        return self.rows[-1] if self.rows else {}

    def __getitem__(self, name):
        """Read as the dict it was before it had a type: record["rows"]."""
        return getattr(self, name)

    def get(self, name, default=None):
        value = getattr(self, name, None)
        return default if value is None else value


def encode_correct(correct):
    """A boolean vector as a compact string for the JSON record: its length,
    then its bits packed and in base64 ("10000:..."; 1.7 kB for 10,000)."""
    correct = np.asarray(correct, bool)
    packed = base64.b64encode(np.packbits(correct).tobytes()).decode("ascii")
    return f"{len(correct)}:{packed}"


def decode_correct(text):
    """The boolean vector that `encode_correct` wrote."""
    n, packed = text.split(":", 1)
    bits = np.unpackbits(np.frombuffer(base64.b64decode(packed), np.uint8))
    return bits[:int(n)].astype(bool)


class RunStore:
    """A folder of finished runs (`<key>.json`) and claims (`<key>.claim`).

    Args:
        folder: the store; created on the first write.
        heartbeat: seconds between an owner's touches of its claims.
        stale_after: seconds without a touch after which a claim whose owner
            cannot be checked (another host) is taken over. Longer than
            `heartbeat` by a wide margin: a loaded machine may touch late.
    """

    def __init__(self, folder, heartbeat=30.0, stale_after=300.0):
        if stale_after <= 2 * heartbeat:
            raise ValueError(f"stale_after={stale_after}: expected more than twice "
                             f"heartbeat={heartbeat}, or live claims look stale.")
        self.folder = Path(folder)
        self.heartbeat, self.stale_after = heartbeat, stale_after

    def path(self, config):
        return self.folder / f"{config.key}.json"

    def claim_path(self, config):
        return self.folder / f"{config.key}.claim"

    def load(self, config):
        """The stored `RunRecord` of `config`, or None."""
        try:
            return RunRecord.of(json.loads(self.path(config).read_text()))
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # cannot happen with atomic writes; be safe
            return None

    def save(self, config, record):
        """Writes `record` (a `RunRecord` or its dict) whole, atomically."""
        data = record.as_dict() if isinstance(record, RunRecord) else record
        save_atomic(self.path(config), lambda tmp: Path(tmp).write_text(
            json.dumps(data, indent=1, default=float)))

    def claim(self, config):
        """A live `Claim` on `config` (call its `release()` when done), or None
        if another live owner holds it."""
        claim = Claim(self.claim_path(config), self.heartbeat, self.locked)
        return claim if claim.acquire(self.stale_after) else None

    @contextlib.contextmanager
    def locked(self):
        """Holds the store's claims lock (every claim change happens under it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / LOCK_NAME, "a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(lock, fcntl.LOCK_UN)


LOCK_NAME = ".claims.lock"


class Claim:
    """One process's exclusive right to train one run (see the module doc).

    Args:
        path: the claim file.
        heartbeat: seconds between touches while held.
        locked: a context manager holding the store's claims lock.
    """

    def __init__(self, path, heartbeat, locked):
        self.path = Path(path)
        self.heartbeat, self.locked = heartbeat, locked
        self.token = dict(host=HOST, pid=os.getpid(), id=uuid.uuid4().hex)
        self.lost = False  # taken over by another sweep (we looked dead to it)
        self._stop = threading.Event()
        self._thread = None

    def acquire(self, stale_after):
        """True if this process now owns the claim (taking over a stale one)."""
        with self.locked():
            owner = owner_of(self.path)
            if owner is not None and not is_stale(self.path, owner, stale_after):
                return False
            self._place(replace=owner is not None)
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return True

    def _place(self, replace):
        """Writes the token to a temp file, then links it into place (a new
        claim) or renames it over the stale one: the claim is whole from the
        moment it exists."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.",
                                   suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as file:
                json.dump(self.token, file)
            if replace:
                os.replace(tmp, self.path)
            else:
                os.link(tmp, self.path)  # fails if the file exists: never two owners
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def release(self):
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self.locked():
            if owner_of(self.path) == self.token:
                self.path.unlink()

    def _beat(self):
        while not self._stop.wait(self.heartbeat):
            with self.locked():
                if owner_of(self.path) != self.token:
                    self.lost = True  # another sweep took it over; leave its claim alone
                    return
                os.utime(self.path)


def owner_of(path):
    """The token in a claim file, None if there is none, {} if it cannot be
    read (a file no claim of this module writes: it counts as stale)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return owner if isinstance(owner, dict) else {}


def is_stale(path, owner, stale_after):
    """Unreadable, a dead owner on this host, or no heartbeat for `stale_after` seconds."""
    if not owner:
        return True
    if owner.get("host") == HOST and isinstance(owner.get("pid"), int):
        try:
            os.kill(owner["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, someone else's
    try:
        age = time.time() - Path(path).stat().st_mtime
    except FileNotFoundError:
        return False
    return age > stale_after
