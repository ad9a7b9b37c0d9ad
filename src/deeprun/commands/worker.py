"""Worker processes of the fused launcher (``hydra.launcher.workers``): programs train side by side.

The parent (the sweep's process) has made and validated every job's folder; it hands each worker one
part of a fused group (each job's config, folder and resume point, from which the worker validates
its :class:`deeprun.commands.run.PreparedRun` again) and gets the jobs' summaries back. A worker is ``python -m deeprun.commands.worker TASK RESULT``:

- it trains with the XLA CPU threads a lone run has (``PJRT_NPROC``, inherited: XLA's CPU matmuls sum
  in blocks sized by the thread count, so another count would change the numbers);
- it runs in its own session: the parent is the one process a Ctrl-C or SIGTERM reaches, and it forwards
  each signal to every worker (the first: stop after the epoch; a second: at once); a worker whose parent
  dies stops after its epoch as if told to;
- its output lines reach the parent's stdout and stderr whole, each labelled by its jobs.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: A worker's result when its stop signal came before training started (its folders are as they were).
NOT_STARTED = "not started"
#: A worker's result when a second signal stopped it at once (its folders say ``interrupted``).
INTERRUPTED = "interrupted"


class WorkerFailed(Exception):
    """A worker's training failed (its error, as the worker saw it) or the worker process died."""


@dataclass
class _Worker:
    process: subprocess.Popen
    task: int
    result: Path
    relays: list[threading.Thread] = field(default_factory=list)


class WorkerPool:
    """Train tasks (lists of prepared runs) in at most ``workers`` processes at once, in order."""

    def __init__(self, workers: int, env: dict[str, str], batched: bool):
        self.workers, self.env, self.batched = workers, env, batched
        self.signal: int | None = None  # the first signal the sweep got, if any
        self._live: list[_Worker] = []

    def run(self, tasks: Sequence[Sequence[Any]], labels: Sequence[str]) -> Iterator[tuple[int, Any]]:
        """Yield ``(task index, summaries)`` as tasks end; summaries is a list (one per run), a
        :class:`WorkerFailed`, :data:`NOT_STARTED` or :data:`INTERRUPTED`. After a signal no new task starts."""
        from deeprun.runs.environment import command_line

        pending = list(range(len(tasks)))
        scratch = Path(tempfile.mkdtemp(prefix="deeprun-workers-"))
        previous = {sig: signal.signal(sig, self._forward) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or self._live:
                while pending and len(self._live) < self.workers and self.signal is None:
                    index = pending.pop(0)
                    self._live.append(self._start(index, tasks[index], labels[index], command_line(), scratch))
                if self.signal is not None:
                    pending.clear()
                for worker in [w for w in self._live if w.process.poll() is not None]:
                    self._live.remove(worker)
                    yield worker.task, _outcome(worker)
                time.sleep(0.05)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for worker in self._live:  # an error in the parent: the workers stop after their epoch
                worker.process.send_signal(signal.SIGTERM)
                worker.process.wait()
            shutil.rmtree(scratch, ignore_errors=True)

    def _forward(self, signum: int, frame: Any) -> None:
        if self.signal is None:
            from deeprun.commands.common import JOB

            self.signal = JOB.signal = signum
        for worker in self._live:
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    def _start(self, index: int, runs: Sequence[Any], label: str, command_line: list[str], scratch: Path) -> _Worker:
        task_path, result = scratch / f"{index}.task", scratch / f"{index}.result"
        jobs = [
            {
                "config": run.config,
                "run_dir": run.run_dir,
                "label": run.label,
                "resume": run.resume_epochs,
                "resume_epoch": run.resume_epoch,
                "sweep_dir": run.sweep_dir,
            }
            for run in runs
        ]
        task_path.write_bytes(pickle.dumps({"jobs": jobs, "batched": self.batched, "command": command_line}))
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, str(task_path), str(result)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            start_new_session=True,
            text=True,
            bufsize=1,
        )
        worker = _Worker(process, index, result)
        for source, sink in ((process.stdout, sys.stdout), (process.stderr, sys.stderr)):
            relay = threading.Thread(target=_relay, args=(source, sink, label), daemon=True)
            relay.start()
            worker.relays.append(relay)
        return worker


def _relay(source: IO[str], sink: IO[str], label: str) -> None:
    """Copy a worker's lines to the parent's stream, each whole and labelled (lines a fused group already
    labels by run keep their own label)."""
    for line in source:
        sink.write(line if line.startswith("[") else f"[{label}] {line}")
        sink.flush()


def _outcome(worker: _Worker) -> Any:
    for relay in worker.relays:
        relay.join()
    if worker.result.exists():
        outcome = pickle.loads(worker.result.read_bytes())
        return WorkerFailed(outcome["error"]) if isinstance(outcome, dict) else outcome
    return WorkerFailed(f"its worker process ended with exit status {worker.process.returncode} before finishing")


def worker_environment(base: dict[str, str], gpu_memory_fraction: float) -> dict[str, str]:
    """The workers' environment: ``base`` (the sweep process's as it started: its ``PJRT_NPROC``
    included), ``sys.path`` as ``PYTHONPATH`` (plugins found from the current folder stay importable)
    and each worker's share of a GPU's memory."""
    from deeprun.commands.console import console

    # The lines are relayed with a label: the worker's console is as wide as this one's, less the label.
    env = dict(base, PYTHONPATH=os.pathsep.join(p for p in sys.path if p), COLUMNS=str(max(console.width - 12, 60)))
    env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = str(gpu_memory_fraction)
    return env


def _prepared(job: dict[str, Any]) -> Any:
    """A job's :class:`~deeprun.commands.run.PreparedRun` from what the parent validated."""
    from deeprun.commands.run import PreparedRun
    from deeprun.runs.loading import load_donor
    from deeprun.settings import settings_from_config

    settings = settings_from_config(job["config"])
    donor = load_donor(settings.model.init_from) if settings.model.init_from is not None else None
    return PreparedRun(
        settings,
        job["config"],
        job["run_dir"],
        job["label"],
        donor,
        job["resume"],
        job["resume_epoch"],
        job["sweep_dir"],
    )


def _watch_parent(parent: int, stop: Callable[[], None]) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    stop()


def main(task_path: str, result_path: str) -> None:
    """Train one task and write its summaries (or its error) to ``result_path``."""
    from deeprun.commands.common import JOB

    def early_stop(signum: int, frame: Any) -> None:  # before training's own handler is installed
        JOB.stop_requested, JOB.signal = True, signum

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, early_stop)
    parent = os.getppid()
    threading.Thread(
        target=_watch_parent, args=(parent, lambda: os.kill(os.getpid(), signal.SIGTERM)), daemon=True
    ).start()
    outcome: Any
    try:
        from deeprun.commands.run import train_and_record
        from deeprun.runs.environment import record_command_line
        from deeprun.training.trainer import configure_compilation_cache

        task = pickle.loads(Path(task_path).read_bytes())
        runs = [_prepared(job) for job in task["jobs"]]
        record_command_line(task["command"])
        configure_compilation_cache(runs[0].settings.trainer.compilation_cache)
        dataset = runs[0].settings.data.load()
        if JOB.stop_requested:
            outcome = NOT_STARTED
        else:
            outcome = train_and_record(runs, dataset, batched=task["batched"], progress_bar=False)
    except KeyboardInterrupt:
        outcome = INTERRUPTED
    except BaseException as error:  # every failure goes back to the parent, which records it
        traceback.print_exc()
        outcome = {"error": f"{type(error).__name__}: {error}"}
    Path(result_path).write_bytes(pickle.dumps(outcome))


if __name__ == "__main__":
    main(*sys.argv[1:3])
