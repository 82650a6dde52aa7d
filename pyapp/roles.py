"""The role tiers and the privilege matrix (tier x public function), read from the database's grants.

A DBA grants each login one tier (``grant pgwallet_app to edge_login``); the database is the last word
on what a login may call. The README carries the matrix that :func:`privilege_matrix` prints, and a test
keeps the two equal, so a function cannot slip in ungranted or over-granted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: The tiers, from the narrowest; each later one of app/staff/admin includes the one before it
#: (staff also includes worker). readonly and webhook stand alone.
TIERS: tuple[str, ...] = ("pgwallet_readonly", "pgwallet_webhook", "pgwallet_app", "pgwallet_worker",
                          "pgwallet_staff", "pgwallet_admin")

_GRANTS_SQL = """
select p.oid::regprocedure::text as signature, p.proname as name, t.tier,
       has_function_privilege(t.tier, p.oid, 'execute') as allowed,
       exists (select 1 from aclexplode(p.proacl) a where a.grantee = t.tier::regrole
               and a.privilege_type = 'EXECUTE') as direct
from pg_proc p
cross join unnest(%s::text[]) t(tier)
where p.pronamespace = 'pgwallet'::regnamespace
order by p.proname, signature, t.tier
"""


@dataclass(frozen=True)
class FunctionGrants:
    """Which tiers may execute one function, and which were granted it directly (the rest inherit)."""

    name: str
    signature: str
    allowed: tuple[str, ...]
    direct: tuple[str, ...]


def function_grants(conn: Any) -> list[FunctionGrants]:
    """Every pgwallet function granted to at least one tier (the others are internal), by name."""
    rows: dict[str, dict[str, Any]] = {}
    for signature, name, tier, allowed, direct in conn.execute(_GRANTS_SQL, (list(TIERS),)).fetchall():
        row = rows.setdefault(signature, {"name": name, "allowed": [], "direct": []})
        if allowed:
            row["allowed"].append(tier)
        if direct:
            row["direct"].append(tier)
    return [FunctionGrants(r["name"], sig, tuple(t for t in TIERS if t in r["allowed"]),
                           tuple(t for t in TIERS if t in r["direct"]))
            for sig, r in rows.items() if r["allowed"]]


def privilege_matrix(conn: Any) -> str:
    """The README's matrix as markdown: one row per public function, ``x`` where a tier may call it
    (``G`` where it is granted directly, ``x`` where a tier inherits it)."""
    short = [t.removeprefix("pgwallet_") for t in TIERS]
    lines = ["| function | " + " | ".join(short) + " |", "|---|" + "---|" * len(short)]
    for f in function_grants(conn):
        cells = ["G" if t in f.direct else "x" if t in f.allowed else "" for t in TIERS]
        lines.append(f"| `{f.name}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
