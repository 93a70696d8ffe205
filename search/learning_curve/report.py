"""The learning-curve audit's report: audit.md, audit.csv (every claim), curve-runs.csv
(every run) and audit-curves.png, and the CSVs read back to write them again."""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from search.figure_style import COLOURS, WIDTH, log_count_axis, percent_axis, save_figure, styled
from search.learning_curve.audit import VERDICTS, CurveAuditRow, validation_failures
from search.learning_curve.fit import Curve, Validation, local_slopes
from search.learning_curve.runs import CurveRun, CurveSettings, curve_points
from search.report_format import footnoted_table, format_value, readable_paths

if TYPE_CHECKING:
    from search.replay import ReplayRequest

TABLE_COLUMNS = ("report", "experiment", "epochs", "claimed", "measured at largest size (mean)",
                 "extrapolated test accuracy (interval; used only if validated)", "verdict", "reason")


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def table_cells(row: CurveAuditRow) -> list[str]:
    interval = "-" if row.extrapolated is None else (
        f"{_percent(row.extrapolated)} [{_percent(row.interval_low)}, {_percent(row.interval_high)}] "
        f"at {row.target_images:,}")
    return [row.report.split("_")[0], row.experiment, row.epochs,
            f"{row.metric} {format_value(row.metric, row.claimed)}", _percent(row.measured_largest),
            interval, row.verdict, row.reason]


def headline(rows: Sequence[CurveAuditRow]) -> CurveAuditRow:
    """The test-accuracy claim where there is one: the one claim extrapolated."""
    return next((r for r in rows if r.metric == "test_accuracy"), rows[0])


HOW_TO_READ = """## How to read the verdicts

Each documented experiment was trained at several training-set sizes (nested, stratified
subsets of the training split; one subset order and one weight initialisation per seed) and
tested on the test set. A power law with an asymptote, err(n) = e_inf + b (n/1000)^-c, fitted
to those runs is extrapolated to the number of images the report trained on, with a
prediction interval for one run there (bootstrap over seeds and sizes plus the seed-to-seed
noise). Only test accuracy is extrapolated.

- *reproduced* / *not reproduced*: the full protocol ran (all the report's images, its
  epochs) and the claim is / is not within the tolerance. Parameter counts need no data.
- *consistent with the extrapolation*: the claim lies inside the interval. Not a
  reproduction: a claim anywhere in a wide interval is consistent.
- *outside the extrapolated interval*: the claim lies above or below it, by the points given.
- *not comparable*: the reason says why (another dataset whose files are missing, a claim
  that is not a test accuracy, a curve that could not be fitted, or an extrapolation that did
  not pass its check below, in which case no claim is judged by it).
"""


VERDICT_COLOURS = {"consistent with the extrapolation": "tab:green", "reproduced": "tab:green",
                   "outside the extrapolated interval": "tab:red", "not reproduced": "tab:red"}
NOT_JUDGED = "not judged by the curve"


def panel_title(row: CurveAuditRow, width: int = 30) -> str:
    """'000 · Experiment 1' on at most two lines, shortened with an ellipsis beyond that."""
    import textwrap

    lines = textwrap.wrap(f"{row.report.split('_')[0]} · {row.experiment}", width)
    if len(lines) > 2:
        lines = [lines[0], textwrap.shorten(" ".join(lines[1:]), width, placeholder=" ...")]
    return "\n".join(lines)


@styled
def plot_curves(claims: Sequence[CurveAuditRow], runs: Sequence[CurveRun], path: Path,
                validated: bool = True) -> Path:
    """One panel per experiment with a test-accuracy claim: its runs, the fitted curve over the
    measured sizes, and the claim at the report's size. The extrapolation (dashed, with its
    interval) is drawn only when it `validated`: the audit judges no claim by one that did not."""
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    tested = [r for r in claims if r.metric == "test_accuracy" and r.curve_e_inf is not None]
    columns = 4 if len(tested) > 4 else max(1, len(tested))
    rows = max(1, -(-len(tested) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(WIDTH, 0.9 + 2.1 * rows), squeeze=False, sharex=True,
                             sharey=True, layout="constrained")
    verdicts: set[str] = set()
    for ax, row in zip(axes.flat, tested, strict=False):
        mine = [r for r in runs if r.experiment == f"{row.report.split('_')[0]}/{row.experiment}"]
        sizes = [r.size for r in mine]
        ax.scatter(sizes, [100 * r.test_accuracy for r in mine], s=9, color=COLOURS["measured"], alpha=0.8,
                   zorder=2)
        curve = Curve(row.curve_e_inf, row.curve_b, row.curve_c)
        n = np.geomspace(min(sizes), max(sizes), 60)
        ax.plot(n, 100 * curve.accuracy(n), color=COLOURS["measured"])
        if validated:
            far = np.geomspace(max(sizes), row.target_images, 60)
            ax.plot(far, 100 * curve.accuracy(far), color=COLOURS["measured"], linestyle="--")
            ax.errorbar([row.target_images], [100 * row.extrapolated],
                        yerr=[[100 * (row.extrapolated - row.interval_low)],
                              [100 * (row.interval_high - row.extrapolated)]],
                        color=COLOURS["measured"], capsize=3, linewidth=1.2)
        verdict = row.verdict if row.verdict in VERDICT_COLOURS else NOT_JUDGED
        verdicts.add(verdict)
        ax.scatter([row.target_images], [100 * row.claimed], marker="*", s=90, zorder=3,
                   color=VERDICT_COLOURS.get(verdict, COLOURS["claim"]))
        ax.set_title(panel_title(row), fontsize=8)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(tested):]:
        ax.axis("off")
    if tested:
        log_count_axis(axes[0, 0], "x")
        percent_axis(axes[0, 0])
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    for column in range(columns):  # the lowest panel drawn in each column carries the x label
        drawn = [r for r in range(rows) if r * columns + column < len(tested)]
        if drawn:
            axes[drawn[-1], column].set_xlabel("training images (log)")
            axes[drawn[-1], column].xaxis.set_tick_params(labelbottom=True)
    handles = [Line2D([], [], color=COLOURS["measured"], marker="o", linestyle="", markersize=4,
                      label="one run (size, seed)"),
               Line2D([], [], color=COLOURS["measured"], label="fitted curve, measured sizes")]
    if validated:
        handles.append(Line2D([], [], color=COLOURS["measured"], linestyle="--", marker="_",
                              markersize=10, label="extrapolation and its interval"))
    handles += [Line2D([], [], color=VERDICT_COLOURS.get(v, COLOURS["claim"]), marker="*", linestyle="",
                       markersize=10, label=f"claimed ({v})") for v in sorted(verdicts)]
    fig.legend(handles=handles, loc="outside lower center", ncols=3, fontsize=8)
    if not validated:
        fig.suptitle("The extrapolation failed its check, so it is not drawn and judges no claim",
                     fontsize=9)
    return save_figure(fig, path)


def slope_table(runs: Sequence[CurveRun]) -> dict[tuple[int, int], list[float]]:
    """Local slopes of every experiment's curve, gathered per pair of neighbouring sizes."""
    gathered: dict[tuple[int, int], list[float]] = {}
    for key in dict.fromkeys(r.experiment for r in runs):
        for a, b, slope in local_slopes(*curve_points([r for r in runs if r.experiment == key])):
            gathered.setdefault((a, b), []).append(slope)
    return gathered


def write_curve_audit(out: Path, claims: Sequence[CurveAuditRow], runs: Sequence[CurveRun],
                      validations: Sequence[Validation], header: str) -> list[Path]:
    """audit.md (validation, one row per experiment), audit.csv (every claim), curve-runs.csv and
    audit-curves.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "audit.md", out / "audit.csv", out / "curve-runs.csv"]
    for path, rows, fields in ((paths[1], claims, CurveAuditRow.__dataclass_fields__),
                               (paths[2], runs, CurveRun.__dataclass_fields__)):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(fields))
            writer.writeheader()
            # reasons may name the data folder: shown as a reader elsewhere recognises it
            writer.writerows({k: "" if v is None else readable_paths(v) if isinstance(v, str) else v
                              for k, v in asdict(r).items()} for r in rows)
    lines = [f"# Audit of the reports on the test set, by learning curves\n\n{readable_paths(header)}\n",
             HOW_TO_READ,
             "## Does the extrapolation validate?\n"]
    lines += [f"- {v.describe()}" for v in validations] or ["- no validation: too few sizes"]
    largest = max((r.size for r in runs), default=0)
    targets = sorted({r.target_images for r in claims})
    if validations and largest:
        reach = max(v.target / v.up_to for v in validations)
        low, high = targets[0] / largest, targets[-1] / largest
        lines.append(f"\nThe checks extrapolate at most {reach:.1f}x in training-set size; the audit "
                     f"extrapolates {low:.1f}x" + f"-{high:.1f}x" * (high > low) + f" (from {largest:,} "
                     f"to {', '.join(f'{t:,}' for t in targets)} images). Passing at the shorter reach is "
                     "necessary, not sufficient, for trusting the longer one.")
    slopes = slope_table(runs)
    if slopes:
        lines += ["\nHow the error falls with size, averaged over the experiments (slope of log test error "
                  "against log training images between neighbouring sizes; a saturating curve's slopes "
                  "flatten toward zero):\n", "| sizes | mean slope | range over experiments |",
                  "|---|---|---|"]
        lines += [f"| {a:,}-{b:,} | {np.mean(v):.3f} | {min(v):.3f} .. {max(v):.3f} |"
                  for (a, b), v in slopes.items()]
    if runs:
        figure = plot_curves(claims, runs, out / "audit-curves.png",
                             validated=not validation_failures(validations))
        paths.append(figure)
        lines.append(f"\n![learning curves]({figure.name})")
    experiments: dict[tuple[str, str], list[CurveAuditRow]] = {}
    for row in claims:
        experiments.setdefault((row.report, row.experiment), []).append(row)
    lines += ["\n## One row per experiment\n",
              *footnoted_table(TABLE_COLUMNS, [table_cells(headline(rows)) for rows in experiments.values()],
                               TABLE_COLUMNS.index("reason"))]
    counts = {v: sum(r.verdict == v for r in claims) for v in VERDICTS}
    lines.append("\nAll claims: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) +
                 f" (every claim, with its curve, in {paths[1].name}; every run in {paths[2].name}).\n")
    paths[0].write_text("\n".join(lines))
    return paths


def _read_rows(path: Path, kind: type) -> list:
    """Rows of a CSV written by `write_curve_audit`, back as `kind` (a dataclass)."""
    def number(text: str) -> float:  # a count written as 535818 reads back as one, to write it alike
        return int(text) if text.lstrip("-").isdigit() else float(text)

    parse = {"str": str, "int": int, "float": number,
             "float | None": lambda v: None if v == "" else number(v)}
    fields = kind.__dataclass_fields__
    with open(path, newline="") as f:
        return [kind(**{name: parse[fields[name].type](value) for name, value in row.items()})
                for row in csv.DictReader(f)]


def read_curve_audit(folder: Path) -> tuple[list[CurveAuditRow], list[CurveRun]]:
    """The claims (audit.csv) and runs (curve-runs.csv) an audit wrote: enough to write its
    markdown and figure again without training anything."""
    return _read_rows(folder / "audit.csv", CurveAuditRow), _read_rows(folder / "curve-runs.csv", CurveRun)


def audit_and_write(request: ReplayRequest, settings: CurveSettings, validate_up_to: Sequence[int],
                    say: Callable[[str], None] = lambda _: None,
                    ) -> tuple[list[CurveAuditRow], list[Validation], list[Path]]:
    """`replay --learning-curve`: the chosen experiments' curves into the storage, the audit of
    their claims, and its files; the rows, the extrapolation checks and the paths written."""
    from search.learning_curve.audit import audit_by_curves
    from storage.urls import open_storage

    chosen, load = request.experiments_and_data()
    rows, runs, validations = audit_by_curves(open_storage(request.storage), chosen, load, request.dataset,
                                              settings, validate_up_to, request.accuracy_tolerance,
                                              report=say)
    cap = f"documented epochs capped at {settings.max_epochs}" if settings.max_epochs else "documented epochs"
    sizes = ", ".join(str(n or "all") for n in settings.sizes)
    header = (f"Data: `{request.data_dir}`; {cap} (documented early stopping applies); validation "
              f"fraction {request.val_fraction:.3g} held out once; sizes {sizes}; "
              f"{settings.seeds} seeds from {settings.seed}; {100 * settings.level:.0f}% prediction "
              f"intervals from {settings.bootstrap} bootstrap refits; accuracy tolerance "
              f"{100 * request.accuracy_tolerance:g} points.")
    return rows, validations, write_curve_audit(request.out, rows, runs, validations, header)
