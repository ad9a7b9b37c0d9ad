"""The fused launcher's modes side by side: a sweep of ``seeds`` seeds from the command line, timed as a
whole process, in each mode in turn (rotated each repeat):

* ``parallel``       the default: the fused group cut into one share per worker process (one per CPU),
                     each share one compiled program whose members take turns through the same loop body
                     (each job's numbers bitwise those of the job alone)
* ``fused``          ``hydra.launcher.workers=1``: all members in one program, in the sweep's process
* ``fused_batched``  ``workers=1 batched=true``: the members under ``jax.vmap`` (faster per member; numbers
                     to float tolerance)
* ``one_by_one``     ``workers=1 max_members=1``: each job compiled and trained alone, one after another
* ``keras_processes`` the Keras peer (``peers/keras_jax.py``, ``fit``) once per seed, one process after another

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
    "parallel": (),
    "fused": ("hydra.launcher.workers=1",),
    "fused_batched": ("hydra.launcher.workers=1", "hydra.launcher.batched=true"),
    "one_by_one": ("hydra.launcher.workers=1", "hydra.launcher.max_members=1"),
}
PEER_MODE = "keras_processes"


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
    run_process: Callable[..., dict[str, Any]],
    seeds: int,
    epochs: int,
    batch_size: int,
    repeats: int,
    timeout_s: float,
    peer_argv: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every mode ``repeats`` times, alternating; one record per mode and repeat. ``peer_argv``: one Keras
    run (without ``--epochs``/``--batch-size``), run ``seeds`` times one after another."""
    modes = [*MODES, *([PEER_MODE] if peer_argv else [])]
    records = []
    for repeat in range(repeats):
        order = modes[repeat % len(modes) :] + modes[: repeat % len(modes)]
        for mode in order:
            if mode == PEER_MODE:
                assert peer_argv is not None
                argv = [*peer_argv, "--epochs", str(epochs), "--batch-size", str(batch_size)]
                results = [run_process(argv, timeout_s) for _ in range(seeds)]
                ok = all(r["returncode"] == 0 for r in results)
                result = {"returncode": 0 if ok else 1, "wall_s": sum(r["wall_s"] for r in results)}
            else:
                with tempfile.TemporaryDirectory(prefix="bench-sweep-") as scratch:
                    argv = sweep_argv(seeds, epochs, batch_size, Path(scratch) / "s", MODES[mode])
                    result = run_process(argv, timeout_s)
            records.append(
                {"mode": mode, "repeat": repeat, "ok": result["returncode"] == 0, "wall_s": result["wall_s"]}
            )
            print(f"  sweep {mode}: {result['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return records


def sweep_markdown(records: list[dict[str, Any]], seeds: int, epochs: int, batch_size: int) -> list[str]:
    modes = [mode for mode in (*MODES, PEER_MODE) if any(r["mode"] == mode for r in records)]
    walls = {
        mode: statistics.median([r["wall_s"] for r in records if r["mode"] == mode and r["ok"]] or [float("nan")])
        for mode in modes
    }
    base = walls["one_by_one"]
    peer = walls.get(PEER_MODE, float("nan"))
    lines = [
        f"## A sweep of {seeds} seeds × {epochs} epochs (batch {batch_size}), whole process, median of the repeats",
        "",
        f"| launcher mode | wall time (s) | speed-up over one by one | speed-up over {seeds} Keras processes |",
        "|---|---:|---:|---:|",
    ]
    for mode, wall in walls.items():
        lines.append(f"| {mode} | {wall:.1f} | {base / wall:.2f}× | {peer / wall:.2f}× |")
    return lines
