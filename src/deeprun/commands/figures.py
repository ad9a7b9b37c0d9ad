"""``python -m deeprun.commands.figures``: the chapter's figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from deeprun.exit_codes import ExitCode
from deeprun.reports.figures import (
    activation_figures,
    book_schedule_figures,
    optimizer_curves_from_sweep,
    schedule_figure,
)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m deeprun.commands.figures chapter OUT_DIR`` (activation and schedule figures) or
    ``python -m deeprun.commands.figures optimizers SWEEP_DIR`` (the optimizers' loss curves)."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2 or args[0] not in ("chapter", "optimizers"):
        print(main.__doc__, file=sys.stderr)
        sys.exit(ExitCode.BAD_INPUT)
    target = Path(args[1])
    if args[0] == "chapter":
        target.mkdir(parents=True, exist_ok=True)
        paths = activation_figures(target) + book_schedule_figures(target)
        paths.append(schedule_figure({"name": "1cycle", "max_lr": 0.1}, 0.1, 430, 25, target / "1cycle_plot.png"))
    else:
        paths = [optimizer_curves_from_sweep(target)]
    print("wrote " + ", ".join(map(str, paths)))


if __name__ == "__main__":
    main()
