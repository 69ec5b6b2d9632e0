"""Shared pieces of the fault campaigns: their size, a forking device worker, exact bookkeeping.

Every campaign runs SHORT in the normal suite and LONG when
``EDGEPERSONA_CAMPAIGN=long`` is set; each loop is bounded both by a count and
by a time limit (:class:`Budget`), and a run stopped by the time limit must
still have reached half of its count.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgepersona.sdk import Contribution
from edgepersona.trainer.collector import BundleShelf, nearest_personas

APP = "com.example.campaigns"  # the app id devices seal for
CAMPAIGN_ENV = "EDGEPERSONA_CAMPAIGN"
CHILD_SCRIPT = Path(__file__).with_name("campaign_device_child.py")
T = TypeVar("T")


def is_long() -> bool:
    """True when ``EDGEPERSONA_CAMPAIGN=long``; any value but short/long is a usage error."""
    mode = os.environ.get(CAMPAIGN_ENV, "short")
    if mode not in ("short", "long"):
        raise pytest.UsageError(f"{CAMPAIGN_ENV} must be 'short' or 'long', not {mode!r}")
    return mode == "long"


def sized(short: T, long: T) -> T:
    """The short or the long value of a campaign parameter."""
    return long if is_long() else short


@dataclass(frozen=True)
class BundleFiles:
    """The two test bundle versions as archives, and the public key that verifies them."""

    v1: Path
    v2: Path
    trusted_key: Path
    model_id: str
    personas: dict[int, int]  # version → persona count


@dataclass(frozen=True)
class CollectorFiles:
    """A collector key pair on disk and a bundles folder serving versions 1 and 2."""

    key_folder: Path
    private: bytes
    public_path: Path
    bundles: Path


class Budget:
    """Up to ``count`` rounds within ``seconds``; :meth:`check` fails a run cut below half its count.

    Args:
        count: Rounds wanted.
        seconds: Wall-clock limit of the whole loop.
    """

    def __init__(self, count: int, seconds: float) -> None:
        self.count, self.seconds = count, seconds
        self.done = 0
        self._deadline = time.monotonic() + seconds

    def rounds(self) -> Iterator[int]:
        """Round numbers, stopping at the count or the deadline."""
        for number in range(self.count):
            if time.monotonic() > self._deadline:
                return
            yield number
            self.done += 1

    def check(self) -> None:
        """Fail when the time limit cut the campaign below half of its count."""
        assert self.done * 2 >= self.count, (
            f"only {self.done} of {self.count} rounds ran within {self.seconds:g} s")


@dataclass(frozen=True)
class KilledRun:
    """What one forked child wrote before it was killed, and how it ended."""

    lines: tuple[str, ...]
    status: int

    @property
    def killed(self) -> bool:
        """Whether SIGKILL (and not an error or an exit) ended the child."""
        return os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL

    def numbers(self, word: str) -> list[int]:
        """The integer after ``word`` on each line that starts with it."""
        return [int(line.split()[1]) for line in self.lines if line.startswith(word + " ")]

    @property
    def last(self) -> str:
        """The last line's first word: where the kill landed (``forked`` if before any output)."""
        return self.lines[-1].split()[0] if self.lines else "forked"


def _started(lines: list[str]) -> bool:
    """Whether a child said ``ready``, or failed before it could."""
    return any(line == "ready" or line.startswith("error ") for line in lines)


class ForkingWorker:
    """Drives ``campaign_device_child.py``: fork a child per job, SIGKILL it, reap it.

    Args:
        log: Where the worker's stderr goes.
    """

    def __init__(self, log: Path) -> None:
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no threads to fork
        with log.open("wb") as err:
            self._process = subprocess.Popen([sys.executable, str(CHILD_SCRIPT)], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, stderr=err, env=env)
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        assert self._next(60.0) == "worker ready"

    def _read(self) -> None:
        assert self._process.stdout is not None
        for raw in self._process.stdout:
            self._lines.put(raw.decode().rstrip("\n"))
        self._lines.put("eof")

    def _next(self, timeout: float) -> str:
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the device worker said nothing for {timeout:g} s") from None
        assert line != "eof", "the device worker died"
        return line

    def _send(self, text: str) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(text.encode() + b"\n")
        self._process.stdin.flush()

    def kill_during(self, job: dict[str, Any], delay: float, *, after_ready: bool) -> KilledRun:
        """Fork a child for ``job``, SIGKILL it ``delay`` s after its start (or its ``ready``).

        Returns:
            The child's lines and wait status.
        """
        self._send(json.dumps(job))
        lines: list[str] = []
        pid = 0
        while pid <= 0 or (after_ready and not _started(lines)):
            line = self._next(30.0)
            if line.startswith("forked "):
                pid = int(line.split()[1])
            else:
                lines.append(line)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)  # pid > 0: never the process group; a zombie child is fine
        self._send("reap")
        while not (line := self._next(30.0)).startswith("reaped "):
            lines.append(line)
        return KilledRun(tuple(lines), int(line.split()[1]))

    def close(self) -> None:
        """End the worker (closing its stdin ends its loop)."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        self._reader.join(10)
        assert self._process.stdout is not None
        self._process.stdout.close()


def folded(count: int, subject: int) -> tuple[int, float]:
    """(events, value sum) of one subject after events ``1..count`` (see the child's docstring)."""
    numbers = range(2 - subject, count + 1, 2)
    return len(numbers), float(sum(numbers))


def matching_count(observed: list[tuple[int, float]], low: int, high: int) -> int | None:
    """The count ``n`` in ``low..high`` whose per-subject (events, sum) equal ``observed``, if any."""
    for count in range(low, high + 1):
        if all(folded(count, subject) == observed[subject] for subject in (0, 1)):
            return count
    return None


def dyadic_contributions(devices: int, per_device: int, *, days: Sequence[int], bundles: Path,
                         seed: int) -> list[Contribution]:
    """Valid version-1 contributions whose features are multiples of 1/4 in 0..5 (exact sums).

    ``0..5`` lies inside every feature's model-space bounds of the test spec; the
    day buckets take turns among ``days``; each persona is the one the bundle
    served from ``bundles`` assigns to the features (the collector checks it).
    """
    rng = random.Random(seed)
    assigner = BundleShelf(bundles).approved()[1].shape.assigner
    assert assigner is not None
    items = []
    for d in range(devices):
        for s in range(1, per_device + 1):
            features = tuple(rng.randint(0, 20) / 4 for _ in range(6))
            items.append(Contribution(
                pseudonym=hashlib.sha256(f"campaign-device-{d}".encode()).hexdigest(), pseudonym_epoch=1,
                sequence=s, day_bucket=days[(d + s) % len(days)], model_version=1,
                persona_index=min(nearest_personas(assigner, features)), features=features))
    return items
