"""CPU threads and GPU memory per job, for launchers that run several jobs at once.

XLA sizes its CPU thread pool from the CPUs the process may run on, and JAX takes 75 % of a GPU's
memory when it starts: two jobs side by side would each take every core and one of them would find
the GPU full. The launcher presets give each job its share in the job's own process before JAX starts
its backend there: ``conf/hydra/launcher/submitit_*.yaml`` through ``hydra.job.env_set``, the joblib
preset through the :class:`deeprun.sweeps.callbacks.JobResources` callback, with

- ``PJRT_NPROC`` (XLA's CPU thread pool; read when the CPU client starts): ``max(1, cpus // jobs)``
- ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (the most of a GPU one process may use): ``min(0.75, 0.9 / jobs)``,
  rounded down to 2 decimals -- 0.75 is JAX's own default, 0.9 leaves room for each CUDA context

where ``jobs`` reads ``n_jobs`` as joblib does (``-1``: one job per CPU, ``-2``: all CPUs but one) and
``cpus`` counts the CPUs this process may run on (fewer than the machine's under Slurm or ``taskset``).
Every run's ``summary.json`` records what its process saw (:mod:`deeprun.runs.environment`).

The fused launcher's own worker processes (``hydra.launcher.workers``) have a lone run's CPU threads
(:data:`deeprun.runs.environment.DEFAULT_CPU_THREADS`, or ``PJRT_NPROC``): XLA's CPU matmuls sum in blocks
sized by the thread count, so a job's numbers would otherwise depend on where it ran; ``auto`` starts
``cpus // threads`` of them.
"""

from __future__ import annotations

import math

from deeprun.registry import ConfigError
from deeprun.runs.environment import pin_cpu_threads, usable_cpus

JAX_DEFAULT_MEM_FRACTION = 0.75
SHARED_GPU_BUDGET = 0.9


def parallel_jobs(n_jobs: int, cpus: int) -> int:
    """How many jobs run at once for joblib's ``n_jobs``: ``n_jobs`` itself when positive, else
    ``cpus + 1 + n_jobs`` (``-1``: all CPUs), at least 1."""
    n_jobs = int(n_jobs)
    if n_jobs == 0:
        raise ConfigError(
            "hydra.launcher.n_jobs must be a positive number of jobs, or negative (-1: one per CPU) (got 0)"
        )
    return n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)


def threads_per_job(n_jobs: int, cpus: int | None = None) -> int:
    """XLA CPU threads for each of ``n_jobs`` jobs sharing ``cpus`` CPUs: ``max(1, cpus // jobs)``."""
    cpus = usable_cpus() if cpus is None else cpus
    return max(1, cpus // parallel_jobs(n_jobs, cpus))


def gpu_memory_fraction(n_jobs: int, cpus: int | None = None) -> float:
    """The share of one GPU each of ``n_jobs`` jobs may use: ``min(0.75, 0.9 / jobs)``, rounded down
    to 2 decimals (never above what the jobs have together)."""
    cpus = usable_cpus() if cpus is None else cpus
    share = min(JAX_DEFAULT_MEM_FRACTION, SHARED_GPU_BUDGET / parallel_jobs(n_jobs, cpus))
    return math.floor(round(share * 100, 6)) / 100  # round first: 0.9 / 90 * 100 is 0.99999...


#: The fewest training steps worth a worker process: one starts in ~5 s (imports, data, cached
#: compilation) and the chapter's MLP takes ~1 ms per step at batch 32 on this CPU (measured: 8 seeds x 3
#: epochs, 41,256 steps, 50.1 s in one process, 34.0 s in two workers).
MIN_STEPS_PER_WORKER = 5000


def worker_count(
    workers: int | str, tasks: int, cpus: int | None = None, threads: int | None = None, steps: int | None = None
) -> int:
    """How many worker processes the fused launcher starts for ``tasks`` programs: ``workers`` itself,
    or for ``"auto"`` ``max(1, cpus // threads)`` (a run's XLA CPU threads, ``PJRT_NPROC``), no more than
    the sweep's training ``steps`` (all jobs' epochs x steps per epoch) keep busy,
    ``steps // MIN_STEPS_PER_WORKER``; never more than there are tasks (1: train in this process)."""
    cpus = usable_cpus() if cpus is None else cpus
    if workers == "auto":
        wanted = max(1, cpus // (pin_cpu_threads() if threads is None else threads))
        if steps is not None:
            wanted = min(wanted, max(1, steps // MIN_STEPS_PER_WORKER))
    elif isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1:
        wanted = workers
    else:
        raise ConfigError(f"hydra.launcher.workers must be a positive number of processes or auto (got {workers!r})")
    return max(1, min(wanted, tasks))


def split_for_workers(groups: list[list[int]], workers: int) -> list[list[int]]:
    """Fused groups cut into parts of at most ``ceil(members / workers)`` runs, so that ``workers``
    processes share the sweep evenly (a run's numbers do not depend on the runs it is fused with)."""
    if workers <= 1:
        return groups
    largest = -(-sum(len(group) for group in groups) // workers)
    return [group[i : i + largest] for group in groups for i in range(0, len(group), largest)]
