"""The labeling loop's outbound side: which items go (back) to labelers (`labelops.outbox` builds what they import).

Both selections are plain ranked tables with a `reason` per row; a ledger of what was sent keeps an
item from being sent again while it is still out (until its labels come back or the export expires).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from labelops import state, warehouse
from labelops.columns import isin
from labelops.outbox import HONEYPOT
from labelops.storage import Store

LEDGER_COLUMNS = ["item_id", "batch_id", "sent_on", "reason"]
LABEL_ISSUE = "label_issue: "  # the review reason of an item cleanlab put there (labelops.review)
PRIORITY = {
    "guideline_change": 5.0,
    "review_queue": 4.0,
    "label_issue": 3.8,
    "unseen_in_training": 3.5,
    "drifted_slice": 3.0,
    "coverage_gap": 2.0,
}


def read_ledger(store: Store, area: str, *, before: str | None = None) -> pd.DataFrame:
    """What the outbox sent (``outbox/<area>/ledger/<day>.csv``), on every day or on the days before ``before``.
    Ledgers written before the ``reason`` column existed read with an empty one."""
    keys = [
        k for k in store.list(warehouse.outbox_ledger(area)) if before is None or k.rsplit("/", 1)[-1][:10] < before
    ]
    frames = [pd.read_csv(io.BytesIO(store.read_bytes(key)), dtype=str) for key in keys]
    ledger = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=LEDGER_COLUMNS)
    return ledger.reindex(columns=LEDGER_COLUMNS)


MANIFEST_TEXT = ["item_id", "reason", "kind", "batch_id"]  # read as text: an item id of digits stays an id


def sent_batch(store: Store, area: str, day: str, batch_id: str) -> tuple[pd.DataFrame, str] | None:
    """The batch ``day`` already sent (its manifest) and the guideline version it was sent under (its labeling
    config's), once its ledger entry exists; None before. What was sent is what labelers have: a rerun of the day
    reports it again instead of choosing anew, which would rewrite the day's ledger and so forget the requests it
    holds (answered items left out, still-open ones dropped)."""
    if not store.exists(warehouse.outbox_ledger(area, day)):
        return None
    prefix = warehouse.outbox(area, day)
    manifest = pd.read_csv(
        io.BytesIO(store.read_bytes(f"{prefix}/{batch_id}.csv")), dtype=dict.fromkeys(MANIFEST_TEXT, str)
    )
    configs = [
        key.rsplit("/", 1)[-1] for key in store.list(prefix) if key.rsplit("/", 1)[-1].startswith("labeling_config.")
    ]
    version = configs[0].removeprefix("labeling_config.").removesuffix(".xml") if configs else "unknown"
    return manifest, version


def still_open(ledger: pd.DataFrame, labeled_since: pd.DataFrame, today: str, expire_days: int | None) -> set[str]:
    """Items sent earlier whose labels have not come back (and, with ``expire_days``, not expired)."""
    if ledger.empty:
        return set()
    sent = ledger.assign(sent_on=pd.to_datetime(ledger["sent_on"].astype("string")))
    if expire_days is not None:
        sent = sent[sent["sent_on"] > pd.Timestamp(today) - pd.Timedelta(days=expire_days)]
    returned = labeled_since.groupby("item_id")["export_date"].max() if len(labeled_since) else pd.Series(dtype=object)
    back = pd.to_datetime(sent["item_id"].map(returned).astype("string"))
    still = back.isna() | (back <= sent["sent_on"])
    return set(sent.loc[still.to_numpy(), "item_id"])


def open_requests(ledger: pd.DataFrame, latest: pd.DataFrame, today: str, expire_days: int | None) -> set[str]:
    """Items relabel batches sent (``ledger``) that still wait for their answer, the request not lapsed: those the
    label state (``latest``: item_id, status, days) shows ``relabel_requested``, or has no row for yet (a
    production item whose answer has not come). Unlike :func:`still_open`, an ordinary judgment delivered after
    the request is not its answer: the state knows what answers a request. A honeypot asks for no answer: it is
    open until any judgment of it comes back (:func:`still_open`)."""
    if ledger.empty:
        return set()
    honeypot = ledger["reason"].astype(object).eq(HONEYPOT).to_numpy()
    honeypots = ledger[honeypot]
    opened = still_open(honeypots, state.last_labeled(latest, among=honeypots["item_id"]), today, expire_days)
    sent = ledger[~honeypot]
    if expire_days is not None:
        sent_on = pd.to_datetime(sent["sent_on"].astype("string"))
        sent = sent[(sent_on > pd.Timestamp(today) - pd.Timedelta(days=expire_days)).to_numpy()]
    waiting = latest["status"].astype(object).eq("relabel_requested").to_numpy()
    open_ids = isin(sent["item_id"], latest["item_id"][waiting]) | ~isin(sent["item_id"], latest["item_id"])
    return opened | set(sent.loc[open_ids, "item_id"])


def relabel_candidates(
    production: pd.DataFrame,
    drift: pd.DataFrame,
    coverage: pd.DataFrame,
    review: pd.DataFrame,
    needs_relabel: pd.DataFrame,
    backlog: pd.DataFrame | None = None,
    *,
    drift_ratio: float = 1.5,
) -> pd.DataFrame:
    """Every reason an item should go back to labelers, one row per (item, reason), with a priority.

    Production items from drifted slices (slice values whose production share grew by ``drift_ratio``
    over their training share, in a drifted column), with unseen predicted classes, or predicted as a
    critical class in a slice below its coverage minimum come least confident first; review-queue items come
    from the day's quality stage, the ``backlog`` of review (:func:`review_backlog`) and ``needs_relabel`` items
    (item_id, needs_relabel: the guideline change that split or redefined one of their labels) from the label
    state.
    """
    rows = []
    traffic = production[~isin(production["item_id"], review["item_id"])] if len(production) else production
    drifted = set(drift.loc[drift["drifted"] & (drift["feature"] != "__dataset__"), "feature"]) if len(drift) else set()
    cells = (
        coverage[
            (coverage["label"] == "*")
            & coverage["dimension"].isin(drifted)
            & (coverage["underrepresentation"] >= drift_ratio)
        ]
        if len(coverage)
        else coverage
    )
    for dimension, value in cells[["dimension", "value"]].itertuples(index=False) if len(cells) else []:
        if dimension not in traffic:
            continue
        hits = traffic[traffic[dimension].astype(str) == value]
        rows.append(
            pd.DataFrame(
                {
                    "item_id": hits["item_id"],
                    "reason": f"drifted_slice:{dimension}={value}",
                    "kind": "drifted_slice",
                    "stratum": f"{dimension}={value}",
                    "uncertainty": 1 - hits["confidence"].fillna(0.5),
                }
            )
        )
    unseen = unseen_classes(coverage)
    if unseen and len(traffic):
        hits = traffic[traffic["predicted_label"].isin(unseen)]
        rows.append(
            pd.DataFrame(
                {
                    "item_id": hits["item_id"],
                    "reason": "unseen_in_training:" + hits["predicted_label"].astype(str),
                    "kind": "unseen_in_training",
                    "stratum": "predicted=" + hits["predicted_label"].astype(str),
                    "uncertainty": 1 - hits["confidence"].fillna(0.5),
                }
            )
        )
    gaps = (
        coverage[(coverage["label"] != "*") & coverage["critical"] & (coverage["gap"] > 0)]
        if len(coverage)
        else coverage
    )
    for label, dimension, value in gaps[["label", "dimension", "value"]].itertuples(index=False) if len(gaps) else []:
        if dimension not in traffic:
            continue
        hits = traffic[(traffic["predicted_label"] == label) & (traffic[dimension].astype(str) == value)]
        rows.append(
            pd.DataFrame(
                {
                    "item_id": hits["item_id"],
                    "reason": f"coverage_gap:{label} at {dimension}={value}",
                    "kind": "coverage_gap",
                    "stratum": f"{label}|{dimension}={value}",
                    "uncertainty": 1 - hits["confidence"].fillna(0.5),
                }
            )
        )
    if len(review):
        # items in review only because cleanlab found a likely label error keep that reason (and its score)
        issue_only = review["reason"].astype(str).str.startswith(LABEL_ISSUE) & ~review["reason"].astype(
            str
        ).str.contains("; ", regex=False)
        kind = np.where(issue_only, "label_issue", "review_queue")
        rows.append(
            pd.DataFrame(
                {
                    "item_id": review["item_id"],
                    "reason": np.where(issue_only, "", "review_queue:") + review["reason"].astype(str),
                    "kind": kind,
                    "stratum": np.where(issue_only, "label_issue", "review"),
                    "uncertainty": review["priority"].astype(float),
                }
            )
        )
    if backlog is not None and len(backlog):
        rows.append(
            pd.DataFrame(
                {
                    "item_id": backlog["item_id"],
                    "reason": "review_queue:" + backlog["reason"].astype(str),
                    "kind": "review_queue",
                    "stratum": "review_backlog",
                    "uncertainty": backlog["uncertainty"].astype(float),
                }
            )
        )
    if len(needs_relabel):
        rows.append(
            pd.DataFrame(
                {
                    "item_id": needs_relabel["item_id"],
                    "reason": "guideline_change:" + needs_relabel["needs_relabel"].astype(str),
                    "kind": "guideline_change",
                    "stratum": "guideline",
                    "uncertainty": 1.0,
                }
            )
        )
    rows = [r for r in rows if len(r)]
    if not rows:
        return pd.DataFrame(columns=["item_id", "reason", "kind", "stratum", "uncertainty", "priority"])
    candidates = pd.concat(rows, ignore_index=True)
    candidates["priority"] = candidates["kind"].map(PRIORITY) + candidates["uncertainty"].clip(0, 1) * 0.999
    return candidates


def held_for_review(queue: pd.DataFrame, latest: pd.DataFrame) -> pd.DataFrame:
    """The day's review queue without the items it listed for the day's scene consensus alone (``scene_only``) that
    the label state (``latest``: item_id, status) did not hold in review, their consensus pooled over days being
    sure: nobody is asked to review a label the state already trusts."""
    if "scene_only" not in queue or queue.empty:
        return queue
    held = isin(queue["item_id"], latest.loc[latest["status"].astype(object).eq("in_review"), "item_id"])
    return queue[~queue["scene_only"].to_numpy(dtype=bool) | held].reset_index(drop=True)


STATE_HELD = "box disagreement across days (held by the label state)"


def review_backlog(
    latest: pd.DataFrame, queued: pd.Series, *, min_confidence: float, held_before: pd.Series | None = None
) -> pd.DataFrame:
    """Items the label state holds back for a decision that the day's review queue does not list, as review
    candidates (item_id, reason, uncertainty).

    - ``in_review`` items an earlier day's queue put there and no answer came for: a batch reads its own day's
      queue, and a day without a batch (no drift) sent its queue nowhere.
    - ``in_review`` items the label state put there itself the night of ``latest``, not held the night before
      (``held_before``: the items in review in the state before it) nor listed by the day's queue: a box
      disagreement across days (a label conflict, a critical box another day's annotator missed), which no day's
      queue saw. The state holds an item for nothing else, and those are what the queue ranks first: they come
      first among review items (uncertainty 1).
    - ``labeled`` items whose scene label, pooled over days, has two or more votes and a confidence below
      ``min_confidence``: a day's queue sees that day's judgments alone (one vote on each of two days never
      reaches it), while the snapshot leaves the pooled label out as ``low_confidence``.

    ``latest`` holds the latest state's item_id, kind, status, confidence and n_votes. Without ``held_before``
    every item in review counts as held since an earlier day."""
    rows = latest[~isin(latest["item_id"], queued)]
    scene = rows["kind"].astype(object).eq("classification").to_numpy()
    confidence = pd.to_numeric(rows["confidence"], errors="coerce").to_numpy(dtype=float)
    votes = pd.to_numeric(rows["n_votes"], errors="coerce").fillna(0).to_numpy()
    status = rows["status"].astype(object)
    waiting = status.eq("in_review").to_numpy()
    low = scene & status.eq("labeled").to_numpy() & (votes >= 2) & (confidence < min_confidence)
    scene_confidence = pd.Series(confidence[scene], index=rows["item_id"].to_numpy()[scene])
    waiting_ids = pd.Series(pd.unique(rows["item_id"].to_numpy()[waiting]), dtype=object)
    waiting_confidence = scene_confidence.groupby(level=0).first().reindex(waiting_ids).to_numpy()
    low_ids, low_confidence = rows["item_id"].to_numpy()[low], confidence[low]
    rounded = pd.Series(low_confidence).round(3).astype(str)
    found = ~isin(waiting_ids, held_before) if held_before is not None else np.zeros(len(waiting_ids), dtype=bool)
    return pd.DataFrame(
        {
            "item_id": np.concatenate([waiting_ids.to_numpy(dtype=object), low_ids.astype(object)]),
            "reason": np.concatenate(
                [
                    np.where(found, STATE_HELD, "in review since an earlier day").astype(object),
                    ("low consensus confidence over days (" + rounded + ")").to_numpy(dtype=object),
                ]
            ),
            "uncertainty": np.concatenate(
                [np.where(found, 1.0, 1 - np.nan_to_num(waiting_confidence, nan=0.5)), 1 - low_confidence]
            ),
        }
    )


def unseen_classes(coverage: pd.DataFrame) -> set[str]:
    """Classes production predicts that the labeled data has none of, in any slice."""
    if coverage.empty:
        return set()
    cells = coverage[coverage["label"] != "*"]
    first = cells[cells["dimension"] == cells["dimension"].iloc[0]] if len(cells) else cells
    totals = first.groupby("label")[["labeled_count", "production_count"]].sum()
    return set(totals.index[(totals["labeled_count"] == 0) & (totals["production_count"] > 0)])


def select(candidates: pd.DataFrame, budget: int, exclude: set[str]) -> pd.DataFrame:
    """Round-robin over (kind, stratum) groups — every reason and every drifted slice gets its share —
    taking the most important kind first within a turn and the highest priority within a group."""
    if candidates.empty:
        return candidates.assign(rank=pd.Series(dtype=np.int64))
    pool = candidates[~isin(candidates["item_id"], exclude)].copy()
    pool = pool.sort_values(["priority", "item_id"], ascending=[False, True], kind="stable")
    pool["turn"] = pool.groupby(["kind", "stratum"]).cumcount()  # round-robin across strata within a kind
    pool["kind_rank"] = pool["kind"].map(PRIORITY)
    pool = pool.sort_values(
        ["turn", "kind_rank", "priority", "item_id"], ascending=[True, False, False, True], kind="stable"
    )
    reasons = pool.groupby("item_id", sort=False)["reason"].agg(lambda s: "; ".join(dict.fromkeys(s)))
    first = pool.drop_duplicates("item_id").head(budget).copy()
    first["reason"] = first["item_id"].map(reasons)
    first["rank"] = np.arange(1, len(first) + 1)
    return first.reset_index(drop=True)


def select_tasks(
    candidates: pd.DataFrame,
    sendable: np.ndarray,
    still_out: set[str],
    budget: int,
    *,
    batch_id: str,
    dimensions: list[str],
) -> pd.DataFrame:
    """The day's tasks: the most valuable candidates (``task_candidates`` order) that can be sent (a media URI)
    and are not out already, up to ``budget``, ranked, with the slice columns that ranked them."""
    chosen = candidates[sendable & ~isin(candidates["item_id"], still_out)].head(budget).reset_index(drop=True)
    chosen = chosen.assign(batch_id=batch_id, rank=range(1, len(chosen) + 1))
    return chosen[["item_id", "uri", "reason", "priority", "batch_id", "rank", *dimensions]]


def task_items(items: pd.DataFrame, gold: pd.DataFrame) -> pd.Series:
    """The items whose model output a task batch reads: the day's catalog items (candidates are its raw items)
    and the gold items (honeypots). A production row of any other item changes neither the candidates' priority
    nor the batch's pre-annotations, so a day's production table need only be read for these."""
    return pd.concat([items["item_id"], gold["item_id"]], ignore_index=True)


def task_candidates(
    items: pd.DataFrame,
    labeled_ids: pd.Series,
    coverage: pd.DataFrame,
    predictions: pd.DataFrame,
    dimensions: list[str],
    critical: set[str],
) -> pd.DataFrame:
    """Raw items without annotations, valued by how under-covered their slices are and whether the model
    sees a critical class in them, then by model uncertainty."""
    raw = items[~isin(items["item_id"], labeled_ids)].drop_duplicates("item_id", keep="last").copy()
    if raw.empty:
        return raw.assign(reason=pd.Series(dtype=object), priority=pd.Series(dtype=float))
    cells = (
        coverage[coverage["label"] == "*"].set_index(["dimension", "value"])["underrepresentation"]
        if len(coverage)
        else pd.Series(dtype=float)
    )
    value = np.zeros(len(raw))
    reasons = pd.Series("", index=raw.index, dtype=object)
    for dimension in dimensions:
        if dimension not in raw:
            continue
        ratio = (
            pd.MultiIndex.from_arrays([np.full(len(raw), dimension), raw[dimension].astype(str)])
            .map(cells)
            .to_numpy(dtype=float)
        )
        ratio = np.where(np.isfinite(ratio), ratio, 0.0)
        value += np.clip(ratio - 1, 0, None)
        text = (
            f"under-covered {dimension}="
            + raw[dimension].astype(str)
            + " (x"
            + pd.Series(ratio, index=raw.index).map("{:.2f}".format)
            + "); "
        )
        reasons = reasons + text.where(ratio > 1, "")
    confidence = (
        raw["item_id"].map(predictions.groupby("item_id")["confidence"].min())
        if len(predictions)
        else pd.Series(np.nan, index=raw.index)
    )
    sees_critical = (
        isin(raw["item_id"], predictions.loc[predictions["predicted_label"].isin(critical), "item_id"])
        if len(predictions)
        else np.zeros(len(raw), bool)
    )
    reasons = reasons + np.where(sees_critical, "model sees a critical class; ", "")
    raw["priority"] = value + sees_critical + (1 - confidence.fillna(0.5).to_numpy()) * 0.5
    raw["reason"] = reasons.str.rstrip("; ").replace("", "new raw item")
    return raw.sort_values(["priority", "item_id"], ascending=[False, True], kind="stable").reset_index(drop=True)
