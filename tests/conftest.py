"""Shared fixtures: compose configs with Hydra's compose API and build validated settings."""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from deeprun.settings import Settings
from helpers.configs import fast_settings


def pytest_configure(config):
    """Compile at XLA's lowest backend optimization level, in this process and the commands it starts: the
    tests' programs are tiny, so compiling them is most of their time (measured: the one-epoch option
    tests take 65 s instead of 114 s). Every comparison a test makes is between runs under the same flags,
    or against a formula with a tolerance."""
    from deeprun.runs.environment import pin_cpu_threads

    pin_cpu_threads()  # as the commands do: in-process runs and the worker processes they start alike
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_backend_optimization_level" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_backend_optimization_level=0".strip()


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """``make_settings("optimizer=adam", ...)``: FAST overrides plus yours, validated."""

    return fast_settings


def session_cache_dir(tmp_path_factory) -> Path:
    """This test session's cache folder, shared by its xdist workers (their base folders' parent is the
    session's own): a program one worker compiled, the other loads. Entries are written by several
    processes already (the commands a test starts, a sweep's workers); a torn read is a cache miss."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cache"


@pytest.fixture(autouse=True, scope="session")
def _compilation_cache(tmp_path_factory):
    """The persistent compilation cache, as the commands use it, for the in-process runs too: the tests
    train many identical programs (runs that differ only in seed or learning rate share them), and a test
    process serves them from the session's cache instead of compiling each again."""
    from deeprun.training.trainer import configure_compilation_cache

    os.environ["DEEPRUN_CACHE_DIR"] = str(session_cache_dir(tmp_path_factory))
    configure_compilation_cache(True)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep decoded-data caches out of the user's home during tests (the system dataset still counts)."""
    monkeypatch.setenv("DEEPRUN_CACHE_DIR", str(session_cache_dir(tmp_path_factory)))
    monkeypatch.delenv("DEEPRUN_DATA", raising=False)
    yield


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep the test output clean
        pass


@pytest.fixture
def http_server(tmp_path: Path):
    """Serve ``tmp_path / "served"`` on 127.0.0.1 (download tests); yield the directory and its base URL."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(QuietHandler, directory=str(served))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield served, f"http://127.0.0.1:{server.server_address[1]}"
        server.shutdown()
        thread.join()


@pytest.fixture
def exact_float32():
    """float32 matrix products at full precision while the test runs: its reference is float64 NumPy, and
    on GPUs JAX's default float32 matmul uses TF32 (≈1e-3 relative), too coarse for the 1e-5 tolerances."""
    import jax

    with jax.default_matmul_precision("float32"):
        yield
