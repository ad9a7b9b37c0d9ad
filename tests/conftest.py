"""Shared fixtures: compose configs with Hydra's compose API and build validated settings."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from deeprun.settings import CONFIG_DIR, Settings, settings_from_config

# Small and quick: the synthetic dataset, one small hidden layer, no files.
FAST = ("data=synthetic", "model.hidden=[32]", "trainer.epochs=1", "trainer.checkpoint=false", "trainer.plots=false")


def compose_dict(overrides: Sequence[str] = ()) -> dict:
    """The composed job config as a plain dict (what the CLI hands to ``settings_from_config``)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """``make_settings("optimizer=adam", ...)``: FAST overrides plus yours, validated."""

    def make(*overrides: str, fast: bool = True) -> Settings:
        base = FAST if fast else ()
        if any(o.startswith("model=") for o in overrides):  # another model may have no `hidden` field
            base = tuple(o for o in base if not o.startswith("model."))
        return settings_from_config(compose_dict([*base, *overrides]))

    return make


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep decoded-data caches out of the user's home during tests (the system dataset still counts)."""
    monkeypatch.setenv("DEEPRUN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.delenv("DEEPRUN_DATA", raising=False)
    yield


def fashion_mnist_available() -> bool:
    """True where the real data can be found without a download (e.g. Debian's package)."""
    from deeprun.data.base import DataError
    from deeprun.data.fashion_mnist import locate_fashion_mnist

    try:
        locate_fashion_mnist(None, download=False)
        return True
    except DataError:
        return False


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
