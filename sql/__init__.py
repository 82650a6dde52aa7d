"""pgwallet's SQL, shipped inside the package as ``pyapp.sql`` (``migrations/``, ``procedures/``) and read
with importlib.resources; in the repository it stays at the top, in ``sql/``."""
