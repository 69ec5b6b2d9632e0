"""User ids are text end to end: ``01``, ``1`` and ``001`` are three users."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from edgepersona.trainer.cli import main
from edgepersona.trainer.data.events import read_event_log, read_feature_table
from edgepersona.trainer.data.suggest import suggest_table_spec

IDS = ["01", "1", "001", "00001"]


def _events_csv(path: Path) -> Path:
    lines = ["user_id,timestamp,event,value"]
    for i, user in enumerate(IDS):  # users differ: 1, 4, 7 and 10 purchases
        for day in range(1 + 3 * i):
            lines.append(f"{user},2024-01-{day * 2 + i + 1:02d}T10:00:00,purchase,{day % 7 + i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_numeric_looking_ids_in_a_csv_event_log_stay_distinct_text(tmp_path: Path) -> None:
    log = read_event_log(_events_csv(tmp_path / "events.csv"))
    assert sorted(log.user_keys) == sorted(IDS)
    assert log.n_users == 4


def test_string_ids_in_a_parquet_event_log_keep_their_zeros(tmp_path: Path) -> None:
    table = pa.table({"user_id": IDS, "timestamp": [1.7e9] * 4, "event": ["buy"] * 4})
    pq.write_table(table, tmp_path / "events.parquet")
    assert sorted(read_event_log(tmp_path / "events.parquet").user_keys) == sorted(IDS)


def test_numeric_parquet_ids_come_back_as_written_without_a_float_suffix(tmp_path: Path) -> None:
    table = pa.table({"user_id": [12345.0, 7.0], "timestamp": [1.7e9] * 2, "event": ["buy"] * 2})
    pq.write_table(table, tmp_path / "events.parquet")
    assert sorted(read_event_log(tmp_path / "events.parquet").user_keys) == ["12345", "7"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_feature_table_user_column_keeps_leading_zeros(tmp_path: Path, suffix: str) -> None:
    spec = suggest_table_spec({"spend": np.array([1.0, 2, 3, 4]), "visits": np.array([4.0, 3, 1, 2])})
    path = tmp_path / f"table{suffix}"
    if suffix == ".csv":
        rows = [f"{u},{i + 1},{4 - i}" for i, u in enumerate(IDS)]
        path.write_text("user_id,spend,visits\n" + "\n".join(rows) + "\n", encoding="utf-8")
    else:
        pq.write_table(pa.table({"user_id": IDS, "spend": [1.0, 2, 3, 4], "visits": [4.0, 3, 2, 1]}),
                       path)
    assert read_feature_table(path, spec, "user_id").user_keys == IDS


def test_cli_assign_returns_ids_exactly_as_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                 ) -> None:
    events = _events_csv(tmp_path / "events.csv")
    keys, bundle = tmp_path / "keys", tmp_path / "bundle"
    assert main(["keys", "generate", "--out", str(keys)]) == 0
    assert main(["train", "--events", str(events), "--key", str(keys), "--out", str(bundle),
                 "--k", "2", "--k-min", "1", "--seed", "3"]) == 0
    capsys.readouterr()
    public = next(keys.glob("*.pub*"))
    assert main(["assign", str(bundle), "--events", str(events), "--trusted-key", str(public),
                 "--json"]) == 0
    users = [row["user"] for row in json.loads(capsys.readouterr().out)]
    assert sorted(users) == sorted(IDS)
