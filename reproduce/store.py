"""The results store: one JSON file per finished run, named by the run's key,
and a claim file per run being trained, so that several sweeps (two
terminals, or machines sharing the folder) never train a run twice.

A record is written whole or not at all (temp file + rename). A claim is a
file `<key>.claim` created with O_CREAT | O_EXCL, which exactly one process
can do; it holds the owner (host, pid) and its owner touches it every
`heartbeat` seconds while it trains. A claim is stale, and is taken over,
when its owner is a dead process on this host, or when it has not been
touched for `stale_after` seconds (an owner on another machine that died).

Example:

>>> store = RunStore("results/small_batch")
>>> claim = store.claim(config)
>>> if claim:
...     if store.load(config) is None:
...         store.save(config, train_the_run(config))
...     claim.release()
"""

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from reproduce.cli import save_atomic

HOST = socket.gethostname()


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
        """The stored record of `config`, or None."""
        try:
            return json.loads(self.path(config).read_text())
        except FileNotFoundError:
            return None
        except json.JSONDecodeError:  # cannot happen with atomic writes; be safe
            return None

    def save(self, config, record):
        save_atomic(self.path(config), lambda tmp: Path(tmp).write_text(
            json.dumps(record, indent=1, default=float)))

    def claim(self, config):
        """A live `Claim` on `config` (call its `release()` when done), or None
        if another live owner holds it."""
        claim = Claim(self.claim_path(config), self.heartbeat)
        return claim if claim.acquire(self.stale_after) else None


class Claim:
    """One process's exclusive right to train one run (see the module doc)."""

    def __init__(self, path, heartbeat):
        self.path = Path(path)
        self.heartbeat = heartbeat
        self.token = dict(host=HOST, pid=os.getpid(), id=uuid.uuid4().hex)
        self._stop = threading.Event()
        self._thread = None

    def acquire(self, stale_after):
        """True if this process now owns the claim (taking over a stale one)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):  # once as is, once after taking over a stale claim
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._take_over_if_stale(stale_after):
                    return False
                continue
            with os.fdopen(fd, "w") as file:
                json.dump(self.token, file)
            self._thread = threading.Thread(target=self._beat, daemon=True)
            self._thread.start()
            return True
        return False

    def release(self):
        self._stop.set()
        if self._thread:
            self._thread.join()
        if owner_of(self.path) == self.token:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def _beat(self):
        while not self._stop.wait(self.heartbeat):
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def _take_over_if_stale(self, stale_after):
        """Moves a stale claim aside; True if it did. Moving (rename) is atomic,
        so of two processes taking over the same claim one moves it; if what
        was moved turns out to be a fresh claim made in between, it is put back."""
        owner = owner_of(self.path)
        if owner is None or not is_stale(self.path, owner, stale_after):
            return owner is None and not self.path.exists()
        aside = self.path.with_name(f"{self.path.name}.stale-{self.token['id']}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True  # someone else moved it; try to create ours
        if owner_of(aside) != owner:  # a fresh claim: give it back
            with contextlib.suppress(FileExistsError):
                os.link(aside, self.path)
            aside.unlink()
            return False
        aside.unlink()
        return True


def owner_of(path):
    """The token in a claim file, {} if it is being written, None if absent."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return {}


def is_stale(path, owner, stale_after):
    """A dead owner on this host, or no heartbeat for `stale_after` seconds."""
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
