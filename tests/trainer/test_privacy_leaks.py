"""Leak scans: raw user ids never leave a private training run.

An event log with distinctive ids (``user-`` and ten hex digits) is written as
CSV and trained on through the real reading path, both through the API
(read_event_log, compute_features, train_bundle with a ledger) and through the
CLI (``edgepersona train --events ... --epsilon ... --ledger ... --budget``).
Every file the run wrote (bundle folder, zip members, ledger, the working
directory), stdout and stderr at the file-descriptor level, every log record
and every progress message is scanned for each id: in UTF-8 and UTF-16, in
any letter case, also with whitespace removed (a console may wrap a line
inside an id), and for the hex part alone. The scan must find 0 hits, and the
same scan must find ids planted in a file, a zip member, a log record and a
manifest (so it is known to be able to fail).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import FeatureSpec
from edgepersona.trainer.cli import main
from edgepersona.trainer.data.events import read_event_log
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.privacy.ledger import PrivacyLedger
from edgepersona.trainer.release.export import write_bundle, zip_bundle
from edgepersona.trainer.release.train import TrainOptions, train_bundle

USERS_PER_GROUP = 40
REFERENCE = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0
# Per behaviour group: sessions, purchases, mean purchase value, views, categories, days active.
GROUPS = ((40, 12, 90.0, 30, 20, 60), (3, 1, 15.0, 2, 2, 90), (25, 2, 200.0, 15, 8, 30))


def raw_ids(n: int, seed: int = 7) -> list[str]:
    """Distinctive raw ids like ``user-7f3a91c2e4`` (ten hex digits: no accidental match)."""
    rng = np.random.default_rng(seed)
    return [f"user-{rng.integers(0, 16**10):010x}" for _ in range(n)]


def write_events(path: Path, ids: Sequence[str], dropped: str) -> Path:
    """An event log for the small spec; ``dropped`` only has rows the reader rejects."""
    rng = np.random.default_rng(11)
    lines = ["user_id,timestamp,event,value,category"]
    for number, user in enumerate(ids):
        sessions, purchases, basket, views, categories, days = GROUPS[number % len(GROUPS)]
        for event, count in (("session", sessions), ("purchase", purchases), ("view", views)):
            for _ in range(max(1, int(rng.poisson(count)))):
                when = REFERENCE - rng.uniform(0.0, days) * DAY
                value = f"{rng.lognormal(np.log(basket), 0.3):.2f}" if event == "purchase" else ""
                category = f"c{rng.integers(categories)}" if event == "view" else ""
                lines.append(f"{user},{when:.0f},{event},{value},{category}")
    lines += [f"{dropped},not-a-time,session,,", f"{dropped},{REFERENCE:.0f},,,"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the scanner -------------------------------------------------------------------------------

def needles(ids: Iterable[str]) -> dict[bytes, str]:
    """Byte patterns (lower case) that give an id away: whole id and hex part, UTF-8 and UTF-16."""
    found: dict[bytes, str] = {}
    for user in ids:
        for part in (user, user.removeprefix("user-")):
            for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
                found[part.lower().encode(encoding)] = user
    return found


def file_blobs(*roots: Path) -> dict[str, bytes]:
    """Every file under the roots, with zip members and gzip files also decompressed."""
    blobs: dict[str, bytes] = {}
    for root in roots:
        for path in sorted(p for p in [root, *root.rglob("*")] if p.is_file()):
            data = blobs[str(path)] = path.read_bytes()
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        blobs[f"{path}!{member}"] = archive.read(member)
            elif data[:2] == b"\x1f\x8b":
                blobs[f"{path}!gunzip"] = gzip.decompress(data)
    return blobs


def log_text(records: Sequence[logging.LogRecord]) -> str:
    """Messages, arguments and tracebacks of log records."""
    return "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in records)


def scan(blobs: Mapping[str, bytes | str], ids: Iterable[str]) -> list[tuple[str, str]]:
    """(where, id) for every id found in any blob."""
    patterns = needles(ids)
    hits = []
    for where, blob in blobs.items():
        data = (blob.encode("utf-8") if isinstance(blob, str) else blob).lower()
        for haystack in (data, re.sub(rb"\s+", b"", data)):
            hits += [(where, user) for needle, user in patterns.items() if needle in haystack]
    return sorted(set(hits))


# --- fixtures ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ids() -> list[str]:
    return raw_ids(len(GROUPS) * USERS_PER_GROUP + 1)  # the last one's rows are all bad


@pytest.fixture
def inputs(tmp_path: Path, ids: list[str], bundle_spec: FeatureSpec) -> tuple[Path, Path]:
    folder = tmp_path / "inputs"
    folder.mkdir()
    spec_path = folder / "spec.json"
    spec_path.write_text(bundle_spec.to_json(), encoding="utf-8")
    return write_events(folder / "events.csv", ids[:-1], dropped=ids[-1]), spec_path


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder for everything the run writes; also the working directory."""
    folder = tmp_path / "outputs"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


# --- private runs leak no id ------------------------------------------------------------------

def test_a_private_train_bundle_run_leaks_no_raw_id(
        inputs: tuple[Path, Path], outputs: Path, ids: list[str], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    log = read_event_log(inputs[0])
    assert set(log.user_keys) == set(ids[:-1]) and ids[-1] not in log.user_keys  # ids were read
    assert sum(log.bad_rows.values()) == 2
    rows = compute_features(log, bundle_spec)
    ledger = outputs / "ledger.jsonl"
    PrivacyLedger(ledger, signing_key).set_budget("events.csv", epsilon=3.0, delta=1e-5)
    messages: list[str] = []
    options = TrainOptions(model_id="leak-scan", k=3, k_min=5, seed=3, epsilon=1.0, ledger=ledger,
                           source=log.source)
    result = train_bundle(rows, bundle_spec, signing_key, options,
                          lineage={"source": log.source, "users": log.n_users},
                          bad_rows=log.bad_rows, progress=messages.append, user_ids=log.user_keys)
    assert result.manifest.privacy.epsilon == 1.0 and len(result.manifest.personas) >= 2
    write_bundle(outputs / "bundle", result.files)
    zip_bundle(result.files, outputs / "bundle.zip")
    captured = capfd.readouterr()
    blobs: dict[str, bytes | str] = {
        **file_blobs(outputs), "stdout": captured.out, "stderr": captured.err,
        "logs": log_text(caplog.records), "progress": "\n".join(messages),
        "result": repr((result.manifest, result.merged))}
    assert {"ledger.jsonl", "manifest.json", "model.onnx", "cards.md", "cards.json"} <= {
        Path(where.split("!")[-1]).name for where in blobs}
    assert scan(blobs, ids) == []


def test_the_private_cli_train_leaks_no_raw_id(
        inputs: tuple[Path, Path], outputs: Path, ids: list[str], signing_keys: Any,
        capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    events, spec = inputs
    code = main(["train", "--events", str(events), "--spec", str(spec),
                 "--key", str(signing_keys.private_path),
                 "--out", str(outputs / "bundle"), "--zip", "--k", "3", "--k-min", "5",
                 "--seed", "3", "--model-id", "leak-scan", "--epsilon", "1.0",
                 "--ledger", str(outputs / "ledger.jsonl"), "--budget", "3,1e-5"])
    captured = capfd.readouterr()
    assert code == 0, captured.err
    assert "bad rows" in captured.out and "ε=1" in captured.out  # the console was captured
    blobs: dict[str, bytes | str] = {**file_blobs(outputs), "stdout": captured.out,
                                     "stderr": captured.err, "logs": log_text(caplog.records)}
    written = {Path(where.split("!")[-1]).name for where in blobs}
    assert {"ledger.jsonl", "manifest.json", "model.onnx", "cards.md", "cards.json",
            "bundle.zip"} <= written
    assert scan(blobs, ids) == []
    # lineage.source (shipped to every device), the ledger and the audit carry an opaque
    # label, never the training file's name.
    manifest = json.loads((outputs / "bundle" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["lineage"]["source"].startswith("source-")
    assert scan(blobs, [events.name]) == []


# --- the scan can fail --------------------------------------------------------------------------

def test_the_scan_finds_ids_planted_in_files_archives_and_logs(tmp_path: Path, ids: list[str],
                                                                bundle_files: Mapping[str, bytes]
                                                                ) -> None:
    clean = write_bundle(tmp_path / "clean" / "bundle", bundle_files)
    assert scan(file_blobs(clean.parent), ids) == []
    leaky = tmp_path / "leaky"
    shutil.copytree(clean.parent, leaky)
    (leaky / "bundle" / "labels.csv").write_text(f"user,persona\n{ids[0]},2\n", encoding="utf-8")
    with zipfile.ZipFile(leaky / "bundle.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("notes.txt", f"kept for debugging: {ids[1]}".encode("utf-16"))
    (leaky / "dump.gz").write_bytes(gzip.compress(ids[2].upper().encode()))
    record = logging.LogRecord("trainer", logging.INFO, __file__, 1, "fitted %s", (ids[3],), None)
    hits = scan({**file_blobs(leaky), "logs": log_text([record]),
                 "stdout": f"assigned {ids[4][:9]}\n{ids[4][9:]}"}, ids)
    assert {user for _, user in hits} == set(ids[:5])
    assert {where.rsplit("/", 1)[-1] for where, _ in hits} >= {
        "labels.csv", "bundle.zip!notes.txt", "dump.gz!gunzip", "logs", "stdout"}


def test_the_scan_finds_an_id_that_a_real_run_writes(
        bundle_training_rows: npt.NDArray[np.float64], bundle_spec: FeatureSpec,
        signing_key: Ed25519PrivateKey, ids: list[str], tmp_path: Path) -> None:
    # The source name is copied into the lineage, the privacy notes and the ledger: a
    # source (by default the event log's file name) named after a user leaks that id.
    ledger = tmp_path / "ledger.jsonl"
    PrivacyLedger(ledger, signing_key).set_budget(ids[5], epsilon=3.0, delta=1e-5)
    options = TrainOptions(model_id="leaky", k=4, k_min=5, seed=3, epsilon=1.0, ledger=ledger,
                           source=ids[5])
    result = train_bundle(bundle_training_rows, bundle_spec, signing_key, options,
                          lineage={"source": ids[5]},
                          user_ids=[f"row-{i}" for i in range(len(bundle_training_rows))])
    write_bundle(tmp_path / "bundle", result.files)
    hits = scan(file_blobs(tmp_path), ids)
    assert set(hits) == {(str(ledger), ids[5]), (str(tmp_path / "bundle" / "manifest.json"), ids[5])}


# --- malformed rows are never quoted --------------------------------------------------------------

MALFORMED_ROWS = {
    "extra field": "{user},1740000000,session,,,extra",
    "missing fields": "{user},1740000000",
    "unclosed quote": '"{user},1740000000,session,,',
}


@pytest.mark.parametrize("command", ["train", "spec suggest", "assign"])
@pytest.mark.parametrize("kind", sorted(MALFORMED_ROWS))
def test_errors_about_a_malformed_row_never_quote_it(
        command: str, kind: str, inputs: tuple[Path, Path], outputs: Path, ids: list[str],
        signing_keys: Any, bundle_dir: Path, capfd: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    events, spec = inputs
    planted = ids[-1]  # in no good row: a hit can only come from the malformed one
    lines = events.read_text(encoding="utf-8").splitlines()
    lines.insert(len(lines) // 2, MALFORMED_ROWS[kind].format(user=planted))
    events.write_text("\n".join(lines) + "\n", encoding="utf-8")
    public = outputs.parent / "trusted.pub.pem"
    public.write_bytes(signing_keys.public_pem)
    args = {"train": ["train", "--events", str(events), "--spec", str(spec), "--key",
                      str(signing_keys.private_path), "--out", str(outputs / "bundle"), "--k", "3"],
            "spec suggest": ["spec", "suggest", str(events), "--out", str(outputs / "spec.json")],
            "assign": ["assign", str(bundle_dir), "--trusted-key", str(public), "--events",
                       str(events), "--json"]}[command]
    code = main(args)
    captured = capfd.readouterr()
    assert code == 1, captured.err
    assert len(captured.err.splitlines()) == 1 and "cannot read events.csv" in captured.err
    assert "row" in captured.err or "binary" in captured.err
    blobs: dict[str, bytes | str] = {**file_blobs(outputs), "stdout": captured.out,
                                     "stderr": captured.err, "logs": log_text(caplog.records)}
    assert scan(blobs, [planted]) == []


@pytest.mark.parametrize("dynamic", [False, True], ids=["quickstart", "quickstart-dynamic"])
def test_no_quickstart_manifest_names_the_training_file(dynamic: bool, tmp_path: Path) -> None:
    # lineage.source ships to every device: an opaque label, never the file's name.
    work = tmp_path / "work"
    assert main(["quickstart", "--dir", str(work), "--show", "0",
                 *(["--dynamic"] if dynamic else [])]) == 0
    manifests = {where: json.loads(blob) for where, blob in file_blobs(work).items()
                 if where.endswith("manifest.json")}
    assert len(manifests) == (3 if dynamic else 2)  # folders and zip members
    named = [where for where, m in manifests.items() if "retail_events" in json.dumps(m).lower()]
    assert named == []
    sources = {m["lineage"]["source"] for m in manifests.values()}
    assert len(sources) == 1 and sources.pop().startswith("source-")  # one opaque label per line
    if dynamic:  # its released (now expired) bundles claim no ε: the folder audit passes
        assert all(m["privacy"]["epsilon"] is None for m in manifests.values())
        assert main(["audit", str(work / "bundles"), "--trusted-key", str(work / "keys")]) == 0
