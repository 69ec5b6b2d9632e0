"""What the harnesses share: turning fuzzer bytes into valid-then-mutated inputs.

libFuzzer mutates raw bytes; these helpers read those bytes through a
``FuzzedDataProvider`` as *edits to a valid input* (byte edits, truncation,
insertion, or a structural edit of a JSON document), so the fuzzer spends its
time past the first parse instead of on inputs every parser rejects at once.
Nothing here imports edgepersona: harnesses import it under instrumentation.
"""

from __future__ import annotations

import copy
import json
import sys
from collections import Counter
from typing import Any

import atheris

KNOWN_BUG_HITS: Counter[str] = Counter()


def tolerate_known_bug(name: str) -> None:
    """Count a hit of a known bug; say so on the 1st, 10th, 100th... (libFuzzer exits without atexit)."""
    KNOWN_BUG_HITS[name] += 1
    count = KNOWN_BUG_HITS[name]
    if count == 10 ** (len(str(count)) - 1):
        print(f"known bug (tolerated), hit {count} times: {name}", file=sys.stderr, flush=True)


def mutate_bytes(fdp: atheris.FuzzedDataProvider, base: bytes) -> bytes:
    """``base`` after up to 8 edits read from the fuzzer (set, flip, cut, insert, duplicate)."""
    data = bytearray(base)
    for _ in range(fdp.ConsumeIntInRange(1, 8)):
        op = fdp.ConsumeIntInRange(0, 4)
        at = fdp.ConsumeIntInRange(0, max(len(data) - 1, 0))
        if op == 0 and data:
            data[at] = fdp.ConsumeInt(1) & 0xFF
        elif op == 1 and data:
            data[at] ^= 1 << fdp.ConsumeIntInRange(0, 7)
        elif op == 2:
            del data[at:at + fdp.ConsumeIntInRange(1, 64)]
        elif op == 3:
            data[at:at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 32))
        else:
            data[at:at] = data[at:at + fdp.ConsumeIntInRange(1, 64)]
    return bytes(data)


def json_value(fdp: atheris.FuzzedDataProvider, depth: int = 0) -> Any:
    """Any JSON value (huge and non-finite numbers included), at most 3 levels deep."""
    kind = fdp.ConsumeIntInRange(0, 8 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return fdp.ConsumeBool()
    if kind == 2:
        return fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 200))  # up to 1600-bit integers
    if kind == 3:
        return fdp.ConsumeFloat()  # includes inf and nan
    if kind == 4:
        return fdp.ConsumeUnicode(fdp.ConsumeIntInRange(0, 24))
    if kind == 5:
        return fdp.PickValueInList([0, -1, 1, 0.5, "", "value", "*", "log1p", "half_life", "blend"])
    if kind == 6:
        return fdp.ConsumeRegularFloat()
    if kind == 7:
        return [json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))]
    return {fdp.ConsumeUnicode(8): json_value(fdp, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 3))}


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    found = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            found += _paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += _paths(value, (*path, index))
    return found


def mutate_json(fdp: atheris.FuzzedDataProvider, document: Any) -> bytes:
    """``document`` after 1-3 structural edits read from the fuzzer, serialised."""
    doc = copy.deepcopy(document)
    for _ in range(fdp.ConsumeIntInRange(1, 3)):
        paths = _paths(doc)
        path = paths[fdp.ConsumeIntInRange(0, len(paths) - 1)]
        if not path:
            doc = json_value(fdp)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0:
            parent[path[-1]] = json_value(fdp)
        elif op == 1:
            del parent[path[-1]]
        elif op == 2 and isinstance(parent, dict):
            parent[fdp.ConsumeUnicode(8)] = json_value(fdp)
        else:
            parent[path[-1]] = [parent[path[-1]]]
    text = json.dumps(doc, allow_nan=True)
    if fdp.ConsumeIntInRange(0, 15) == 0:
        depth = fdp.PickValueInList([100, 5_000])
        text = "[" * depth + text + "]" * depth
    return text.encode()


def mutated(fdp: atheris.FuzzedDataProvider, raw: bytes, *, document: Any = None) -> bytes:
    """A byte-level or (if ``document`` is given) JSON-level mutation of ``raw``; or raw fuzzer bytes."""
    how = fdp.ConsumeIntInRange(0, 2 if document is not None else 1)
    if how == 0:
        return bytes(fdp.ConsumeBytes(fdp.remaining_bytes()))
    if how == 1:
        return mutate_bytes(fdp, raw)
    return mutate_json(fdp, document)
