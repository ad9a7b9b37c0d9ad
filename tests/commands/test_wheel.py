"""``pip install .`` (a real wheel, not editable) gives a working ``deeprun`` outside the checkout."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("deeprun-*.whl")
    return built


def test_the_wheel_holds_the_configs(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "deeprun/conf/config.yaml" in names
    assert "deeprun/conf/optimizer/nadam.yaml" in names and "deeprun/conf/hydra/launcher/fused.yaml" in names
    assert "hydra_plugins/deeprun_launcher/fused_launcher.py" in names
    assert "hydra_plugins/deeprun_launcher/plugin_configs.py" in names
    assert "deeprun/runs/summary.schema.json" in names
    assert not [name for name in names if name.startswith(("tests/", "benchmarks/", "src/"))]


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh virtualenv outside the repository with the wheel installed; the dependencies come from this
    environment's site-packages (a .pth line), so nothing is downloaded."""
    env = tmp_path_factory.mktemp("venv")
    venv.create(env, with_pip=True)
    python = env / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], *site.getsitepackages()}
    Path(purelib, "dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "-q", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env


def run_installed(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [str(env / "bin" / "deeprun"), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=clean
    )


def test_the_installed_deeprun_trains_from_an_empty_folder(installed, tmp_path):
    where = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import deeprun; print(deeprun.__file__)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(installed)), where  # the wheel's copy, not the checkout's
    result = run_installed(installed, "data=synthetic", "trainer.epochs=1", "hydra.run.dir=run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs_completed"] == 1
    assert (tmp_path / "run" / "checkpoint").is_dir()


def test_the_installed_deeprun_prints_its_help(installed, tmp_path):
    result = run_installed(installed, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "optimizer" in result.stdout and "nadam" in result.stdout
    assert not list(tmp_path.iterdir())  # --help writes nothing
