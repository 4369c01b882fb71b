"""Annotators' privacy: their identities replaced by keyed pseudonyms before anything is stored.

Tools deliver who labeled what as a login, often an e-mail address (Label Studio's ``completed_by``,
CVAT's assignee, COCO's contributor): personal data that would otherwise end up in every table, in the
metadata and logs of the UI and in the HTML reports. A pseudonym is ``ann-`` and the first 16 hex digits of
HMAC-SHA256(key, id). With a secret key nobody can recompute or reverse it from the id alone (a plain
hash of an e-mail can be reversed by hashing a list of candidate addresses); with the same key the same
person keeps the same pseudonym across days, so agreement, scores and flags still follow one annotator.
Rotating the key starts new pseudonyms for everyone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import replace

import numpy as np
import pandas as pd

from labelops.ingest import Ingested

AS_DELIVERED = "as-delivered"
PSEUDONYMIZE = "pseudonymize"
MODES = (AS_DELIVERED, PSEUDONYMIZE)
PREFIX = "ann-"
# 64 bits: a collision between two annotators of one deployment is about n² / 2**65, negligible for
# the thousands a labeling operation has, and the pseudonym stays short enough to read in a table.
DIGEST_HEX = 16
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")


def _key_bytes(key: str | bytes) -> bytes:
    """The key as bytes; an empty key would make every pseudonym public, so it is refused."""
    data = key.encode() if isinstance(key, str) else bytes(key)
    if not data:
        raise ValueError("the pseudonymization key is empty: set a long random secret")
    return data


def pseudonym(value: str, key: str | bytes) -> str:
    """One id's pseudonym: what an operator computes to find a known person's rows."""
    digest = hmac.new(_key_bytes(key), value.encode(), hashlib.sha256).hexdigest()
    return PREFIX + digest[:DIGEST_HEX]


def pseudonyms(values: pd.Series, key: str | bytes) -> pd.Series:
    """The column with each id replaced, hashing each distinct id once (a day has few annotators and many
    rows); missing ids stay missing rather than becoming the pseudonym of a placeholder."""
    secret = _key_bytes(key)
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    # a missing id has code -1, which picks the trailing None
    mapped = np.array([pseudonym(str(u), secret) for u in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=values.index, dtype=values.dtype, name=values.name)


def pseudonymize_emails(texts: pd.Series, key: str | bytes) -> pd.Series:
    """E-mail addresses inside free text (a parser's error quoting the broken row, an extra column kept in
    ``attributes``) replaced by their pseudonyms, so the text stays useful and names nobody. Only the few
    texts holding an "@" go through the regular expression."""
    secret = _key_bytes(key)
    candidates = texts.fillna("").astype(str).str.contains("@", regex=False).to_numpy(dtype=bool)
    if not candidates.any():
        return texts
    out = texts.copy()
    replaced = texts[candidates].astype(str).str.replace(EMAIL, lambda m: pseudonym(m.group(0), secret), regex=True)
    out[candidates] = replaced
    return out


def protect_exports(exports: Ingested, mode: str, key: str | bytes) -> Ingested:
    """A day's exports as the deployment's policy wants them stored: the annotator column, e-mails in the
    attributes and in the ledger's errors pseudonymized. An unknown mode is an error, never raw ids."""
    if mode == AS_DELIVERED:
        return exports
    if mode != PSEUDONYMIZE:
        raise ValueError(f"unknown annotator id mode {mode!r}: expected one of {', '.join(MODES)}")
    table = exports.table.assign(
        annotator_id=pseudonyms(exports.table["annotator_id"], key),
        attributes=pseudonymize_emails(exports.table["attributes"], key),
    )
    ledger = exports.ledger.assign(error=pseudonymize_emails(exports.ledger["error"], key))
    emptied = exports.emptied.assign(annotator_id=pseudonyms(exports.emptied["annotator_id"], key))
    return replace(exports, table=table, ledger=ledger, emptied=emptied)
