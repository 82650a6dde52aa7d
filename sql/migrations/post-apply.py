"""Re-install every sql/procedures/*.sql file, in name order, after yoyo applies migrations.

yoyo runs this hook after `yoyo apply` when something was pending; `pgwallet migrate` runs it on
every call. It runs in one transaction, as pgwallet_owner, so a failing file changes nothing.
"""

from pathlib import Path
from typing import Any

from yoyo import step

PROCEDURES = Path(__file__).resolve().parent.parent / "procedures"


def install_procedures(conn: Any) -> None:
    cursor = conn.cursor()
    cursor.execute("set local role pgwallet_owner")
    for path in sorted(PROCEDURES.glob("*.sql")):
        cursor.execute(path.read_text(encoding="utf-8"))
    # functions that existed before the default privileges were set keep PUBLIC's EXECUTE: remove it
    cursor.execute("revoke execute on all functions in schema pgwallet from public")
    cursor.execute("reset role")


steps = [step(install_procedures)]
