"""What every results-store backend shares: the schema version, file names, JSON parsing of stored documents,
URL masking (a password never reaches a message) and the writable-directory probe."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from edgeopt.errors import OutputError

SCHEMA_VERSION = 1
DEFAULT_RESULTS_DIR = Path("results")
DB_NAME = "edgeopt.sqlite"
COLUMNS = {  # what a store must have to be read and written by this edgeopt
    "runs": {"run_id", "created_at", "finished_at", "status", "command", "targets", "doc"},
    "results": {"result_id", "run_id", "created_at", "target", "profile", "format", "sha256", "p50_ms", "valid",
                "error", "doc"},
}
RESULT_ID_FIELDS = ("result_id", "run_id", "created_at", "target", "profile", "format")


def safe_name(text: str) -> str:
    """A file-name-safe rendering of ``text`` (result JSON names): letters, digits, ``._-`` only."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    return cleaned[:120]


def parse_json(text: Any, kind: type) -> Any:
    """Stored JSON of the ``kind`` expected, else None (a damaged row)."""
    try:
        value = json.loads(text) if isinstance(text, (str, bytes, bytearray)) else text
    except (TypeError, ValueError):
        return None
    return value if isinstance(value, kind) else None


def result_doc(row: Any) -> dict[str, Any]:
    """A stored result document; a damaged one comes back as an invalid result saying so (never a crash)."""
    return parse_json(row["doc"], dict) or {
        "schema": 1, **{k: row[k] for k in RESULT_ID_FIELDS},
        "valid": False, "error": {"kind": "store", "message": "the stored result document is damaged"}}


def result_columns(doc: dict[str, Any]) -> tuple[Any, ...]:
    """The indexed columns of a result document, in ``results`` column order (``doc`` JSON last)."""
    error = doc.get("error")
    error_text = None
    if error:
        error_text = error.get("message") if isinstance(error, dict) else str(error)
    p50 = ((doc.get("agent") or {}).get("latency_ms") or {}).get("p50")
    return (doc["result_id"], doc["run_id"], doc["created_at"], doc["target"], doc.get("profile"),
            doc.get("format"), (doc.get("artifact") or {}).get("sha256"),
            float(p50) if isinstance(p50, (int, float)) and not isinstance(p50, bool) else None,
            1 if doc.get("valid") else 0, error_text, json.dumps(doc))


def run_columns(doc: dict[str, Any]) -> tuple[Any, ...]:
    """``runs`` columns of a run document: run_id, created_at, finished_at, status, command, targets, doc."""
    return (doc["run_id"], doc["created_at"], doc.get("finished_at"), doc.get("status", "running"),
            doc.get("command"), json.dumps(doc.get("targets", [])), json.dumps(doc))


PG_URL = re.compile(r"^(postgres(?:ql)?):/(/?)(.*)$", re.IGNORECASE | re.DOTALL)
# what a user meant as a URL: any ``scheme://``, or ``postgres(ql)`` followed by ``:`` or ``@`` (a typo of one)
URL_LIKE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*://|postgres(?:ql)?[:@])", re.IGNORECASE)
# a URL's ``user:password@`` as libpq reads it: the user info ends at the first ``@`` before any ``/`` (so a
# password may hold ``#``, ``?`` or ``:`` unencoded); anywhere in a text (``--store=URL`` in a command line)
# the password runs to the authority's last '@' (a password holding an unencoded '@' is masked whole)
USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:@/\s]*):([^/\s]*)@")
PASSWORD_PARAM = re.compile(r"(password=)([^&\s]*)", re.IGNORECASE)


def is_url(text: str) -> bool:
    """``postgresql://…`` / ``postgres://…`` (also after ``Path`` folded ``//`` into ``/``)."""
    return PG_URL.match(text) is not None


def looks_like_url(text: str) -> bool:
    """Meant as a URL (``pg://…``, ``postgresql:host/db``, ``postgresql@host``) though maybe not one we take."""
    return URL_LIKE.match(text) is not None


def normal_url(text: str) -> str:
    """The URL as psycopg takes it: the scheme in lower case, and ``//`` put back where ``Path`` folded it
    (``Path("postgresql://h/db")`` reads ``postgresql:/h/db``); ``postgresql:///db?host=/socket/dir`` stays."""
    match = PG_URL.match(text)
    return f"{match.group(1).lower()}://{match.group(3)}" if match else text


def url_secrets(url: str) -> list[str]:
    """The passwords a URL (or a text holding URLs) carries, as written and percent-decoded. A password with an
    unencoded ``@`` also gives what libpq makes of it: the password up to the first ``@`` and the start of the
    host it then reads (``ss@`` of ``u:p@ss@h``), which its messages echo."""
    from urllib.parse import unquote

    found = []
    for m in USERINFO.finditer(url):
        found.append(m.group(2))
        if "@" in m.group(2):
            first, _, rest = m.group(2).partition("@")
            found += [first, rest + "@"]
    found += [m.group(2) for m in PASSWORD_PARAM.finditer(url)]
    return [x for s in found if s for x in dict.fromkeys((s, unquote(s)))]


def scrub(text: str, secrets: list[str]) -> str:
    """``text`` with each of ``secrets`` replaced by ``***``, longest first. A secret shorter than 4 characters
    is left (replacing every ``o`` of a message would spell the password out, and hide nothing); one ending in
    ``@`` (the host libpq read from a password) keeps its ``@``."""
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret.endswith("@") and len(secret) > 1:
            text = text.replace(secret, "***@")
        elif len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def mask_url(url: str) -> str:
    """The URL (or any text holding URLs: a command line) with every password replaced by ``***``: what every
    message, recorded command and ``store.path`` show."""
    return PASSWORD_PARAM.sub(r"\1***", USERINFO.sub(r"\1:***@", url))


def check_writable_dir(directory: Path) -> None:
    """Create ``directory`` and prove a file can be created in it (a read-only mount, a file in the way)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".edgeopt-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise OutputError(f"results directory {directory} is not writable ({reason})",
                          "choose a writable --results directory") from exc
