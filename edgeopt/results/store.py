"""The results store: one interface, two backends, chosen by :func:`open_store`.

* SQLite (the embedded default, nothing to set up): ``edgeopt.results.sqlite.Store`` —
  ``./results/edgeopt.sqlite`` or ``--store FILE``.
* PostgreSQL (one history shared by several CI runners and hosts): ``edgeopt.results.postgres.PostgresStore`` —
  ``--store postgresql://user@host:port/db``, ``EDGEOPT_STORE``, or a lab's ``store:``. Anything else
  that looks like a URL (``pg://…``, ``postgresql:host/db``) is refused, never taken for a file name.

Both keep the same tables and the same JSON copies (``results/<run_id>/``); both decide run updates and tags in
transactions. An unreachable PostgreSQL server is an infrastructure error (exit 3), never a local directory.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from edgeopt.errors import ConfigError, StoreError
from edgeopt.results.common import (
    DB_NAME,
    DEFAULT_RESULTS_DIR,
    SCHEMA_VERSION,
    is_url,
    looks_like_url,
    mask_url,
    normal_url,
    safe_name,
)
from edgeopt.results.sqlite import Store

__all__ = ["DB_NAME", "DEFAULT_RESULTS_DIR", "SCHEMA_VERSION", "ENV_STORE", "Store", "StoreError", "is_url",
           "mask_url", "open_store", "safe_name", "store_location"]

ENV_STORE = "EDGEOPT_STORE"


def store_location(store: str | Path | None, default: str | Path | None = None) -> str | Path | None:
    """What ``--store`` (else ``$EDGEOPT_STORE``, else ``default``, e.g. a lab's ``store:``) names: a
    ``postgresql://`` URL (as a str), a file, or None."""
    if store is None:
        store = os.environ.get(ENV_STORE) or default
    if store is not None and is_url(str(store)):
        return normal_url(str(store))
    if store is not None and looks_like_url(str(store)) and not Path(store).exists():  # never a directory "pg:"
        shown = re.sub(r":[^:@/\s]*@", ":***@", mask_url(str(store)))  # whatever stands before an @ may be one
        raise ConfigError(f"results store {shown}: not a PostgreSQL URL, nor an existing SQLite file",
                          "write postgresql://user:password@host:port/db (or postgresql:///db?host=/socket/dir), "
                          "or the path of a SQLite file")
    return store


def open_store(results_dir: str | Path | None = None, store: str | Path | None = None, *,
               create: bool = True, default: str | Path | None = None) -> Store:
    """The store for ``--results DIR`` (default ``./results``) / ``--store FILE|URL`` (else ``$EDGEOPT_STORE``,
    else ``default`` — a lab's ``store:`` —, else ``DIR/edgeopt.sqlite``). JSON copies go under ``DIR``."""
    directory = Path(results_dir) if results_dir is not None else DEFAULT_RESULTS_DIR
    where = store_location(store, default)
    if isinstance(where, str) and is_url(where):
        from edgeopt.results.postgres import PostgresStore

        return PostgresStore(where, directory, create=create)
    db = Path(where) if where is not None else directory / DB_NAME
    return Store(db, directory, create=create)
