"""Tests of ``robustlab.core.outcomes``: the Outcomes schema, concat, atomic Parquet I/O."""

import os

import numpy as np
import pytest

from robustlab.core.errors import RunError
from robustlab.core.outcomes import COLUMNS, STATUSES, Outcomes, atomic_write_bytes


def _sample(n=4, probe="pgd_linf"):
    return Outcomes({
        "example_id": np.arange(n) + 100,
        "probe": probe,
        "kind": "attack",
        "setting": [f"eps={e:.3g}" for e in np.linspace(0, 0.1, n)],
        "param": np.linspace(0, 0.1, n),
        "status": ["robust", "broken"] * (n // 2) + ["skipped"] * (n % 2),
        "label": np.arange(n) % 3,
        "clean_pred": np.arange(n) % 3,
        "pred": (np.arange(n) + 1) % 3,
        "clean_correct": True,
        "correct": [i % 2 == 0 for i in range(n)],
        "score": np.linspace(-1, 1, n),
        "distance": [0.1] * (n - 1) + [np.nan],
        "queries": 10,
        "seconds": 0.5,
        "seed": 7,
        "job": "job-ü-1",
    })


def test_schema_dtypes_and_statuses():
    o = _sample()
    assert set(o.columns) == set(COLUMNS)
    for name, dtype in COLUMNS.items():
        assert o[name].dtype == np.dtype(dtype), name
    assert set(o["status"]) <= set(STATUSES)


def test_scalars_broadcast_to_the_column_length():
    o = _sample(5)
    assert len(o) == 5
    assert o["probe"].tolist() == ["pgd_linf"] * 5
    assert o["queries"].tolist() == [10] * 5
    assert o["clean_correct"].tolist() == [True] * 5
    assert o["seed"].dtype == np.int64


def test_defaults_for_missing_columns():
    o = Outcomes({"example_id": [3, 4]})
    assert len(o) == 2
    assert o["probe"].tolist() == ["", ""] and o["probe"].dtype == object
    assert np.isnan(o["distance"]).all() and np.isnan(o["param"]).all()
    assert o["label"].tolist() == [-1, -1] and o["queries"].tolist() == [-1, -1]
    assert o["correct"].tolist() == [False, False]


def test_empty_and_all_scalar_construction():
    assert len(Outcomes()) == 0
    assert all(len(v) == 0 for v in Outcomes().columns.values())
    one = Outcomes({"probe": "fgsm", "example_id": 5})
    assert len(one) == 1 and one["example_id"].tolist() == [5]


def test_none_numpy_scalars_and_0d_arrays_broadcast():
    """Regression: ``None`` and 0-d arrays were counted as length-1 columns and raised a length error."""
    o = Outcomes({"example_id": [1, 2, 3], "distance": None, "seed": np.int64(4), "param": np.array(0.5),
                  "probe": np.str_("x")})
    assert len(o) == 3
    assert np.isnan(o["distance"]).all()
    assert o["seed"].tolist() == [4, 4, 4]
    assert o["param"].tolist() == [0.5, 0.5, 0.5]
    assert o["probe"].tolist() == ["x", "x", "x"]


def test_unknown_column_is_an_error():
    with pytest.raises(ValueError, match="unknown outcome columns: \\['acc'\\]"):
        Outcomes({"example_id": [1], "acc": [0.5]})


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="different lengths"):
        Outcomes({"example_id": [1, 2, 3], "label": [0, 1]})
    with pytest.raises(ValueError, match="different lengths"):
        Outcomes({"example_id": [1, 2, 3], "probe": ["a", "b"]})


def test_concat_keeps_order_and_skips_empty_parts():
    a, b = _sample(3, "a"), _sample(2, "b")
    c = Outcomes.concat([a, Outcomes(), b])
    assert len(c) == 5
    assert c["probe"].tolist() == ["a"] * 3 + ["b"] * 2
    assert c["example_id"].tolist() == [100, 101, 102, 100, 101]
    for name, dtype in COLUMNS.items():
        assert c[name].dtype == np.dtype(dtype)
    assert len(Outcomes.concat([])) == 0
    assert len(Outcomes.concat([Outcomes()])) == 0


def _assert_equal(a: Outcomes, b: Outcomes):
    assert len(a) == len(b)
    for name, dtype in COLUMNS.items():
        assert b[name].dtype == np.dtype(dtype), name
        if dtype == "float64":
            np.testing.assert_array_equal(a[name], b[name])  # NaN == NaN here
        else:
            assert a[name].tolist() == b[name].tolist(), name
    for s in b["probe"].tolist() + b["job"].tolist():
        assert type(s) is str


def test_save_load_roundtrip_preserves_values_and_dtypes(tmp_path):
    o = _sample(6)
    path = o.save(tmp_path / "deep" / "dir" / "outcomes.parquet")
    assert path.exists()
    _assert_equal(o, Outcomes.load(path))


def test_frame_roundtrip():
    o = _sample(4)
    frame = o.to_frame()
    assert list(frame.columns) == list(COLUMNS)
    assert len(frame) == 4
    _assert_equal(o, Outcomes.from_frame(frame))


def test_empty_roundtrip_writes_string_columns(tmp_path):
    import pyarrow.parquet as pq

    path = Outcomes().save(tmp_path / "empty.parquet")
    schema = pq.read_schema(path)
    assert str(schema.field("probe").type) in ("string", "large_string")  # not null-typed
    loaded = Outcomes.load(path)
    assert len(loaded) == 0 and loaded["probe"].dtype == object


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "o.parquet"
    _sample(3).save(path)
    _sample(5).save(path)  # overwrite in place
    assert sorted(os.listdir(tmp_path)) == ["o.parquet"]
    assert len(Outcomes.load(path)) == 5


def test_failed_save_leaves_no_temp_file_and_keeps_old_file(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    path = tmp_path / "o.parquet"
    _sample(3).save(path)

    def half_write(table, where, **kwargs):  # writes a partial file, then dies (disk full, Ctrl-C...)
        with open(where, "wb") as fh:
            fh.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", half_write)
    with pytest.raises(OSError, match="disk full"):
        _sample(2).save(path)
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["o.parquet"]
    assert len(Outcomes.load(path)) == 3


@pytest.mark.parametrize("content", [b"", b"not a parquet file at all", b"PAR1\x00\x00garbagePAR1"])
def test_corrupt_file_is_a_run_error_with_a_fix(tmp_path, content):
    path = tmp_path / "bad.parquet"
    path.write_bytes(content)
    with pytest.raises(RunError) as info:
        Outcomes.load(path)
    assert "bad.parquet" in str(info.value)
    assert info.value.fix and "--resume" in info.value.fix


def test_load_fills_missing_columns_with_defaults(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "partial.parquet"
    pq.write_table(pa.table({"example_id": [1, 2], "probe": ["a", "b"], "extra": [0, 0]}), path)
    o = Outcomes.load(path)
    assert o["probe"].tolist() == ["a", "b"] and o["label"].tolist() == [-1, -1]


def test_repr():
    assert repr(Outcomes.concat([_sample(2, "b"), _sample(2, "a")])) == "Outcomes(rows=4, probes=['a', 'b'])"


def test_atomic_write_bytes(tmp_path):
    path = tmp_path / "sub" / "f.bin"
    assert atomic_write_bytes(path, b"hello") == path
    assert path.read_bytes() == b"hello"
    atomic_write_bytes(path, b"world!")
    assert path.read_bytes() == b"world!"
    assert os.listdir(path.parent) == ["f.bin"]


def test_atomic_write_bytes_failure_keeps_old_content(tmp_path):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(TypeError):
        atomic_write_bytes(path, "not bytes")  # type: ignore[arg-type]
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]
