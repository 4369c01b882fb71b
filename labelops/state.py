"""The label state: one current set of labels per item, folded in day by day.

Partitions are export days, but labels belong to items: an item is labeled on one day, judged by more
annotators the next, sent back to labelers and answered later. The state at the end of day D is the state
at D-1 folded with day D's validated annotations, in two tables:

- ``votes``: every judgment that ever counted for an item (its vote set across days), with the round it
  belongs to (``answer_to``: the relabel batch it answers, else an ordinary round) and, when a later answer
  replaced it, ``superseded_by``. Ordinary rounds pool: judgments of one item delivered on different days
  are one vote set. An answer to a relabel or review request supersedes the item's earlier judgments of
  what it covers: the objects always (an answer without boxes says the item has none), the scene label when
  the answer gives one.
- ``items``: one row per current consensus label of every item (its scene label, its fused boxes), with
  the item's status and lineage (rounds, days, files, judgments that decide it).

Scene labels are re-aggregated over the whole current vote set every night, since Dawid-Skene is a global
model (an annotator's confusion matrix comes from all their items); boxes are fused per item, so only the
items a day touched are fused again and the others keep their boxes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pandas.api.extensions import take

from labelops import boxes, quality, review
from labelops.columns import (
    arrow_isin,
    day_text,
    first_rows,
    group_starts,
    isin,
    joined,
    latest_rows,
    lookup,
    plain,
    positions,
    rows_where,
    sorted_rows,
    spliced,
    text,
    value_type,
)
from labelops.consensus import AnnotatorModel
from labelops.guidelines import GuidelineSet, removals
from labelops.layers import ROW
from labelops.outbox import HONEYPOT
from labelops.schema import annotation_identity, answer_batches, tool_annotations

VOTE_COLUMNS = [
    "item_id",
    "annotation_id",
    "content_id",
    "annotator_id",
    "kind",
    "label",
    "x",
    "y",
    "w",
    "h",
    "export_date",
    "source_file",
    "answer_to",
    "superseded_by",
    "annotation_key",
    "replaced_on",
    "guideline_version",
    "remapped_from",
    "needs_relabel",
]
STATUSES = ("labeled", "answered", "relabel_requested", "needs_relabel", "in_review", "no_consensus")


@dataclass(frozen=True)
class StateConfig:
    method: str = "dawid_skene"
    box_quorum: int = 2
    cluster_iou: float = 0.5
    answer_quorum: int = 1  # one reviewer's answer is authoritative
    request_expire_days: int = 14  # an unanswered relabel request lapses, and the item may be sent again
    refit_days: int = 7  # Dawid-Skene is fit over every current vote again when its fit is this many days old
    # the review queue's scene rules, applied to the pooled consensus of the items a day listed for them alone
    review_min_confidence: float = review.MIN_CONFIDENCE
    review_min_agreement: float = review.MIN_AGREEMENT


def open_requests(ledger: pd.DataFrame, day: str, expire_days: int) -> pd.DataFrame:
    """Relabel requests sent up to ``day`` that have not lapsed (sent less than ``expire_days`` days before).

    A honeypot (a gold item sent to score its labeler) is no request: its answer is an ordinary judgment."""
    if "reason" in ledger:
        ledger = ledger[ledger["reason"].astype(object).ne(HONEYPOT)]
    if ledger.empty:
        return ledger
    sent = pd.to_datetime(ledger["sent_on"].astype("string"))
    today = pd.Timestamp(day)
    return ledger[(sent <= today) & (sent > today - pd.Timedelta(days=expire_days))].reset_index(drop=True)


def empty_votes() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64" if c in "xywh" else object) for c in VOTE_COLUMNS})


def empty_state() -> pd.DataFrame:
    """The item state before any day was folded in: no items."""
    return pd.DataFrame(columns=[*quality.CONSENSUS_COLUMNS, "status"])


def fold_items(previous: pd.DataFrame, sent: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame:
    """Every item known so far, one row each: the item rows our batches sent (production items), then the
    earlier rows, then the day's catalog; the latest delivery of an item wins."""
    parts = [df for df in (sent, previous, catalog) if len(df)]
    if not parts:
        return catalog.iloc[:0]
    return latest_rows(pd.concat(parts, ignore_index=True), "item_id")


def added_items(known: pa.Table, sent: pd.DataFrame, catalog: pd.DataFrame) -> pd.DataFrame | None:
    """The rows a day adds to the item index ``known`` (the previous day's, as Arrow), when adding is all the day
    does: the new items' rows, each as :func:`fold_items` gives it, in item order and the index's columns. None
    when the day delivers an item the index holds (its row is replaced) or a column the index lacks: the index is
    then folded whole.

    A night's catalog holds the night's new items (20,000 against 1.2 M known), so the index is kept as layers
    (labelops.layers): the rows it adds, not the whole index rewritten."""
    ids = pd.Series(text(plain(known.select(["item_id"])).column("item_id")))
    if len(catalog) and isin(catalog["item_id"], ids).any():
        return None
    fresh = sent[~isin(sent["item_id"], ids)] if len(sent) else sent  # a known item's row beats a sent one
    columns = known.column_names
    parts = [df for df in (fresh, catalog) if len(df)]
    if not parts:
        return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
    added = latest_rows(pd.concat(parts, ignore_index=True), "item_id")
    return added[columns] if set(added.columns) == set(columns) else None


def annotation_keys(frame: pd.DataFrame) -> pd.Series:
    """The tool-side annotation a row belongs to, where the tool's exports name it the same way every time
    (:func:`labelops.schema.tool_annotations`: Label Studio's task and annotation ids, a CVAT task's image), as
    :func:`labelops.schema.annotation_identity` tells instances apart: by the annotator (an edit keeps its
    annotator, and a vendor's Label Studio numbers its tasks and annotations from 1 too, so the ids alone would
    make one team's judgments edits of the other's), or by a CVAT task's creation time. None elsewhere."""
    if frame.empty:
        return pd.Series(dtype=object, index=frame.index)
    ids = tool_annotations(frame["source_ref"])
    keys = pd.Series(np.full(len(frame), None, dtype=object), index=frame.index)
    tool = ids.notna().to_numpy()
    if tool.any():  # keyed rows only: a day of vendor CSVs has none, and joining its million texts cost 0.13 s
        part = rows_where(frame, tool, ["source_format", "item_id", "annotator_id"])
        identity = annotation_identity(part["item_id"], part["annotator_id"], ids[tool])
        keys.iloc[np.flatnonzero(tool)] = part["source_format"].astype(str).to_numpy(dtype=object) + "|" + identity
    return keys


# A key stored before keys named the annotator ends with the tool ids (``.../annotation=<id>``).
_KEY_WITHOUT_ANNOTATOR = r"/annotation=[^/|]*$"


def with_annotators(votes: pd.DataFrame) -> pd.Series:
    """The votes' ``annotation_key`` as :func:`annotation_keys` writes it now: a key stored before it named the
    annotator gets the vote's annotator, so an edit delivered today of an annotation delivered before replaces
    it (the vote table's history is never rewritten; its keys are read this way)."""
    keys = votes["annotation_key"]
    old = keys.notna() & keys.astype(str).str.contains(_KEY_WITHOUT_ANNOTATOR, regex=True)
    if not old.any():
        return keys
    keys = keys.astype(object).copy()
    keys[old] = keys[old].astype(str) + "|" + votes.loc[old, "annotator_id"].astype(str)
    return keys


def votes_of(validated: pd.DataFrame) -> pd.DataFrame:
    """The day's validated annotations as votes: answers to our relabel batches name their batch."""
    if validated.empty:
        return empty_votes()
    answer = answer_batches(validated["attributes"])
    votes = validated.assign(
        answer_to=answer.astype(object).where(answer.notna(), None),
        superseded_by=None,
        annotation_key=annotation_keys(validated),
        replaced_on=None,
    )
    return votes.reindex(columns=VOTE_COLUMNS).assign(export_date=day_text(votes["export_date"]))


def fold_votes(
    previous: pd.DataFrame,
    validated: pd.DataFrame,
    copies: pd.DataFrame | None = None,
    emptied: pd.DataFrame | None = None,
    *,
    guidelines: GuidelineSet | None = None,
    version: str | None = None,
    previous_version: str | None = None,
) -> pd.DataFrame:
    """The vote sets after the day: the previous ones carried to the day's guideline ``version`` (when it is not
    the ``previous_version`` they were read under), the day's votes, and supersession recomputed.

    A judgment already in the state (same ``content_id``) is not added again, so rerunning a day or
    delivering a copy leaves the state as it was. ``copies`` are the day's quarantined duplicates: with the
    day's votes they make the latest version of each tool annotation delivered again (a project re-exported
    after an annotator edited an annotation), whose earlier judgments not in that version are replaced.
    ``emptied`` are the day's tool annotations delivered without a judgment (``labelops.ingest.read_emptied``):
    versions that hold nothing, so their earlier judgments are replaced (an answer to a relabel request excepted).
    """
    today = votes_of(validated)
    previous = previous.reindex(columns=VOTE_COLUMNS)
    if guidelines is not None and version is not None and previous_version != version:
        previous = carry_votes(previous, guidelines, version)  # the first day of a version (or one not known)
    new = today[~isin(today["content_id"], previous["content_id"])] if len(previous) and len(today) else today
    new = sorted_rows(new.drop_duplicates("content_id"), ["item_id", "export_date", "annotation_id"])
    # earlier judgments keep their rows and order; the day's are appended: the fold reads the history once
    combined = pd.concat([df for df in (previous, new) if len(df)] or [empty_votes()], ignore_index=True)
    combined["annotation_key"] = with_annotators(combined)
    combined = _replace_edited(combined, today, copies, emptied)
    combined["superseded_by"] = _superseded(combined)
    return combined


# What a night's fold reads of the earlier vote sets when the guideline has not changed (fold_day): the columns
# that find the day's repeats, edited annotations and superseded judgments, and those the table's summary counts.
FOLD_INPUTS = [
    "item_id",
    "annotator_id",
    "content_id",
    "kind",
    "export_date",
    "answer_to",
    "superseded_by",
    "annotation_key",
    "replaced_on",
    "remapped_from",
    "needs_relabel",
]
MARKS = ["superseded_by", "replaced_on"]  # all such a fold changes in earlier judgments


def fold_day(
    previous: pa.Table,
    validated: pd.DataFrame,
    copies: pd.DataFrame | None = None,
    emptied: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The day's fold under the guideline ``previous`` was read under, as what it changes (a layer of the vote
    table, labelops.layers): the earlier judgments it marks (superseded by an answer, replaced by an edited
    version), with their positions in ``previous`` (``ROW``) and new ``MARKS``, and the judgments it adds.

    It is :func:`fold_votes` on the earlier judgments of the day's items alone, which is the whole fold restricted
    to them: repeats (the content id hashes the item), edited versions (keyed by item) and supersession (per
    item) never reach across items. So ``previous`` needs only ``FOLD_INPUTS``, not the judgments themselves,
    and stays Arrow: only the day's items' rows of its millions become pandas."""
    items = [validated["item_id"]] + [f["item_id"] for f in (copies, emptied) if f is not None and len(f)]
    at = np.flatnonzero(_among(previous, "item_id", pd.concat(items, ignore_index=True).astype(str).unique()))
    earlier = plain(previous.take(at)).to_pandas().reindex(columns=VOTE_COLUMNS)
    combined = fold_votes(earlier, validated, copies, emptied)
    changed = _changed(earlier, combined)
    marks = combined.iloc[changed][MARKS].reset_index(drop=True).assign(**{ROW: at[changed]})
    return marks, combined.iloc[len(earlier) :].reset_index(drop=True)


def _changed(earlier: pd.DataFrame, combined: pd.DataFrame) -> np.ndarray:
    """Positions of the earlier judgments whose ``MARKS`` the fold changed."""
    changed = np.zeros(len(earlier), dtype=bool)
    for name in MARKS:
        old = earlier[name].astype(object).to_numpy()
        new = combined[name].iloc[: len(earlier)].astype(object).to_numpy()
        changed |= (pd.isna(old) != pd.isna(new)) | (~pd.isna(old) & (old != new))
    return np.flatnonzero(changed)


def vote_summary(
    previous: Table,
    day: str,
    marks: pd.DataFrame | None = None,
    appended: pd.DataFrame | None = None,
) -> dict[str, int]:
    """The vote table's counts after the day: ``previous`` with the day's ``marks`` in place and ``appended``
    after it (a whole table alone), from ``FOLD_INPUTS`` only; the earlier votes counted in Arrow (a night's
    millions never become pandas). How many items have votes is label_state's count (hashing every vote's item
    id again here cost a second a night)."""
    parts = [previous] if appended is None else [previous, appended]
    flagged = ("answer_to", *MARKS, "remapped_from", "needs_relabel")
    flags = {name: np.concatenate([_present(p, name) for p in parts]) for name in flagged}
    if marks is not None and len(marks):
        for name in MARKS:
            flags[name][marks[ROW].to_numpy(dtype=np.int64)] = marks[name].notna().to_numpy()
    return {
        "remapped": int(flags["remapped_from"].sum()),
        "needs_relabel": int(flags["needs_relabel"].sum()),
        "added_today": int(sum(_equal(p, "export_date", day).sum() for p in parts)),
        "current_judgments": int((~flags["superseded_by"] & ~flags["replaced_on"] & ~flags["needs_relabel"]).sum()),
        "superseded": int(flags["superseded_by"].sum()),
        "replaced_by_edits": int(flags["replaced_on"].sum()),
        "answers": int(flags["answer_to"].sum()),
    }


# A vote table is Arrow where the state reads millions of judgments to select a night's few (the earlier votes,
# read through DayTables.arrow), pandas elsewhere (a day's votes, tests); these read either the same way.
Table: TypeAlias = pa.Table | pd.DataFrame


def _present(votes: Table, name: str) -> np.ndarray:
    """Which rows of the column hold a value."""
    if isinstance(votes, pa.Table):
        return pc.is_valid(votes.column(name)).to_numpy(zero_copy_only=False)
    return votes[name].notna().to_numpy()


def _equal(votes: Table, name: str, value: str) -> np.ndarray:
    """Which rows of the text column hold ``value``."""
    if isinstance(votes, pd.DataFrame):  # as text: a day given as a date compares as its ISO text
        return (votes[name].astype(str) == value).to_numpy(dtype=bool)
    column = votes.column(name)
    if pa.types.is_null(column.type):  # no row holds a value
        return np.zeros(votes.num_rows, dtype=bool)
    if pa.types.is_dictionary(column.type):
        return np.concatenate([_equal_coded(chunk, value) for chunk in column.chunks] or [np.zeros(0, dtype=bool)])
    return pc.fill_null(pc.equal(column, pa.scalar(value, value_type(column))), False).to_numpy(zero_copy_only=False)


def _equal_coded(chunk: pa.DictionaryArray, value: str) -> np.ndarray:
    """:func:`_equal` on a dictionary-encoded chunk: the value is looked up among the chunk's few distinct texts and
    the rows are compared by their integer codes (a night's 6.6 M export days: 0.03 s instead of 0.14 s, where
    Arrow would expand the texts first); a chunk whose dictionary lacks the value holds it in no row."""
    codes = np.flatnonzero(
        pc.fill_null(pc.equal(chunk.dictionary, pa.scalar(value, chunk.dictionary.type)), False).to_numpy(
            zero_copy_only=False
        )
    )
    if not len(codes):
        return np.zeros(len(chunk), dtype=bool)
    found = pc.is_in(chunk.indices, value_set=pa.array(codes, type=chunk.indices.type))
    return pc.fill_null(found, False).to_numpy(zero_copy_only=False)


def _among(votes: Table, name: str, values: pd.Series | pd.Index | np.ndarray) -> np.ndarray:
    """Which rows of the text column hold one of ``values``."""
    if isinstance(votes, pd.DataFrame):
        return isin(votes[name], values)
    return arrow_isin(votes, name, values)


def _subset(votes: Table, mask: np.ndarray) -> Table:
    """The rows of the mask, every column, in the vote table's own form (Arrow stays Arrow)."""
    if isinstance(votes, pd.DataFrame):
        return rows_where(votes, mask)
    return votes.filter(pa.array(mask))


def _rows(votes: Table, mask: np.ndarray, columns: list[str]) -> pd.DataFrame:
    """The rows of the mask, some columns, as pandas: from Arrow, only these rows are converted."""
    if isinstance(votes, pd.DataFrame):
        return rows_where(votes, mask, columns)
    return plain(votes.select(columns).filter(pa.array(mask))).to_pandas()


def carry_votes(votes: pd.DataFrame, guidelines: GuidelineSet, version: str) -> pd.DataFrame:
    """Votes made under ancestors of ``version`` read under it, as validation reads a day's annotations: a
    renamed or merged label takes its new name (``remapped_from`` keeps the first original), a split,
    redefined or removed one is marked ``needs_relabel`` and no longer counts. Votes of ``version`` itself,
    of a newer or unknown version are left as they are; only the (few) versions present are looked at."""
    if votes.empty:
        return votes
    ancestors = [g.version for g in guidelines.lineage(version)[:-1]] if version in guidelines.by_version else []
    if not ancestors:
        return votes
    stamped = votes["guideline_version"].astype(object)
    older = isin(stamped, pd.Series(ancestors, dtype=object))
    if not older.any():
        return votes
    out = votes.copy()
    rows = out.loc[older, ["guideline_version", "label", "remapped_from", "needs_relabel"]]
    for made_under in pd.unique(rows["guideline_version"]):
        remap = guidelines.remap(made_under, version)
        part = rows[rows["guideline_version"] == made_under]
        waiting = part["needs_relabel"].isna()
        relabel = part["label"].isin(list(remap.relabel)) & waiting
        mapped = part["label"].isin(list(remap.mapping)) & waiting & ~relabel
        rows.loc[part.index[relabel.to_numpy()], "needs_relabel"] = part.loc[relabel, "label"].map(remap.relabel)
        first = part["remapped_from"].isna() & mapped
        rows.loc[part.index[first.to_numpy()], "remapped_from"] = made_under + ":" + part.loc[first, "label"]
        rows.loc[part.index[mapped.to_numpy()], "label"] = part.loc[mapped, "label"].map(remap.mapping)
        # a judgment marked now or before keeps the version it was made under: it is read under none
        rows.loc[part.index[(~relabel & waiting).to_numpy()], "guideline_version"] = version
    out.loc[older, rows.columns] = rows
    return out


def _covers(kind: pd.Series) -> pd.Series:
    """The part of an item's labels a judgment of ``kind`` belongs to: its scene label, or its objects."""
    return kind.astype(str).eq("classification").map({True: "scene", False: "objects"})


def _superseded(votes: pd.DataFrame) -> pd.Series:
    """For each judgment, the answer batch that supersedes it (None for most): only items with an answer can
    have one, so only their judgments are looked at. An answer always covers the item's objects (a reviewer who
    deleted every box answered "no objects"); it covers the scene label when it gives one (an image always has a
    scene, so an answer without one left it as it was). An answered item keeps its answer's labels of what the
    answer covers until a later answer, whatever ordinary rounds deliver after it."""
    out = pd.Series(None, index=votes.index, dtype=object)
    answered_items = votes.loc[votes["answer_to"].notna(), "item_id"]
    if answered_items.empty:
        return out
    rows = votes[isin(votes["item_id"], answered_items)]
    item, part = rows["item_id"].astype(str) + "\x1f", _covers(rows["kind"])
    key = item + part
    is_answer = rows["answer_to"].notna()
    given = rows.loc[is_answer, ["export_date", "answer_to"]]
    answers = pd.concat(
        [given.assign(key=key[is_answer]), given.assign(key=item[is_answer] + "objects")]  # every answer: objects
    ).sort_values(["export_date", "answer_to"], kind="stable")
    latest = answers.groupby("key").last()
    answer_day = key.map(latest["export_date"]).astype(object)
    answered = answer_day.notna().to_numpy()
    day = rows["export_date"].astype(str).to_numpy()
    cutoff = answer_day.fillna("").astype(str).to_numpy()
    answer = is_answer.to_numpy()
    # an answer is final for what it covers: ordinary judgments of it, earlier or later, no longer count; an
    # earlier answer gives way to the latest
    superseded = answered & (~answer | (day < cutoff))
    out.loc[rows.index] = key.map(latest["answer_to"]).astype(object).where(superseded, None)
    return out


def _replace_edited(
    combined: pd.DataFrame, today: pd.DataFrame, copies: pd.DataFrame | None, emptied: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Mark ``replaced_on`` the earlier judgments of a tool annotation delivered again today whose content
    today's version no longer holds (the version is today's new judgments plus the copies of unchanged ones;
    an emptied annotation's holds none), and clear it from those today's version holds again (an edit undone in
    the tool). An answer to a relabel request is not withdrawn by an emptied version: it stays final (an answer
    says what an item holds, and one submitted empty says nothing a later round should undo)."""
    versions = [today.loc[today["annotation_key"].notna(), ["annotation_key", "content_id", "export_date"]]]
    if emptied is not None and len(emptied):
        versions.append(
            pd.DataFrame(
                {
                    "annotation_key": annotation_keys(emptied).to_numpy(dtype=object),
                    "content_id": None,
                    "export_date": emptied["export_date"].astype(str).to_numpy(dtype=object),
                }
            )
        )
    if copies is not None and len(copies):
        copied = copies[copies["duplicate_of"].notna()]
        versions.append(
            pd.DataFrame(
                {
                    "annotation_key": annotation_keys(copied),
                    "content_id": copied["content_id"],
                    "export_date": copied["export_date"].astype(str),
                }
            )
        )
    version = pd.concat(versions, ignore_index=True)
    version = version[version["annotation_key"].notna()]
    if version.empty:
        return combined
    day = str(version["export_date"].max())
    held = version[version["content_id"].notna()]
    kept = held["annotation_key"] + "\x1f" + held["content_id"].astype(str)
    pair = combined["annotation_key"].astype(str) + "\x1f" + combined["content_id"].astype(str)
    delivered, in_version = isin(combined["annotation_key"], version["annotation_key"]), isin(pair, kept)
    unmarked = combined["replaced_on"].isna().to_numpy()
    replaced = delivered & ~in_version & (combined["export_date"].astype(str) < day).to_numpy() & unmarked
    if len(held) < len(version):  # emptied: an answer stays
        withdrawn = ~isin(combined["annotation_key"], held["annotation_key"])
        replaced &= ~(withdrawn & combined["answer_to"].notna().to_numpy())
    restored = delivered & in_version & ~unmarked  # an edit reverted: the earlier version counts again
    combined["replaced_on"] = combined["replaced_on"].astype(object).where(~replaced, day).where(~restored, None)
    return combined


# What the consensus of a vote set reads: the judgment (the relabel batch it answers only selects the method).
VOTE_INPUTS = ["item_id", "annotator_id", "kind", "label", "x", "y", "w", "h"]
# What lineage reads of a vote set: not the judgments themselves (a selection copies every column it keeps).
LINEAGE_INPUTS = [
    "item_id",
    "kind",
    "export_date",
    "source_file",
    "answer_to",
    "superseded_by",
    "replaced_on",
    "needs_relabel",
]
# What the item state reads of the vote sets: label_state reads only these columns of label_votes.
STATE_INPUTS = [*VOTE_INPUTS, *(c for c in LINEAGE_INPUTS if c not in VOTE_INPUTS)]


def counts(votes: Table) -> np.ndarray:
    """Which judgments count: neither superseded by an answer, nor replaced by an edited version, nor marked
    ``needs_relabel`` because a guideline change split, redefined or removed their class."""
    return ~_present(votes, "superseded_by") & ~_present(votes, "replaced_on") & ~_present(votes, "needs_relabel")


def current(votes: pd.DataFrame) -> pd.DataFrame:
    """The judgments that count (``counts``)."""
    return votes[counts(votes)]


def waiting_for_relabel(votes: Table, quorum: int = 2) -> pd.DataFrame:
    """Items with a judgment a guideline change left ambiguous (and no answer superseding it), with the change:
    they wait for a relabel, which ``relabel_batch`` sends.

    Unless ``quorum`` other annotators judged that part of the item (its scene, or its objects) in judgments that
    count: the consensus of that part then stands without the ambiguous one, as it does when a lone annotator's
    box misses the box quorum. A vendor still delivering the old names beside two annotators who use the new
    ones, or an item judged again after the change, needs no relabel; an item whose split-class object only the
    marked annotators drew does."""
    marked = _present(votes, "needs_relabel") & ~_present(votes, "superseded_by") & ~_present(votes, "replaced_on")
    rows = _rows(votes, marked, ["item_id", "annotator_id", "kind", "needs_relabel"])
    rows = rows[_in_doubt(rows)]
    if len(rows):
        # the counted judgments of those items by annotators with no ambiguous judgment of the item
        judged = counts(votes) & _among(votes, "item_id", pd.unique(rows["item_id"]))
        others = _rows(votes, judged, ["item_id", "annotator_id", "kind"])
        item = others["item_id"].astype(str) + "\x1f"
        marked_by = rows["item_id"].astype(str) + "\x1f" + rows["annotator_id"].astype(str)
        other = ~isin(item + others["annotator_id"].astype(str), marked_by)
        judges = pd.DataFrame(
            {"part": (item + _covers(others["kind"]))[other], "who": others["annotator_id"][other]}
        ).drop_duplicates()
        judged_by = judges.groupby("part").size()
        part = rows["item_id"].astype(str) + "\x1f" + _covers(rows["kind"])
        rows = rows[(part.map(judged_by).fillna(0) < quorum).to_numpy()]
    rows = rows[["item_id", "needs_relabel"]]
    return rows.drop_duplicates("item_id").sort_values("item_id", kind="stable").reset_index(drop=True)


def _unreadable_answers(votes: Table) -> pd.Series:
    """Items whose counted answer holds a judgment marked ``needs_relabel``: the answer is the item's labels of
    what it covers, and one of them has no class under the guideline in force."""
    marked = (
        _present(votes, "answer_to")
        & _present(votes, "needs_relabel")
        & ~_present(votes, "superseded_by")
        & ~_present(votes, "replaced_on")
    )
    rows = _rows(votes, marked, ["item_id", "kind", "needs_relabel"])
    return pd.Series(pd.unique(rows.loc[_in_doubt(rows), "item_id"]), dtype=object)


def _in_doubt(marked: pd.DataFrame) -> np.ndarray:
    """Which judgments marked ``needs_relabel`` leave their item in doubt: all but the objects of a removed
    class, which only stop counting (:func:`labelops.guidelines.removals`)."""
    objects = (marked["kind"].astype(str) != "classification").to_numpy()
    return ~(removals(marked["needs_relabel"]) & objects)


def refit_due(model: AnnotatorModel | None, day: str, config: StateConfig) -> bool:
    """Whether the night labels every item's scene again: for Dawid-Skene, a fit over every current vote when
    there is no fit to keep (the first day, a new guideline version, whose classes a fit under the old one does
    not know, or a switch from majority vote) or the kept fit is ``refit_days`` old; for majority vote, a
    switch from Dawid-Skene (a kept fit is there)."""
    if config.method != "dawid_skene":
        return model is not None
    if model is None:
        return True
    return (pd.Timestamp(day) - pd.Timestamp(model.fitted_on)).days >= config.refit_days


def _gold_scenes(gold: pd.DataFrame) -> pd.Series:
    """The items with a gold scene label: between fits the kept fit labels them again every night."""
    if gold.empty:
        return pd.Series(dtype=object)
    return gold.loc[gold["kind"] == "classification", "item_id"].astype(object)


def consensus(
    votes: Table,
    previous_items: pd.DataFrame,
    touched: pd.Series,
    gold: pd.DataFrame,
    config: StateConfig,
    *,
    day: str,
    model: AnnotatorModel | None = None,
) -> tuple[pd.DataFrame, AnnotatorModel | None]:
    """Current consensus rows of every item, and the annotator model they were labeled with.

    Boxes are fused again for the items the day touched (ordinary rounds with the box quorum, an answered
    item's with ``answer_quorum`` from its answer alone: none when the answer drew none); the others keep their
    boxes from ``previous_items`` (the previous state). Scene labels:
    when a fit is due (:func:`refit_due`, or the day's judgments use a class the kept ``model`` never saw),
    Dawid-Skene over every current vote, which becomes the model (stamped ``day``); otherwise the kept model
    labels the touched and gold items (one E-step each) and the other items keep their labels. Majority vote,
    local to an item, labels the touched items alone (every item on a switch from Dawid-Skene). A scene label an
    answer gives takes its majority."""
    touched_ids = pd.Series(pd.unique(touched), dtype=object)
    every_scene, box = _equal(votes, "kind", "classification"), _equal(votes, "kind", "bbox")
    on_touched = _among(votes, "item_id", touched_ids)
    live = counts(votes)
    scene, fit, relabeled = every_scene, refit_due(model, day, config), touched_ids.to_numpy()
    if not fit:  # the kept model (or majority vote) labels the touched items, and the gold ones (gold may be new)
        relabeled = pd.concat([touched_ids, _gold_scenes(gold)], ignore_index=True).unique()
        scene = every_scene & _among(votes, "item_id", relabeled)
        if model is not None:
            fit = not model.knows(_rows(votes, live & scene, ["label"])["label"].unique())
    if fit:
        scene = every_scene
    counted = live & (scene | (box & on_touched))  # boxes only of the touched items
    kept_model = None if fit else model
    answers = counted & _present(votes, "answer_to")
    answered = np.zeros_like(answers)
    # what an item's answer covers (its objects always, its scene label when the answer gives one; _superseded)
    # takes the answer quorum; a scene label the answer left keeps the ordinary method
    for kind, answering in ((every_scene, answers & every_scene), (box, answers)):
        if answering.any():
            answered |= (
                counted & kind & _among(votes, "item_id", _rows(votes, answering, ["item_id"])["item_id"].unique())
            )
    tables, learned = [], kept_model
    for rows, quorum, method in (
        (counted & ~answered, config.box_quorum, config.method),
        (answered, config.answer_quorum, "majority_vote"),
    ):
        if rows.any():  # one selection of each kind's columns, straight from the vote sets
            table, _, fitted = quality.consensus_table(
                _rows(votes, rows & scene, quality.SCENE_INPUTS),
                _rows(votes, rows & box, quality.BOX_INPUTS),
                gold,
                method=method,
                quorum=quorum,
                cluster_iou=config.cluster_iou,
                model=kept_model,
            )
            tables.append(table)
            if fitted is not None:
                learned = fitted.model(day)
    fresh = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=quality.CONSENSUS_COLUMNS)
    scenes = fresh[fresh["kind"] == "classification"]
    new_boxes = fresh[(fresh["kind"] != "classification") & isin(fresh["item_id"], touched_ids)]
    kind = previous_items["kind"]  # an item's row without a consensus has none
    carried = (kind.notna() & (kind != "classification")).to_numpy() & ~isin(previous_items["item_id"], touched_ids)
    if not fit:  # the scene labels of the items not labeled again
        carried |= (kind == "classification").to_numpy() & ~isin(previous_items["item_id"], relabeled)
    kept = rows_where(previous_items, carried, quality.CONSENSUS_COLUMNS)  # one selection, not a copy per condition
    parts = [df for df in (scenes[quality.CONSENSUS_COLUMNS], new_boxes[quality.CONSENSUS_COLUMNS], kept) if len(df)]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=quality.CONSENSUS_COLUMNS)
    return sorted_rows(out, ["item_id", "kind", "label", "x", "y"]), learned


LINEAGE = ["rounds", "files", "judgments", "days", "current_judgments", "answered_batch"]


def lineage(votes: pd.DataFrame) -> pd.DataFrame:
    """Per item (the index): its rounds, files, judgments, the days it was delivered on, the judgments that
    count and the batch its counted answer belongs to."""
    live = current(votes)
    per_item = votes.groupby("item_id", sort=True).agg(
        rounds=("answer_to", "nunique"), files=("source_file", "nunique"), judgments=("kind", "size")
    )
    per_item["rounds"] += 1  # the ordinary round, plus one per answered batch
    per_item["days"] = joined(votes["item_id"], votes["export_date"], ",")  # dates: sorted is delivery order
    per_item["current_judgments"] = live.groupby("item_id").size().reindex(per_item.index).fillna(0).astype("int64")
    # an answer in a class since split counts for nothing, but it did arrive: its request is closed
    standing = votes["answer_to"].notna() & votes["superseded_by"].isna() & votes["replaced_on"].isna()
    answers = votes[standing].groupby("item_id")["answer_to"].max()
    per_item["answered_batch"] = answers.reindex(per_item.index).astype(object)
    return per_item[LINEAGE]


def touched_items(votes: Table, day: str | None) -> pd.Series:
    """Items whose judgments the day changed: new judgments, or earlier ones an edited version replaced; every
    item for ``day=None`` (a guideline change read every vote again)."""
    if day is None:
        changed = np.ones(len(votes), dtype=bool)
    else:
        changed = _equal(votes, "export_date", day) | _equal(votes, "replaced_on", day)
    return pd.Series(pd.unique(_rows(votes, changed, ["item_id"])["item_id"]), dtype=object)


def item_state(
    votes: Table,
    labels: pd.DataFrame,
    requested: pd.DataFrame,
    in_review: pd.Series,
    previous: pd.DataFrame | None = None,
    touched: pd.Series | None = None,
    quorum: int = 2,
) -> pd.DataFrame:
    """Consensus rows with their item's status and lineage; items with votes but no consensus get one row.

    ``requested`` holds relabel requests (item_id, batch_id, sent_on) from the outbox ledger; an item is
    ``answered`` when its current votes hold an answer to its latest request (or to any, without one),
    and ``relabel_requested`` while a later request is open. ``in_review`` items wait for a reviewer and
    ``needs_relabel`` items (a guideline change split or redefined the class of one of their judgments, named in
    the ``needs_relabel`` column, and fewer than ``quorum`` other annotators judged that part of the item:
    :func:`waiting_for_relabel`) for a relabel; an answer ends both, unless one of its own judgments is marked
    ``needs_relabel``: then it closes its request and the item needs a relabel.
    """
    if previous is not None and touched is not None and len(previous):
        # an item's lineage changes only with its judgments: carried for the others, computed for the touched
        carried = previous.loc[group_starts(previous["item_id"]), ["item_id", *LINEAGE]]
        carried = carried[~isin(carried["item_id"], touched)]
        fresh = lineage(_rows(votes, _among(votes, "item_id", touched), LINEAGE_INPUTS)).reset_index()
        per_item = sorted_rows(pd.concat([df for df in (carried, fresh) if len(df)] or [fresh]), ["item_id"])
    else:
        per_item = lineage(_rows(votes, np.ones(len(votes), dtype=bool), LINEAGE_INPUTS)).reset_index()
    # items are a column, not the index: a pandas index of a million ids is hashed again by each lookup
    ids, none = per_item["item_id"], np.full(len(per_item), None, dtype=object)
    last_request = requested.sort_values("sent_on").groupby("item_id")["batch_id"].last() if len(requested) else None
    per_item["requested_batch"] = lookup(ids, last_request) if last_request is not None else none
    owner = positions(labels["item_id"], ids)  # each consensus row's item (-1: an item without votes)
    has_label = np.bincount(owner[owner >= 0], minlength=len(per_item)) > 0
    arrived = (
        per_item["answered_batch"].notna()
        & (per_item["requested_batch"].isna() | (per_item["answered_batch"] >= per_item["requested_batch"]))
    ).to_numpy()
    requested_open = per_item["requested_batch"].notna().to_numpy() & ~arrived
    reviewing = isin(ids, in_review) & ~arrived
    marked = waiting_for_relabel(votes, quorum).set_index("item_id")["needs_relabel"]
    per_item["needs_relabel"] = lookup(ids, marked) if len(marked) else none
    # an answer the guideline in force cannot read whole (it used a class since split or redefined: answered
    # under the task's older labeling config, or before the change) closes its request but answers nothing
    # for good: the item waits for a relabel, and relabel_batch sends it again
    answered = arrived & ~isin(ids, _unreadable_answers(votes))
    relabel = per_item["needs_relabel"].notna().to_numpy() & ~answered
    per_item["status"] = np.select(
        [requested_open, answered, relabel, reviewing, ~has_label],
        ["relabel_requested", "answered", "needs_relabel", "in_review", "no_consensus"],
        "labeled",
    )
    return with_items(labels, per_item, owner)


def with_items(labels: pd.DataFrame, per_item: pd.DataFrame, owner: np.ndarray) -> pd.DataFrame:
    """``labels.merge(per_item, on="item_id", how="right")``: each item of ``per_item`` (one row each, in its
    order) with its consensus rows in the order of ``labels``, or one row without a label; ``owner`` is each
    label row's position in ``per_item`` (-1: none), which the status needed too. The rows are placed by
    position: pandas' merge hashes the item ids of both sides again (2.5 s for a state)."""
    matched = np.flatnonzero(owner >= 0)
    matched = matched[np.argsort(owner[matched], kind="stable")]  # grouped by item, each group in labels' order
    per = np.bincount(owner[matched], minlength=len(per_item))
    rows = np.maximum(per, 1)  # an item without a label keeps one row
    start = np.cumsum(rows) - rows
    label_row = np.full(int(rows.sum()), -1, dtype=np.int64)
    group_start = np.cumsum(per) - per
    owners = owner[matched]
    label_row[start[owners] + np.arange(len(matched)) - group_start[owners]] = matched
    item_row = np.repeat(np.arange(len(per_item)), rows)
    parts = [(per_item, item_row, False) if name == "item_id" else (labels, label_row, True) for name in labels]
    columns = {name: _taken(frame[name], row, fill) for name, (frame, row, fill) in zip(labels, parts, strict=True)}
    columns.update({name: _taken(per_item[name], item_row, False) for name in per_item if name != "item_id"})
    return pd.DataFrame(columns)


def _taken(column: pd.Series, rows: np.ndarray, fill: bool) -> pd.Series:
    """The column's values at ``rows`` (-1: missing, with ``fill``), keeping its dtype as a merge does (an
    object column stays object, an integer one with missing values turns float)."""
    if isinstance(column.dtype, np.dtype):  # a numpy column: promoted for missing values, as pandas takes
        values = take(column.to_numpy(), rows, allow_fill=fill)
    else:
        values = column.array.take(rows, allow_fill=fill)
    return pd.Series(values, dtype=values.dtype, copy=False)


def fold_state(
    votes: Table,
    previous: pd.DataFrame,
    touched: pd.Series,
    gold: pd.DataFrame,
    config: StateConfig,
    *,
    day: str,
    model: AnnotatorModel | None,
    requests: pd.DataFrame,
    in_review: pd.Series,
    reviewed_today: pd.Series,
    unsure_today: pd.Series | None = None,
    critical: frozenset[str] = frozenset(),
) -> tuple[pd.DataFrame, AnnotatorModel | None]:
    """The item state at the end of ``day`` (:func:`consensus`, then :func:`item_state`), and its annotator model.

    ``in_review`` are the items held in review; ``unsure_today`` those the day's review queue listed for the day's
    scene consensus alone, held too where :func:`unsure_scenes` finds the pooled consensus unsure; the touched
    items whose pooled boxes disagree (:func:`box_disagreements`, ``critical`` the guideline's critical classes)
    are held too.

    Between fits only some items can change: those the day touched, the gold items (labeled again), items with an
    open request or one that lapsed (``requests``; the previous state's ``requested_batch``) and items the day
    put in review (``reviewed_today``); the rows of all others are the previous state's. Those items' rows are
    computed and spliced into the previous state (the whole state is then not rebuilt from a million items, and
    is the same). A night that fits labels every item again, so it builds the whole state."""
    if len(previous) and not refit_due(model, day, config):
        gold_ids = _gold_scenes(gold)
        was_requested = previous.loc[previous["requested_batch"].notna().to_numpy(), "item_id"]
        parts = [touched, gold_ids, requests["item_id"] if len(requests) else None, was_requested, reviewed_today]
        affected = pd.concat([p.astype(object) for p in parts if p is not None], ignore_index=True).unique()
        mine = isin(previous["item_id"], affected)
        before = rows_where(previous, mine)
        # what follows reads the affected items' votes alone: selected once, not tested again and again among
        # millions (the votes of 41,706 items of 1.2 M on night 60 of the benchmark)
        theirs = _subset(votes, _among(votes, "item_id", affected))
        labels, fitted = consensus(theirs, before, touched, gold, config, day=day, model=model)
        if fitted is model:  # no class the kept fit never saw: it labeled the affected items alone
            held = _held(in_review, labels, unsure_today, config, theirs, touched, critical, day)
            rows = item_state(
                theirs, labels, requests, held, previous=before, touched=touched, quorum=config.box_quorum
            )
            state = spliced(previous, mine, rows, "item_id")
            if state is not None:
                return state, fitted
            others = rows_where(previous, ~mine)
            # a text column the previous state held only missing values of (no request yet) takes the computed type
            blank = {
                name: dtype
                for name, dtype in rows.dtypes.items()
                if others[name].dtype == object and dtype.kind not in "iub" and others[name].isna().all()
            }
            others = others.astype(blank) if len(rows) and blank else others
            parts = [df for df in (others, rows) if len(df)] or [rows]
            return sorted_rows(pd.concat(parts, ignore_index=True), ["item_id"]), fitted
    labels, fitted = consensus(votes, previous, touched, gold, config, day=day, model=model)
    held = _held(in_review, labels, unsure_today, config, votes, touched, critical, day)
    table = item_state(votes, labels, requests, held, previous=previous, touched=touched, quorum=config.box_quorum)
    return table, fitted


def _held(
    in_review: pd.Series,
    labels: pd.DataFrame,
    unsure_today: pd.Series | None,
    config: StateConfig,
    votes: Table,
    touched: pd.Series,
    critical: frozenset[str],
    day: str,
) -> pd.Series:
    parts = [in_review.astype(object), box_disagreements(votes, touched, critical, day)]
    if unsure_today is not None and len(unsure_today):
        parts.append(unsure_scenes(labels, unsure_today, config))
    return pd.concat(parts, ignore_index=True)


def box_disagreements(
    votes: Table, items: pd.Series, critical: frozenset[str] = frozenset(), day: str | None = None
) -> pd.Series:
    """Of ``items``, those whose counted judgments, pooled over the days they were delivered on, hold a box
    disagreement the review queue lists: a box label conflict (two annotators' boxes on one object, IoU >= 0.5,
    different labels), or a box of a ``critical`` class no other annotator drew although others judged the item
    in a task that asked for boxes (:func:`labelops.review.unmatched_boxes`). A day's queue sees each day alone:
    a `truck` drawn one day and a `bus` on it the next, or a pedestrian drawn one day and missed by the next
    day's annotator, would leave the object to the box quorum, and it would vanish unreviewed. Items judged on
    one day only were the day's queue's to find. With ``day``, only items judged that day: the first night of a
    guideline version reads every item again, and would otherwise send every old disagreement to review."""
    mine = counts(votes) & _among(votes, "item_id", pd.unique(items))
    columns = ["item_id", "annotator_id", "kind", "label", "x", "y", "w", "h", "export_date", "source_file"]
    judged = _rows(votes, mine, columns)
    days = judged.groupby("item_id", sort=False)["export_date"].nunique()
    multi_day = days.index[(days > 1).to_numpy()]
    if day is not None:
        multi_day = multi_day[
            isin(pd.Series(multi_day), judged.loc[judged["export_date"].astype(str) == day, "item_id"])
        ]
    rows = judged[isin(judged["item_id"], multi_day)].reset_index(drop=True)
    drawn = rows[(rows["kind"].astype(str) == "bbox").to_numpy()]
    if drawn.empty:
        return pd.Series(dtype=object)
    matching = boxes.match_boxes(drawn[["item_id", "annotator_id", "label", "x", "y", "w", "h"]].reset_index(drop=True))
    # which files asked for boxes is read from every item's judgments, not the multi-day items' alone: a file
    # that drew its boxes on other items asked for them on this one too
    who = judged[["item_id", "annotator_id", "kind", "source_file"]]
    missed = review.unmatched_boxes(matching, set(critical), who)
    found = np.concatenate(
        [matching.conflicts["item_id"].to_numpy(dtype=object), missed["item_id"].to_numpy(dtype=object)]
    )
    return pd.Series(pd.unique(found), dtype=object)


def unsure_scenes(labels: pd.DataFrame, items: pd.Series, config: StateConfig) -> pd.Series:
    """Of ``items``, those whose scene label pooled over every day is unsure as the review queue means it: two or
    more votes, and a confidence below ``review_min_confidence`` or an agreement below ``review_min_agreement``.

    The review queue judges a day's consensus, fit on that day's votes alone, and a small day's fit can be
    degenerate: an annotator who gave one class all day tells it nothing, so a unanimous item falls back to the
    day's class prior (0.67 for two matching votes, in a day otherwise of one reviewer's answers). The pooled
    consensus, fit on every day, decides whether such an item waits for a reviewer."""
    mine = rows_where(labels, isin(labels["item_id"], items))  # a few items of a state's million rows, first
    scene = mine[mine["kind"].astype(object).eq("classification").to_numpy()]
    votes = pd.to_numeric(scene["n_votes"], errors="coerce").fillna(0).to_numpy()
    confidence = pd.to_numeric(scene["confidence"], errors="coerce").to_numpy(dtype=float)
    agreement = pd.to_numeric(scene["agreement"], errors="coerce").to_numpy(dtype=float)
    unsure = (votes >= 2) & ((confidence < config.review_min_confidence) | (agreement < config.review_min_agreement))
    return pd.Series(pd.unique(scene["item_id"].to_numpy(dtype=object)[unsure]), dtype=object)


def loop_by_batch(sent: pd.DataFrame, items: pd.DataFrame, snapshot_items: pd.Series | None) -> pd.DataFrame:
    """Per relabel batch, the loop so far: items sent (honeypots counted apart: they are no requests), answered
    (by this batch's answer or a later one), still waiting (requested, or sent and never judged yet), and
    answered items the latest snapshot holds."""
    columns = ["batch_id", "sent_on", "sent", "honeypots", "answered", "waiting", "answered_in_snapshot"]
    if sent.empty:
        return pd.DataFrame(columns=columns)
    first = (
        first_rows(items, "item_id").set_index("item_id")
        if len(items)
        else pd.DataFrame(columns=["answered_batch", "status"])
    )
    honeypot = sent["reason"].astype(object).eq(HONEYPOT).to_numpy()
    answered_batch = sent["item_id"].map(first["answered_batch"]).astype(object)
    answered = (answered_batch.notna() & (answered_batch.fillna("") >= sent["batch_id"])).to_numpy() & ~honeypot
    status = sent["item_id"].map(first["status"]).astype(object)
    # a production item sent for labeling has no state row until its answer brings its first judgments
    waiting = (status.eq("relabel_requested") | status.isna()).to_numpy() & ~answered & ~honeypot
    shown = isin(sent["item_id"], snapshot_items) if snapshot_items is not None else np.zeros(len(sent), bool)
    table = pd.DataFrame(
        {
            "batch_id": sent["batch_id"],
            "sent_on": sent["sent_on"],
            "sent": ~honeypot,
            "honeypots": honeypot,
            "answered": answered,
            "waiting": waiting,
            "answered_in_snapshot": answered & shown,
        }
    )
    return table.groupby(["batch_id", "sent_on"], as_index=False).sum()[columns]


def last_labeled(items: pd.DataFrame, among: pd.Series | None = None) -> pd.DataFrame:
    """Each item of a state with the last day a judgment of it was delivered (``days`` ends with it); only the items
    ``among`` (an outbox ledger's, where the state has a million)."""
    if among is not None:
        items = rows_where(items, isin(items["item_id"], among), ["item_id", "days"])
    first = first_rows(items, "item_id")
    return pd.DataFrame({"item_id": first["item_id"].array, "export_date": _last_day(first["days"]).array})


def current_rows(items: pd.DataFrame, *, since: str | None = None) -> np.ndarray:
    """Which rows of a state are the labeled data as it stands: the consensus rows (an item without a consensus
    has none) of the items last delivered on or after ``since``, each item once. A mask: coverage counts these
    rows rather than copying them."""
    keep = items["label"].notna().to_numpy()
    if since is not None and len(items):
        keep = keep & (_last_day(items["days"]) >= since).to_numpy(dtype=bool, na_value=False)
    return keep


def _last_day(days: pd.Series) -> pd.Series:
    """The last date of each ``days`` list (its last ten characters), sliced by Arrow: ``astype(str).str[-10:]``
    makes a Python string per row (1 s for a state's 1.2 M items)."""
    values = pa.array(days.array, from_pandas=True).cast(pa.large_string())
    return pd.Series(text(pc.utf8_slice_codeunits(values, -10)), index=days.index)
