"""Reading event logs and feature tables: time formats, renames, bad rows, no identifiers."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgepersona.sdk import Feature, FeatureSpec, FoldPlan, InputError, SchemaError
from edgepersona.trainer.data.events import Columns, read_event_log, read_feature_table
from edgepersona.trainer.data.features import compute_features
from edgepersona.trainer.data.replay import replay_on_device
from edgepersona.trainer.data.suggest import suggest_spec
from edgepersona.trainer.release.train import TrainOptions, train_bundle

MOMENT = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
EPOCH = MOMENT.timestamp()  # 1614834367.0


def write_csv(path: Path, header: str, lines: list[str]) -> Path:
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def times_by_user(path: Path, columns: Columns | None = None) -> dict[str, list[float]]:
    log = read_event_log(path, columns or Columns())
    out: dict[str, list[float]] = {}
    for user, when in zip(log.user, log.time, strict=True):
        out.setdefault(log.user_keys[user], []).append(float(when))
    return out


# --- time formats ----------------------------------------------------------------------

@pytest.mark.parametrize(("cells", "expected"), [
    (["2021-03-04T05:06:07", "2021-03-04T05:06:08"], [EPOCH, EPOCH + 1]),
    (["2021-03-04 05:06:07", "2021-03-04"], [EPOCH, EPOCH - (5 * 3600 + 6 * 60 + 7)]),
    (["2021-03-04T05:06:07Z", "2021-03-04T05:06:08.250Z"], [EPOCH, EPOCH + 1.25]),
    (["2021-03-04T07:06:07+02:00", "2021-03-04T00:06:07-05:00"], [EPOCH, EPOCH]),
    (["1614834367", "1614834368"], [EPOCH, EPOCH + 1]),
    (["1614834367.5", "0"], [EPOCH + 0.5, 0.0]),
    (["2021-03-04T05:06:07", "1614834367"], [EPOCH, EPOCH]),                    # mixed
    (["2021-03-04T05:06:07Z", "2021-03-04T07:06:07+02:00"], [EPOCH, EPOCH]),    # mixed zones
], ids=["iso-naive-is-utc", "iso-space-and-date", "iso-z", "iso-offsets", "epoch-int",
        "epoch-float", "iso-and-epoch", "z-and-offset"])
def test_csv_timestamps_become_unix_seconds(tmp_path: Path, cells: list[str],
                                            expected: list[float]) -> None:
    path = write_csv(tmp_path / "log.csv", "user_id,timestamp,event",
                     [f"u{i},{cell},open" for i, cell in enumerate(cells)])
    got = times_by_user(path)
    assert [got[f"u{i}"][0] for i in range(len(cells))] == pytest.approx(expected, abs=1e-6)


def test_parquet_timestamps_naive_aware_and_epoch(tmp_path: Path) -> None:
    naive = MOMENT.replace(tzinfo=None)
    plus_two = MOMENT.astimezone(timezone(timedelta(hours=2)))
    tables = {
        "naive": pa.array([naive], pa.timestamp("s")),
        "aware": pa.array([plus_two], pa.timestamp("ms", tz="+02:00")),
        "utc": pa.array([MOMENT], pa.timestamp("us", tz="UTC")),
        "epoch": pa.array([int(EPOCH)], pa.int64()),
        "epoch_float": pa.array([EPOCH], pa.float64()),
        "iso_text": pa.array(["2021-03-04T07:06:07+02:00"]),
    }
    for name, column in tables.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"user_id": ["u"], "timestamp": column, "event": ["open"]}), path)
        assert times_by_user(path) == {"u": [EPOCH]}, name


# --- column renames --------------------------------------------------------------------

def test_columns_can_be_renamed_and_extra_columns_become_properties(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", "member,when,action,amount,channel", [
        "m1,2021-03-04T05:06:07Z,buy,12.5,web",
        "m1,2021-03-04T06:06:07Z,view,,app",
        "m2,2021-03-04T05:06:07Z,buy,3,",
    ])
    columns = Columns(user="member", time="when", event="action", value="amount")
    log = read_event_log(path, columns or Columns())
    assert log.user_keys == ["m1", "m2"]
    assert log.event.tolist() == ["buy", "view", "buy"]
    np.testing.assert_array_equal(log.properties["value"], [12.5, np.nan, 3.0])
    assert log.properties["channel"].tolist() == ["web", "app", None]
    assert set(log.properties) == {"value", "channel"}  # identifiers are not properties
    assert log.bad_rows == {} and log.source == "log.csv"


def test_value_column_is_optional(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", "user_id,timestamp,event", ["a,1,open", "b,2,open"])
    log = read_event_log(path)
    assert np.isnan(log.properties["value"]).all() and log.n_users == 2


@pytest.mark.parametrize("missing", ["user_id", "timestamp", "event"])
def test_missing_required_column_is_a_schema_error_naming_the_options(
        tmp_path: Path, missing: str) -> None:
    header = ["user_id", "timestamp", "event", "value"]
    kept = [h for h in header if h != missing]
    path = write_csv(tmp_path / "log.csv", ",".join(kept), [",".join(["1"] * len(kept))])
    with pytest.raises(SchemaError) as caught:
        read_event_log(path)
    message = str(caught.value)
    assert missing in message
    for option in ("--user-col", "--time-col", "--event-col", "--value-col"):
        assert option in message


def test_renamed_column_that_is_absent_is_a_schema_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", "user_id,timestamp,event", ["a,1,open"])
    with pytest.raises(SchemaError, match="customer"):
        read_event_log(path, Columns(user="customer"))


def test_unreadable_or_missing_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_event_log(tmp_path / "absent.csv")
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputError, match="cannot read"):
        read_event_log(broken)


# --- bad rows --------------------------------------------------------------------------

def test_bad_rows_are_counted_per_reason_and_good_rows_survive(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", "user_id,timestamp,event,value", [
        "good1,2021-03-04T05:06:07Z,buy,1.5",
        "good2,1614834367,buy,",
        "t1,not-a-time,buy,1",
        "t2,2021-13-45T99:00:00,buy,1",
        ",2021-03-04T05:06:07Z,buy,1",
        "   ,2021-03-04T05:06:07Z,buy,1",
        "e1,2021-03-04T05:06:07Z,,1",
        "v1,2021-03-04T05:06:07Z,buy,abc",
        "v2,2021-03-04T05:06:07Z,buy,inf",
        "n1,-5,buy,1",
        "n2,1960-01-01T00:00:00Z,buy,1",
        "good1,2021-03-05T05:06:07Z,view,2",
    ])
    log = read_event_log(path)
    assert dict(log.bad_rows) == {
        "unparseable timestamp": 2,
        "missing user id": 2,
        "missing event name": 1,
        "non-numeric or non-finite value": 2,
        "negative timestamp": 2,
    }
    assert log.user_keys == ["good1", "good2"]
    assert len(log.time) == 3


def test_a_row_with_several_problems_is_counted_once(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", "user_id,timestamp,event,value",
                     [",garbage,,abc", "ok,1,open,1"])
    log = read_event_log(path)
    assert sum(log.bad_rows.values()) == 1 and log.user_keys == ["ok"]


def test_nan_values_in_parquet_are_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b", "c"], "timestamp": [1.0, 2.0, np.nan],
                             "event": ["x", "x", "x"], "value": [np.nan, 2.0, 1.0]}), path)
    log = read_event_log(path)
    assert dict(log.bad_rows) == {"non-numeric or non-finite value": 1,
                                  "unparseable timestamp": 1}
    assert log.user_keys == ["b"]


def test_nan_text_value_in_csv_is_a_bad_row(tmp_path: Path) -> None:
    # the docstring: rows with "a non-finite value are dropped and counted", as in Parquet
    path = write_csv(tmp_path / "log.csv", "user_id,timestamp,event,value",
                     ["a,1,buy,1", "b,2,buy,NaN", "c,3,buy,nan", "d,4,buy,-nan"])
    log = read_event_log(path)
    assert dict(log.bad_rows) == {"non-numeric or non-finite value": 3}
    assert log.user_keys == ["a"]


def test_nan_in_a_numeric_parquet_property_is_missing_for_trainer_and_device(
        tmp_path: Path) -> None:
    # Parquet keeps float NaN in an extra numeric column (CSV turns it into null).
    path = tmp_path / "log.parquet"
    pq.write_table(pa.table({"user_id": ["a", "a", "a"], "timestamp": [10.0, 20.0, 30.0],
                             "event": ["buy", "buy", "buy"], "value": [1.0, 1.0, 1.0],
                             "basket": [2.0, np.nan, 4.0]}), path)
    log = read_event_log(path)
    spec = FeatureSpec(features=(Feature(name="avg_basket", event="buy", property="basket",
                                         aggregate="mean", bounds=(0, 100)),))
    batch = compute_features(log, spec)
    assert batch.tolist() == [[3.0]]
    folded = replay_on_device(FoldPlan.from_spec(spec), log)
    np.testing.assert_array_equal(folded, batch)


# --- feature tables --------------------------------------------------------------------

TABLE_SPEC = FeatureSpec(features=(
    Feature(name="orders", event="buy", aggregate="count", bounds=(0, 100)),
    Feature(name="balance", event="pay", property="value", aggregate="sum", bounds=(-50, 50)),
    Feature(name="recency", event="*", aggregate="recency_days", bounds=(0, 400)),
))


def test_read_feature_table_counts_nan_and_negative_count_rows(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "table.csv", "member,recency,orders,balance,extra", [
        "m1,3,5,-20,x",    # good: a negative sum is fine
        "m2,1,,4,x",       # missing cell
        "m3,1,NaN,4,x",    # NaN
        "m4,1,abc,4,x",    # text
        "m5,1,-2,4,x",     # negative count
        "m6,-1,2,4,x",     # negative recency
        "m7,0,0,0,x",      # good
    ])
    table = read_feature_table(path, TABLE_SPEC, user_column="member")
    assert table.user_keys == ["m1", "m7"]
    np.testing.assert_array_equal(table.values, [[5, -20, 3], [0, 0, 0]])  # spec order
    assert dict(table.bad_rows) == {
        "missing, NaN or non-numeric feature value": 3,
        "negative value for count feature": 1,
        "negative value for recency_days feature": 1,
    }


def test_read_feature_table_without_user_column_labels_rows_by_position(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "table.csv", "orders,balance,recency",
                     ["1,2,3", "-1,2,3", "4,5,6"])
    table = read_feature_table(path, TABLE_SPEC)
    assert table.user_keys == ["0", "2"]


def test_read_feature_table_missing_feature_column_is_a_schema_error(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "table.csv", "orders,balance", ["1,2"])
    with pytest.raises(SchemaError, match="recency"):
        read_feature_table(path, TABLE_SPEC)


# --- identifiers never leave the trainer ------------------------------------------------

def test_user_ids_never_appear_in_any_bundle_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"member-{secrets.token_hex(6)}" for _ in range(60)]
    lines = []
    for i, user in enumerate(ids):
        heavy = i % 2 == 0
        for e in range(int(rng.integers(8, 14) if heavy else rng.integers(1, 4))):
            when = 1_614_834_367 + int(rng.integers(0, 90 * 86_400))
            amount = float(rng.lognormal(4 if heavy else 1, 0.3))
            lines.append(f"{user},{when},{'buy' if e % 3 else 'view'},{amount:.2f},"
                         f"{user}@example.org,sku{int(rng.integers(0, 20))}")
    path = write_csv(tmp_path / "events.csv", "member_ref,timestamp,event,value,email,sku",
                     lines)
    log = read_event_log(path, Columns(user="member_ref"))
    log.properties.pop("email")  # a contact column is dropped before training
    spec = suggest_spec(log)
    rows = compute_features(log, spec)
    result = train_bundle(rows, spec, Ed25519PrivateKey.generate(),
                          TrainOptions(k=2, k_min=5, seed=0, stability_rounds=0),
                          lineage={"source": log.source, "users": log.n_users},
                          bad_rows=log.bad_rows, now=datetime(2024, 1, 1, tzinfo=UTC))
    assert set(result.files) == {"model.onnx", "manifest.json", "signature", "cards.md",
                                 "cards.json"}
    blob = b"\n".join(result.files.values())
    hits = [user for user in ids if user.encode() in blob]
    assert hits == []
    assert b"member_ref" not in blob and b"example.org" not in blob
