"""Write docs/audit.md and docs/audit-curves.png again from the audit's results in
docs/audit.csv and docs/curve-runs.csv, without training anything (seconds, not hours):

    .venv/bin/python docs/rebuild_audit.py

The extrapolation checks are recomputed from the runs with the settings the audit used
(they are deterministic), and must read as the committed audit.md states them; the header
keeps the committed one, its paths made readable.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
LEVEL, BOOTSTRAP, VALIDATE_UP_TO = 0.9, 500, (2000, 4000)  # what the committed audit ran with


def main() -> int:
    sys.path.insert(0, str(DOCS.parent))
    from search.learning_curve.fit import validate
    from search.learning_curve.report import read_curve_audit, write_curve_audit
    from search.learning_curve.runs import curve_points

    claims, runs = read_curve_audit(DOCS)
    keys = list(dict.fromkeys(r.experiment for r in runs))
    curves = [curve_points([r for r in runs if r.experiment == key]) for key in keys]
    validations = [validate(curves, up_to, LEVEL, BOOTSTRAP) for up_to in VALIDATE_UP_TO]
    committed = (DOCS / "audit.md").read_text().splitlines()
    stated = [line for line in committed if line.startswith("- fit on sizes up to")]
    recomputed = [f"- {v.describe()}" for v in validations]
    if stated != recomputed:
        sys.exit("rebuild_audit: the recomputed extrapolation checks differ from audit.md's:\n"
                 + "\n".join(recomputed))
    header = committed[2]  # the paragraph under the title: data, settings
    write_curve_audit(DOCS, claims, runs, validations, header)
    print(f"wrote {DOCS / 'audit.md'}, {DOCS / 'audit-curves.png'} (and the CSVs, unchanged)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
