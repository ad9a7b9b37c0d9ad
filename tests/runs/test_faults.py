"""Fault injection: runs and sweeps killed (SIGKILL, SIGTERM, SIGINT, twice) at many points, including inside
checkpoint writes, then resumed and compared with an uninterrupted run bit for bit (CPU); damaged checkpoints;
two processes on one folder; a full disk and a folder that turns read-only (root only). Long cases are ``slow``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deeprun.commands.evaluate import main as eval_main
from deeprun.commands.export import main as export_main
from deeprun.commands.run import main as deeprun_main
from deeprun.commands.tune import main as tune_main
from deeprun.runs.folder import read_metrics
from deeprun.runs.loading import load_run
from helpers.commands import invoke
from helpers.ownership import folder_owned_by_another_process
from helpers.runs import assert_same_leaves, without_times

#: Epochs long enough (about half a second here) that a kill lands inside them or their checkpoint's write.
CONFIG = (
    "data=synthetic",
    "data.n_train=12000",
    "model.hidden=[256,256]",
    "trainer.epochs=3",
    "regularizer=dropout",
    "trainer.plots=false",
)
SWEEP = ("data=synthetic", "data.n_train=8000", "model.hidden=[128]", "trainer.epochs=5", "trainer.plots=false")
ENTRY = "import sys; from deeprun.commands.entry import deeprun; sys.exit(deeprun())"


def start(*args: str, cwd: Path) -> subprocess.Popen:
    """``deeprun ARGS`` as a new process, through the console script's entry point."""
    return subprocess.Popen(
        [sys.executable, "-c", ENTRY, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def wait_until(condition: Callable[[], bool], process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None and not condition():
        time.sleep(0.005)


def signal_when(process: subprocess.Popen, condition: Callable[[], bool], signum: int, timeout: float = 180) -> str:
    """Send ``signum`` once ``condition`` holds; the process's stderr once it has ended."""
    wait_until(condition, process, timeout)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return stderr


def lines(path: Path) -> int:
    return path.read_text().count("\n") if path.is_file() else 0


def stderr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def assert_same_run(run: Path, reference: Path) -> None:
    """Metrics (but the times), test results and final parameters equal, bit for bit."""
    assert without_times(read_metrics(run / "metrics.jsonl")) == without_times(
        read_metrics(reference / "metrics.jsonl")
    )
    summary, expected = (json.loads((folder / "summary.json").read_text()) for folder in (run, reference))
    assert summary["status"] == expected["status"] and summary["test"] == expected["test"]
    assert_same_leaves(load_run(run).state, load_run(reference).state)
    assert not (run / "resume").exists()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """CONFIG trained without a stop."""
    root = tmp_path_factory.mktemp("reference")
    assert invoke(deeprun_main, *CONFIG, f"hydra.run.dir={root / 'run'}", cwd=root).returncode == 0
    return root / "run"


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> Path:
    """CONFIG stopped by SIGTERM after its first epoch: exit 143, ``status: interrupted``."""
    root = tmp_path_factory.mktemp("interrupted")
    run = root / "run"
    process = start(*CONFIG, f"hydra.run.dir={run}", cwd=root)
    stderr = signal_when(process, lambda: lines(run / "metrics.jsonl") >= 1, signal.SIGTERM)
    assert process.returncode == 143, stderr
    assert stderr_lines(stderr) == [
        f"deeprun: interrupted after epoch {json.loads((run / 'summary.json').read_text())['epochs_completed']}; "
        f"its state is in {run} (continue with trainer.resume={run})"
    ]
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    return run


def copy_of(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(run, target, symlinks=True)
    return target


# --- SIGKILL at any moment -------------------------------------------------------------------------

#: (metrics lines written, then seconds) before the kill: while compiling, inside epoch 1's asynchronous
#: checkpoint write, during epoch 2, inside epoch 2's write.
KILL_POINTS = [
    pytest.param(0, 0.0, id="before-the-first-epoch"),
    pytest.param(1, 0.0, id="inside-epoch-1-checkpoint-write", marks=pytest.mark.slow),
    pytest.param(1, 0.2, id="during-epoch-2", marks=pytest.mark.slow),
    pytest.param(2, 0.0, id="inside-epoch-2-checkpoint-write"),
    pytest.param(1, 0.02, id="epoch-1-write-20ms", marks=pytest.mark.slow),
    pytest.param(1, 0.05, id="epoch-1-write-50ms", marks=pytest.mark.slow),
    pytest.param(1, 0.1, id="epoch-1-write-100ms", marks=pytest.mark.slow),
    pytest.param(2, 0.02, id="epoch-2-write-20ms", marks=pytest.mark.slow),
    pytest.param(2, 0.1, id="epoch-2-write-100ms", marks=pytest.mark.slow),
    pytest.param(2, 0.3, id="during-epoch-3", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("after_lines", "delay"), KILL_POINTS)
def test_sigkill_at_any_point_leaves_a_folder_that_resumes_to_the_same_numbers(after_lines, delay, reference, tmp_path):
    run = tmp_path / "run"
    process = start(*CONFIG, f"hydra.run.dir={run}", cwd=tmp_path)
    if after_lines:
        wait_until(lambda: lines(run / "metrics.jsonl") >= after_lines, process)
    else:
        wait_until(lambda: (run / ".hydra" / "overrides.yaml").is_file(), process)  # Hydra writes it last
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"

    resumed = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference)
    # The resumed run goes on in its own folder: none is made (nor left empty) where the command ran.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "resuming made another folder"


def test_a_metrics_line_without_its_checkpoint_starts_again(reference, tmp_path):
    """The state a kill inside epoch 1's checkpoint write leaves, made exactly: one metrics line, no
    finished checkpoint (only orbax's temporary folder). The run starts again, its metrics cut back."""
    run = tmp_path / "run"
    shutil.copytree(reference / ".hydra", run / ".hydra")
    (run / "metrics.jsonl").write_text((reference / "metrics.jsonl").read_text().splitlines(keepends=True)[0])
    (run / "resume" / "1.orbax-checkpoint-tmp-1764590000").mkdir(parents=True)
    evaluated = invoke(eval_main, str(run), cwd=tmp_path, program="deeprun-eval")
    assert evaluated.returncode == 2 and stderr_lines(evaluated.stderr) == [
        f"deeprun-eval: error: {run} has not finished (no summary.json); continue it with trainer.resume={run}"
    ]
    resumed = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {run} from the start (no epoch had finished)" in " ".join(resumed.stdout.split())
    assert_same_run(run, reference)


def test_a_folder_killed_while_hydra_wrote_its_config_runs_again(reference, tmp_path):
    """A kill while Hydra writes ``.hydra/`` (not atomically) leaves a config cut short and nothing else:
    resuming says to run the command again into the folder, which then works."""
    run = tmp_path / "run"
    shutil.copytree(reference / ".hydra", run / ".hydra")
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text()[:40])
    before = snapshot(run)
    refused = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert refused.returncode == 2 and stderr_lines(refused.stderr) == [
        f"deeprun: error: trainer.resume: {run} holds no run yet (its .hydra/config.yaml is incomplete: stopped "
        f"while starting); run the command again with hydra.run.dir={run}"
    ]
    assert snapshot(run) == before
    again = invoke(deeprun_main, *CONFIG, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_same_run(run, reference)


# --- damaged or mismatched resume points: one line, exit 2, the folder as it was ----------------------


def _latest(run: Path) -> Path:
    return max((p for p in (run / "resume").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _truncate_largest_chunk(run: Path) -> None:
    chunk = max((p for p in (_latest(run) / "state").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def _remove_array_metadata(run: Path) -> None:
    (_latest(run) / "state" / "_METADATA").unlink()


def _remove_tensor_index(run: Path) -> None:
    for index in (_latest(run) / "state").rglob("manifest.ocdbt"):
        index.unlink()


def _garble_progress(run: Path) -> None:
    for file in (p for p in (_latest(run) / "progress").rglob("*") if p.is_file()):
        file.write_text("{not json")


def _change_saved_config(run: Path) -> None:
    config = run / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("- 256\n  - 256", "- 32\n  - 32"))


DAMAGES = [
    _truncate_largest_chunk,
    _remove_array_metadata,
    _remove_tensor_index,
    _garble_progress,
    _change_saved_config,
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.__name__.lstrip("_") for d in DAMAGES])
def test_a_resume_that_cannot_work_changes_nothing(damage, interrupted, tmp_path):
    run = copy_of(interrupted, tmp_path)
    damage(run)
    before = snapshot(run)
    result = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    [line] = stderr_lines(result.stderr)
    assert line.startswith("deeprun: error: ") and "Traceback" not in result.stderr
    assert "damaged or does not match" in line or "resume" in line, line
    assert snapshot(run) == before, "a failed resume changed the folder"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "a failed resume left a folder where it ran"


def test_an_interrupted_run_resumes_to_the_same_numbers(interrupted, reference, tmp_path):
    run = copy_of(interrupted, tmp_path)
    resumed = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference)


@pytest.mark.parametrize(("main", "program"), [(eval_main, "deeprun-eval"), (export_main, "deeprun-export")])
def test_a_damaged_final_checkpoint_is_one_line(main, program, reference, tmp_path):
    run = copy_of(reference, tmp_path)
    chunk = max((p for p in (run / "checkpoint").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    chunk.write_bytes(b"\0" * 16)
    before = snapshot(run)
    result = invoke(main, str(run), cwd=tmp_path, program=program)
    assert result.returncode == 2, result.stderr
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"{program}: error: ") and "the checkpoint is damaged or does not match" in line
    assert snapshot(run) == before


def test_eval_names_a_diverged_run(tmp_path):
    run = tmp_path / "run"
    diverging = (
        "data=synthetic",
        "trainer.epochs=2",
        "optimizer=sgd",
        "optimizer.learning_rate=1e30",
        "schedule=constant",
    )
    assert invoke(deeprun_main, *diverging, "activation=relu", f"hydra.run.dir={run}", cwd=tmp_path).returncode == 3
    for line in (run / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in metrics.jsonl"))
    json.loads((run / "summary.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in summary.json"))
    result = invoke(eval_main, str(run), cwd=tmp_path, program="deeprun-eval")
    assert result.returncode == 2
    assert stderr_lines(result.stderr) == [
        f"deeprun-eval: error: {run} diverged at epoch 1 (NaN/inf loss): a diverged run keeps no checkpoint"
    ]


# --- one process per folder ------------------------------------------------------------------------


def test_two_runs_started_together_into_one_folder(tmp_path):
    """One trains, the other is refused in one line before it writes anything; every epoch once."""
    run = tmp_path / "run"
    processes = [start(*CONFIG, "trainer.epochs=2", f"hydra.run.dir={run}", cwd=tmp_path) for _ in range(2)]
    outcomes = sorted((p.wait(timeout=300), p.stderr.read()) for p in processes)  # type: ignore[union-attr]
    assert [code for code, _ in outcomes] == [0, 2], outcomes
    [line] = stderr_lines(outcomes[1][1])
    assert "is in use by another deeprun process" in line or "already holds a run" in line, line
    assert [record["epoch"] for record in read_metrics(run / "metrics.jsonl")] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"


def _sweep_with_a_job(interrupted: Path, tmp_path: Path) -> Path:
    sweep = tmp_path / "sweep"
    shutil.copytree(interrupted, sweep / "0")
    (sweep / "multirun.yaml").write_text("hydra:\n  overrides:\n    task: []\n")
    return sweep


@pytest.mark.parametrize("command", ["run", "resume", "resume-a-job-of-a-running-sweep", "sweep", "tune"])
def test_a_folder_another_process_owns_is_refused(command, interrupted, tmp_path):
    held = tmp_path / "held"
    main, program, args = deeprun_main, "deeprun", [*CONFIG, f"hydra.run.dir={held}"]
    if command == "resume":
        held = copy_of(interrupted, tmp_path)
        args = [f"trainer.resume={held}"]
    elif command == "resume-a-job-of-a-running-sweep":
        held = _sweep_with_a_job(interrupted, tmp_path)
        args = [f"trainer.resume={held / '0'}"]
    elif command == "sweep":
        args = ["-m", *CONFIG, "trainer.seed=1,2", f"hydra.sweep.dir={held}"]
    elif command == "tune":
        main, program, args = tune_main, "deeprun-tune", [*CONFIG, "tune/space=learning_rate", f"tune.dir={held}"]
    held.mkdir(exist_ok=True)
    before = snapshot(held)
    with folder_owned_by_another_process(held):
        result = invoke(main, *args, cwd=tmp_path, program=program)
    assert result.returncode == 2, result.stderr
    [line] = stderr_lines(result.stderr)
    assert line.startswith(f"{program}: error: ") and "is in use by another deeprun process" in line
    assert snapshot(held) == before


# --- signals ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "delay",
    [pytest.param(0.3, marks=pytest.mark.slow), pytest.param(1.5, marks=pytest.mark.slow), None],
    ids=["importing", "composing", "once-its-folder-is-made"],
)
def test_ctrl_c_before_the_first_epoch_is_one_line(delay, tmp_path):
    """``None``: as soon as Hydra has written the run's ``.hydra/`` (loading data, compiling)."""
    run = tmp_path / "run"
    process = start(*CONFIG, f"hydra.run.dir={run}", cwd=tmp_path)
    if delay is None:
        wait_until(lambda: (run / ".hydra" / "overrides.yaml").is_file(), process)
    else:
        time.sleep(delay)
    if process.poll() is None and lines(run / "metrics.jsonl") == 0:
        process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    if lines(run / "metrics.jsonl"):
        pytest.skip("the first epoch ended before the signal (a slow machine's timing)")
    assert process.returncode == 130, stderr
    assert stderr_lines(stderr) == ["deeprun: interrupted (SIGINT); nothing was kept"]
    assert not run.exists(), "a folder with nothing of the run was left"


@pytest.mark.slow  # timing-sensitive on a loaded 2-core CI; the single Ctrl-C tests run by default
def test_a_second_ctrl_c_stops_at_once_and_the_folder_resumes(reference, tmp_path):
    run = tmp_path / "run"
    process = start(*CONFIG, f"hydra.run.dir={run}", cwd=tmp_path)
    wait_until(lambda: lines(run / "metrics.jsonl") >= 1, process)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert len(stderr_lines(stderr)) == 1 and "Traceback" not in stderr
    assert json.loads((run / "summary.json").read_text())["status"] == "interrupted"
    resumed = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(run, reference)


# --- disk faults (a small tmpfs; root only) -----------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs, remountable (size, read-only) by the test; skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")

    def remount(options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(mount)], check=True)

    yield mount, remount
    subprocess.run(["umount", "-l", str(mount)], check=False)


LARGE = ("data=synthetic", "data.n_train=8000", "model.hidden=[512,256]", "trainer.plots=false", "trainer.epochs=30")


def _leftovers(run: Path) -> list[str]:
    return [str(p) for p in run.rglob("*") if p.name.endswith(".tmp") or "orbax-checkpoint-tmp" in p.name]


def test_a_full_disk_is_one_line_and_the_run_resumes_once_there_is_space(small_disk, tmp_path):
    mount, remount = small_disk
    run = mount / "run"
    process = start(*LARGE, f"hydra.run.dir={run}", cwd=tmp_path)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr
    [line] = stderr_lines(stderr)
    assert line.startswith(f"deeprun: error: cannot write {run}") and "No space left on device" in line, line
    assert _leftovers(run) == []
    assert [p.name for p in (run / "resume").iterdir()], "the last finished epoch's checkpoint is kept"
    remount("size=64m")
    resumed = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["status"] in ("completed", "stopped_early")


@pytest.mark.slow
def test_a_folder_that_turns_read_only_is_one_line_and_resumes(small_disk, tmp_path):
    mount, remount = small_disk
    remount("size=64m")
    run = mount / "run"
    process = start(*LARGE, f"hydra.run.dir={run}", cwd=tmp_path)
    wait_until(lambda: lines(run / "metrics.jsonl") >= 2, process)
    remount("ro")
    _, stderr = process.communicate(timeout=300)
    remount("rw")
    assert process.returncode == 1, stderr
    [line] = stderr_lines(stderr)
    assert line.startswith("deeprun: error: cannot write ") and "Read-only file system" in line, line
    resumed = invoke(deeprun_main, f"trainer.resume={run}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((run / "summary.json").read_text())["status"] in ("completed", "stopped_early")


# --- whole sweeps ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_sweep(tmp_path_factory) -> Callable[[tuple[str, ...]], Path]:
    """The uninterrupted sweep, per launcher setting (fused runs differ from lone ones in the last bits)."""
    sweeps: dict[tuple[str, ...], Path] = {}

    def sweep_for(launcher: tuple[str, ...]) -> Path:
        key = () if not launcher else ("hydra.launcher.max_members=1",)  # joblib also trains jobs alone
        if key not in sweeps:
            root = tmp_path_factory.mktemp("reference_sweep")
            args = ("-m", *SWEEP, "trainer.seed=1,2,3", *key, f"hydra.sweep.dir={root / 'sweep'}")
            assert invoke(deeprun_main, *args, cwd=root).returncode == 0
            sweeps[key] = root / "sweep"
        return sweeps[key]

    return sweep_for


def _kill_sweep(args: list[str], sweep: Path, tmp_path: Path, after_lines: int, delay: float) -> None:
    process = start("-m", *args, cwd=tmp_path)
    wait_until(lambda: lines(sweep / "0" / "metrics.jsonl") >= after_lines, process, timeout=300)
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "the sweep ended before it could be killed"


SWEEP_KILLS = [
    pytest.param((), 2, 0.0, id="fused-inside-a-checkpoint-write", marks=pytest.mark.slow),
    pytest.param(("hydra.launcher.max_members=1",), 2, 0.1, id="one-by-one", marks=pytest.mark.slow),
    pytest.param((), 1, 0.15, id="fused-during-epoch-2", marks=pytest.mark.slow),
    pytest.param((), 4, 0.0, id="fused-late", marks=pytest.mark.slow),
    pytest.param(("hydra/launcher=joblib",), 2, 0.0, id="joblib", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("launcher", "after_lines", "delay"), SWEEP_KILLS)
def test_a_killed_sweep_continues_with_the_same_command(launcher, after_lines, delay, reference_sweep, tmp_path):
    """The same command into the same folder: finished jobs kept, the others resumed or run; each job's
    numbers equal the uninterrupted sweep's, bit for bit; the summary lists every job."""
    sweep = tmp_path / "sweep"
    args = [*SWEEP, "trainer.seed=1,2,3", *launcher, f"hydra.sweep.dir={sweep}"]
    _kill_sweep(args, sweep, tmp_path, after_lines, delay)
    finished_before = {
        job.name: (job / "summary.json").read_bytes() for job in sweep.iterdir() if (job / "summary.json").is_file()
    }
    continued = invoke(deeprun_main, "-m", *args, cwd=tmp_path)
    assert continued.returncode == 0, continued.stderr
    for job in ("0", "1", "2"):
        assert_same_run(sweep / job, reference_sweep(launcher) / job)
    for name, summary in finished_before.items():
        if json.loads(summary)["status"] != "interrupted":
            assert (sweep / name / "summary.json").read_bytes() == summary, f"finished job {name} ran again"
    assert "3 jobs (3 completed)" in (sweep / "sweep_summary.md").read_text()


@pytest.mark.slow  # the continued-sweep tests cover the summary by default
def test_a_sweep_of_resumed_runs_summarizes_them(reference_sweep, tmp_path):
    """``deeprun -m trainer.resume=<job0>,<job1>``: the jobs resume in their own folders and the new
    sweep's summary lists them (its job folders link to them)."""
    killed = tmp_path / "killed"
    _kill_sweep([*SWEEP, "trainer.seed=1,2,3", f"hydra.sweep.dir={killed}"], killed, tmp_path, 2, 0.0)
    resumes = tmp_path / "resumes"
    jobs = ",".join(str(killed / job) for job in ("0", "1", "2"))
    result = invoke(deeprun_main, "-m", f"trainer.resume={jobs}", f"hydra.sweep.dir={resumes}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for job in ("0", "1", "2"):
        assert (resumes / job).resolve() == (killed / job).resolve()
        assert_same_run(killed / job, reference_sweep(()) / job)
    assert "3 jobs (3 completed)" in (resumes / "sweep_summary.md").read_text()


@pytest.mark.slow
def test_sigterm_stops_a_sweep_in_one_line_and_the_same_command_continues_it(reference_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *SWEEP, "trainer.seed=1,2,3", f"hydra.sweep.dir={sweep}"]
    process = start(*args, cwd=tmp_path)
    stderr = signal_when(process, lambda: lines(sweep / "0" / "metrics.jsonl") >= 1, signal.SIGTERM, timeout=300)
    assert process.returncode == 143, stderr
    assert stderr_lines(stderr) == [
        f"deeprun: interrupted; the sweep's state is in {sweep} (continue it with the same command and "
        f"hydra.sweep.dir={sweep})"
    ]
    continued = invoke(deeprun_main, *args, cwd=tmp_path)
    assert continued.returncode == 0, continued.stderr
    for job in ("0", "1", "2"):
        assert_same_run(sweep / job, reference_sweep(()) / job)
