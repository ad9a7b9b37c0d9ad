"""The fused launcher's modes side by side: a sweep of ``seeds`` seeds from the command line, timed as a
whole process, in each mode in turn (rotated each repeat):

* ``fused``          the default: one compiled program, the members taking turns through the same loop body
                     (each job's numbers bitwise those of the job alone)
* ``fused_batched``  ``hydra.launcher.batched=true``: the members under ``jax.vmap`` (faster; numbers to
                     float tolerance)
* ``one_by_one``     ``hydra.launcher.max_members=1``: each job compiled and trained alone, one after another

Used by ``bench.py`` (``--sweep-seeds 0`` skips it).
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODES = {
    "fused": (),
    "fused_batched": ("hydra.launcher.batched=true",),
    "one_by_one": ("hydra.launcher.max_members=1",),
}


def sweep_argv(seeds: int, epochs: int, batch_size: int, sweep_dir: Path, extra: tuple[str, ...]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "deeprun.commands.run",
        "-m",
        f"trainer.seed={','.join(str(seed) for seed in range(seeds))}",
        "schedule=constant",
        "optimizer=momentum",
        "trainer.early_stopping.enabled=false",
        "trainer.checkpoint=false",
        "trainer.plots=false",
        "trainer.compilation_cache=false",
        f"trainer.batch_size={batch_size}",
        f"trainer.epochs={epochs}",
        *extra,
        f"hydra.sweep.dir={sweep_dir}",
    ]


def run_sweeps(
    run_process: Callable[..., dict[str, Any]], seeds: int, epochs: int, batch_size: int, repeats: int, timeout_s: float
) -> list[dict[str, Any]]:
    """Every mode ``repeats`` times, alternating; one record per process."""
    records = []
    for repeat in range(repeats):
        order = list(MODES)[repeat % len(MODES) :] + list(MODES)[: repeat % len(MODES)]
        for mode in order:
            with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
                result = run_process(sweep_argv(seeds, epochs, batch_size, Path(scratch) / "s", MODES[mode]), timeout_s)
            records.append(
                {"mode": mode, "repeat": repeat, "ok": result["returncode"] == 0, "wall_s": result["wall_s"]}
            )
            print(f"  sweep {mode}: {result['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return records


def sweep_markdown(records: list[dict[str, Any]], seeds: int, epochs: int, batch_size: int) -> list[str]:
    walls = {
        mode: statistics.median([r["wall_s"] for r in records if r["mode"] == mode and r["ok"]] or [float("nan")])
        for mode in MODES
    }
    base = walls["one_by_one"]
    lines = [
        f"## A sweep of {seeds} seeds × {epochs} epochs (batch {batch_size}), whole process, median of the repeats",
        "",
        "| launcher mode | wall time (s) | speed-up over one by one |",
        "|---|---:|---:|",
    ]
    for mode, wall in walls.items():
        lines.append(f"| {mode} | {wall:.1f} | {base / wall:.2f}× |")
    return lines
