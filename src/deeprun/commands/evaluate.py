"""``deeprun-eval RUN_DIR [mc_samples=100] [split=test] [seed=42] [bins=15]``: evaluate a finished run's
accuracy and calibration, with Monte Carlo dropout (Gal & Ghahramani 2016) when ``mc_samples`` > 0.

What it computes and writes: ``deeprun.reports.mc_dropout``.
"""

from __future__ import annotations

import sys

from deeprun.commands.common import run_folder_command
from deeprun.reports.mc_dropout import EvalOptions, mc_dropout


def main(argv: list[str] | None = None) -> None:
    report = run_folder_command("deeprun-eval", __doc__, EvalOptions, mc_dropout, argv)
    if report.get("has_dropout") is False:
        print(
            "deeprun-eval: warning: the run has no dropout layer, so every MC dropout pass is the same "
            "deterministic pass (train it with regularizer=dropout or regularizer=alpha_dropout)",
            file=sys.stderr,
        )
    line = f"{report['split']} accuracy {report['accuracy']:.4f}"
    if "mc_accuracy" in report:
        line += f" -> {report['mc_accuracy']:.4f} with MC dropout ({report['mc_samples']} passes)"
    print(line)
    line = f"expected calibration error ({report['bins']} bins) {report['ece']:.4f}"
    if "mc_ece" in report:
        line += f" -> {report['mc_ece']:.4f} with MC dropout"
    print(line)
    print(f"first example (label {report['first_example']['label']}): {report['first_example']}")


if __name__ == "__main__":
    main()
