"""Shared test setup: one BLAS thread (a 5-50x trap on 2 cores) and a private zoo cache."""

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Zoo models trained by tests go to a per-session cache unless ROBUSTLAB_TEST_CACHE is set."""
    cache = os.environ.get("ROBUSTLAB_TEST_CACHE") or str(tmp_path_factory.mktemp("robustlab-cache"))
    old = os.environ.get("ROBUSTLAB_CACHE")
    os.environ["ROBUSTLAB_CACHE"] = cache
    yield cache
    if old is None:
        os.environ.pop("ROBUSTLAB_CACHE", None)
    else:
        os.environ["ROBUSTLAB_CACHE"] = old
