"""The README's feature table per seed points at functions that exist: in the SQL and in the named spec."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_feature_row_names_a_real_function_and_spec() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Features by seed"):readme.index("## For edge / serverless functions")]
    sql = "".join(p.read_text() for p in sorted((ROOT / "sql" / "procedures").glob("*.sql")))
    sql += "".join(p.read_text() for p in sorted((ROOT / "sql" / "migrations").glob("*.sql")))
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in section.splitlines() if line.startswith("| 0")]
    assert len({r[0] for r in rows}) == 5, "one or more rows per seed, five seeds"
    for seed, feature, functions, specs, _cli in rows:
        names = re.findall(r"`(\w+)`", functions)
        assert names, f"{seed} {feature}: no function named"
        spec_text = "".join((ROOT / f).read_text() for f in re.findall(r"`([\w/.]+\.py)`", specs))
        for name in names:
            if name.startswith("payout_"):  # a view
                assert f"create view pgwallet.{name}" in sql, name
                continue
            assert re.search(rf"function pgwallet\.{name}\(", sql), f"{name}: no such SQL function"
            assert re.search(rf"^def {name}\(", spec_text, re.M), f"{name}: not in {specs}"
