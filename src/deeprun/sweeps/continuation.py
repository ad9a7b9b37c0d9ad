"""Continuing a sweep: the same command run again into its folder (``hydra.sweep.dir=<that folder>``).

Finished jobs are kept and not run again, interrupted or killed ones resume from their last epoch
checkpoint (or start again when none had finished), missing ones run; the sweep summary covers them all.
A fused group resumes fused, from the last epoch every member has a checkpoint of, so its numbers are
those of the sweep that was never stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deeprun.registry import ConfigError


def check_same_sweep(sweep_dir: Path, overrides: Sequence[str]) -> None:
    """Allow ``sweep_dir`` when it is new, or holds a sweep of exactly these overrides (it is continued);
    ConfigError otherwise."""
    from omegaconf import OmegaConf

    saved_file = sweep_dir / "multirun.yaml"
    if not saved_file.is_file():
        return
    try:
        saved = [str(item) for item in OmegaConf.select(OmegaConf.load(saved_file), "hydra.overrides.task") or []]
    except Exception as error:
        raise ConfigError(f"hydra.sweep.dir: {saved_file} is unreadable ({error})") from None
    if sorted(saved) != sorted(overrides):
        raise ConfigError(
            f"hydra.sweep.dir: {sweep_dir} holds a sweep of other overrides ({' '.join(saved) or 'none'}); "
            "continue it with exactly those, or give a new folder"
        )


def resume_parts(available: Sequence[Sequence[int]]) -> list[tuple[list[int], int]]:
    """Split the members of a fused group by the epoch they resume after, so each part resumes as one
    program: ``available[i]`` lists member ``i``'s checkpointed epochs (0 alone: from the start).

    A member resumes after its latest epoch, or after the one before when that is another member's
    latest (a kill while the group saved leaves some members one epoch ahead, with the epoch before
    still kept): then the group goes on whole, as the sweep that never stopped. Returns (member indices,
    epoch) per part, in the order of their first members.

    >>> resume_parts([[0, 2, 3], [0, 1, 2], [0, 7, 8], [0]])
    [([0, 1], 2), ([2], 8), ([3], 0)]
    """
    latest = [max(epochs) for epochs in available]
    targets = [
        epochs_latest - 1 if epochs_latest - 1 in epochs and epochs_latest - 1 in latest else epochs_latest
        for epochs, epochs_latest in zip(available, latest, strict=True)
    ]
    parts: dict[int, list[int]] = {}
    for index, epoch in enumerate(targets):
        parts.setdefault(epoch, []).append(index)
    return sorted(((members, epoch) for epoch, members in parts.items()), key=lambda item: item[0][0])
