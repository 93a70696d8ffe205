"""What people read besides the trial figures: the front, the audit's figure and markdown,
dashboard notes and the dashboard's importance card. Each checks a way these once misled or
cluttered: error on a log axis, overlapping labels, curves drawn past a failed check, one
reason repeated row after row, scratch paths, importance from a handful of trials."""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from wsgiref.util import setup_testing_defaults

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import create_trial

from objectives.budget import Budget
from search.dashboard import IMPORTANCE_MIN_TRIALS, dashboard_app
from search.evidence import append_note, claims_note
from search.figure_style import figure_style, label_points, short_count
from search.front import COSTS, pareto_front, plot_front
from search.learning_curve.audit import CurveAuditRow
from search.learning_curve.report import plot_curves, read_curve_audit, write_curve_audit
from search.learning_curve.runs import CurveRun
from search.report_format import readable_paths
from storage.optuna_private import get_note_from_system_attrs

SCRATCH = Path(tempfile.gettempdir()).resolve()


def costed(number: int, accuracy: float, params: int) -> optuna.trial.FrozenTrial:
    trial = create_trial(value=accuracy, user_attrs={"param_count": params, "latency_ms": params / 1e5})
    trial.number = number
    return trial


def overlapping(texts) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts]
    return [(a, b) for i, (a, box_a) in enumerate(boxes) for b, box_b in boxes[i + 1:]
            if box_a.overlaps(box_b)]


def test_labels_of_crowded_points_never_overlap():
    import matplotlib.pyplot as plt

    with figure_style():
        fig, ax = plt.subplots()
        xs, ys = [1.0, 1.02, 1.04, 1.06, 2.0, 2.01], [50.0, 50.2, 50.1, 50.3, 60.0, 60.05]
        ax.scatter(xs, ys)
        placed = label_points(ax, xs, ys, [f"#{i}" for i in range(len(xs))])
    assert len(placed) >= 4  # most find a free place
    assert not overlapping(placed)
    plt.close(fig)


def test_labels_keep_off_other_dots_and_the_staircase():
    import matplotlib.pyplot as plt

    def label_centre(**avoiding) -> tuple:
        """Where the label of the point (5, 5) goes, in data coordinates, and its box."""
        fig, ax = plt.subplots()
        ax.set_xlim(0, 10)
        ax.set_ylim(0, 10)
        placed = label_points(ax, [5.0], [5.0], ["#1"], **avoiding)
        assert len(placed) == 1
        box = placed[0].get_window_extent()
        centre = ax.transData.inverted().transform([((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)])[0]
        plt.close(fig)
        return tuple(centre), (ax, box)

    with figure_style():
        first, _ = label_centre()
        dot = first  # a dot exactly where the label went: it must move
        second, (ax, box) = label_centre(avoid=[dot])
        assert not box.contains(*ax.transData.transform([dot])[0])
        line = [(first[0] - 3, second[1]), (first[0] + 3, second[1])]  # and a line where it went next
        third, (ax, box) = label_centre(avoid=[dot], avoid_lines=[line])
        assert not box.contains(*ax.transData.transform([dot])[0])
        for x in np.linspace(line[0][0], line[1][0], 25):
            assert not box.contains(*ax.transData.transform([(x, second[1])])[0])
        assert len({first, second, third}) == 3


def test_counts_read_short():
    shown = [short_count(v) for v in (500, 5000, 20_000, 1_333_770, 0.05)]
    assert shown == ["500", "5k", "20k", "1.33M", "0.05"]


@pytest.mark.parametrize("params, log", [((4_730, 5_834, 9_738, 12_900), False),
                                         ((101_770, 535_818, 1_333_770, 4_730), True)])
def test_front_shows_accuracy_in_percent_and_a_log_axis_only_across_decades(tmp_path, monkeypatch, params,
                                                                             log):
    import matplotlib.pyplot as plt

    accuracies = (0.18, 0.33, 0.74, 0.44)
    trials = [costed(i, acc, p) for i, (acc, p) in enumerate(zip(accuracies, params, strict=True))]
    front = pareto_front(trials, COSTS["params"])
    drawn = {}
    monkeypatch.setattr(plt, "close", lambda fig: drawn.setdefault("fig", fig))
    plot_front(trials, front, COSTS["params"], Budget(max_params=20_000), "t", tmp_path / "f.png", front[-1])
    ax = drawn["fig"].axes[0]
    assert ax.get_yscale() == "linear" and "error" not in ax.get_ylabel()
    assert {t.get_text() for t in ax.get_yticklabels() if t.get_text()} <= {f"{v}%" for v in range(0, 101, 5)}
    assert ax.get_xscale() == ("log" if log else "linear")
    assert ("log" in ax.get_xlabel()) == log
    labels = [t for t in ax.texts if t.get_text().startswith("#")]
    assert {t.get_text() for t in labels} == {f"#{t.number}" for t in front}
    assert not overlapping(labels)
    assert (tmp_path / "f.png").read_bytes().startswith(b"\x89PNG")


def audit_rows(reason: str) -> tuple[list[CurveAuditRow], list[CurveRun]]:
    claims, runs = [], []
    for i in range(3):
        key = f"00{i}/Experiment {i}"
        claims.append(CurveAuditRow(f"00{i}_abc.txt", f"Experiment {i}", "kmnist", "at most 2 of 50 (capped)",
                                    "5 sizes", "test_accuracy", 0.92, 0.8, 60_000, 0.9, 0.88, 0.91, 0.05, 0.3,
                                    0.4, "not comparable", reason + ("; the catalogue doubts it" * (i == 2))))
        runs += [CurveRun(key, n, s, 0.6 + 0.04 * k, 0.7, 2, 1000, k) for k, n in
                 enumerate((500, 1000, 2000, 4000, 5842)) for s in range(2)]
    return claims, runs


def test_the_audit_states_a_repeated_reason_once_and_no_scratch_path(tmp_path):
    reason = ("extrapolation did not validate (fit up to 2,000, predict 5,842: coverage 28% against nominal "
              f"90%; fit up to 4,000, predict 5,842: coverage 58% against nominal 90%) from "
              f"{SCRATCH}/x1/data")
    claims, runs = audit_rows(reason)
    header = f"Data: `{SCRATCH / 'tmpab12' / 'kmnist-7k'}`; 2 seeds."
    write_curve_audit(tmp_path, claims, runs, [], header)
    markdown = (tmp_path / "audit.md").read_text()
    shown = reason.replace(f"{SCRATCH}/x1/", "")
    assert markdown.count(shown) == 1  # once, as a note
    assert markdown.count("extrapolation did not validate: see note 1") == 3
    assert "see note 1; the catalogue doubts it |" in markdown  # what differs stays in its row
    assert "Data: `kmnist-7k`" in markdown
    assert str(SCRATCH) not in markdown


def test_the_audit_reads_back_what_it_wrote(tmp_path):
    claims, runs = audit_rows("no curve: too few sizes")
    no_fit = ("extrapolated", "interval_low", "interval_high", "curve_e_inf", "curve_b", "curve_c")
    claims[0] = CurveAuditRow(**{**vars(claims[0]), **dict.fromkeys(no_fit)})
    write_curve_audit(tmp_path, claims, runs, [], "h")
    before = (tmp_path / "audit.csv").read_bytes(), (tmp_path / "curve-runs.csv").read_bytes()
    assert read_curve_audit(tmp_path) == (claims, runs)
    write_curve_audit(tmp_path, *read_curve_audit(tmp_path), [], "h")
    assert ((tmp_path / "audit.csv").read_bytes(), (tmp_path / "curve-runs.csv").read_bytes()) == before


@pytest.mark.parametrize("validated", [True, False])
def test_audit_curves_extend_past_the_runs_only_when_the_extrapolation_validated(tmp_path, monkeypatch,
                                                                                  validated):
    import matplotlib.pyplot as plt

    claims, runs = audit_rows("r")
    drawn = {}
    monkeypatch.setattr(plt, "close", lambda fig: drawn.setdefault("fig", fig))
    plot_curves(claims, runs, tmp_path / "c.png", validated=validated)
    panels = [ax for ax in drawn["fig"].axes if ax.has_data()]
    assert len(panels) == 3
    for ax in panels:
        reach = max(max(line.get_xdata()) for line in ax.lines)
        assert (reach >= 60_000) == validated
        assert ax.get_title() and len(ax.get_title()) < 70
    labels = [t.get_text() for t in drawn["fig"].legends[0].get_texts()]
    assert ("extrapolation and its interval" in labels) == validated
    assert not any("consistent" in text or "outside" in text for text in labels)  # no colour no star uses


def test_readable_paths_drop_scratch_folders_and_the_working_folder(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    text = f"run {SCRATCH}/tmpq1/retrained and {tmp_path}/runs/best/ and /srv/data"
    assert readable_paths(text) == "run retrained and runs/best/ and /srv/data"
    url = f"sqlite:///{SCRATCH}/tmpq1/k.db"  # a URL is left whole: it must still open
    assert readable_paths(url) == url


def test_notes_name_the_trial_and_show_no_scratch_path(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'n.db'}")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.add_trial(create_trial(value=0.9, user_attrs={
        "report": "000_9f6c1a89b5a01bd8.txt", "experiment": "Experiment 3",
        "claims": {"test_accuracy": 0.92}}))
    trial = study.trials[0]
    note = claims_note(trial, [])
    heading = note.splitlines()[0]
    assert heading == "## Trial 0: report 000, Experiment 3"
    append_note(study, trial, note)
    append_note(study, trial, f"## Retrained\n\n{SCRATCH}/kmnist-search-shots/retrained: test accuracy 81%")
    notes = storage.get_study_system_attrs(study._study_id)
    body = get_note_from_system_attrs(notes, trial._trial_id)["body"]
    assert "retrained: test accuracy 81%" in body
    assert str(SCRATCH) not in body


def importance_answer(app, study_id: int) -> tuple[str, dict]:
    environ = {"PATH_INFO": f"/api/studies/{study_id}/param_importances", "REQUEST_METHOD": "GET",
               "wsgi.input": io.BytesIO()}
    setup_testing_defaults(environ)
    status = {}
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.setdefault("s", s)))
    return status["s"], json.loads(body)


def test_the_dashboard_shows_importance_only_from_enough_trials(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'd.db'}")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    space = {"x": FloatDistribution(0, 1), "y": FloatDistribution(0, 1)}

    def add(n: int) -> None:
        for i in range(n):
            x, y = (i * 0.37) % 1, (i * 0.61) % 1
            study.add_trial(create_trial(value=x + 0.01 * y, params={"x": x, "y": y}, distributions=space))

    app = dashboard_app(storage, None)
    add(4)
    status, answer = importance_answer(app, study._study_id)
    assert status.startswith("400") and f"{IMPORTANCE_MIN_TRIALS} completed trials" in answer["reason"]
    assert "has 4" in answer["reason"]
    add(IMPORTANCE_MIN_TRIALS - 4)
    status, answer = importance_answer(app, study._study_id)
    assert status.startswith("200")
    assert {p["name"] for p in answer["param_importances"][0]} == {"x", "y"}
