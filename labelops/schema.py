"""Canonical tables: every export format normalizes into these Arrow schemas.

The schemas are the contract between ingestion and everything downstream, so a
parser that produces a column of the wrong type fails here, at the boundary, and
not three assets later.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labelops.columns import arrow_text, extract

# An answer to one of our relabel tasks names its batch in its attributes (the task's data.batch_id, kept by the
# Label Studio reader; honeypots carry none: their answers are ordinary judgments).
ANSWER_BATCH = r'"batch_id":"(relabel-[^"]*)"'
# What a tool's export says an annotation is, kept in ``source_ref`` by its reader: a Label Studio annotation's own
# ids (task and annotation, first), and a CVAT task (after the subset), whose images the key tells apart by their
# item: CVAT gives its shapes no ids that last, and a task export holds every shape of an image as it stands, so a
# task's image is the unit an edit replaces. Not the image's id: a project export numbers images across its tasks,
# and deleting a task renumbers the others'. A task that names no id is ``task=``. A CVAT task whose export gives
# the time it was created is ``task=<id>@<created>``: that names the task on its instance (another instance's task
# of the same id was created at another time), so its annotator is no part of what it is (below).
INSTANCE_NAMED = r"^task=[^/@]*@[^/]*$"  # a CVAT task with its creation time (a Label Studio id holds "/annotation=")
TOOL_ANNOTATION = r"^(?:subset=[^/]*/)?(task=[^/]+/annotation=(?!None/)[^/]+|task=[^/]*(?=/image=))/"

ANNOTATION_SCHEMA = pa.schema(
    [
        pa.field("annotation_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("annotator_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("x", pa.float64()),
        pa.field("y", pa.float64()),
        pa.field("w", pa.float64()),
        pa.field("h", pa.float64()),
        pa.field("points", pa.list_(pa.float64())),
        pa.field("image_width", pa.float64()),
        pa.field("image_height", pa.float64()),
        pa.field("attributes", pa.string()),
        pa.field("annotated_at", pa.timestamp("us", tz="UTC")),
        pa.field("guideline_version", pa.string()),
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_ref", pa.string(), nullable=False),
        pa.field("export_date", pa.date32()),
        # Identity by content: a hash of (annotator, item, kind, label, geometry; for an answer to a relabel task,
        # its batch), and for a judgment delivered before (in this file, another file of the day, or an earlier
        # day) the id of its first copy.
        pa.field("content_id", pa.string()),
        pa.field("duplicate_of", pa.string()),
    ]
)

GOLD_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("label", pa.string()),
        pa.field("x", pa.float64()),
        pa.field("y", pa.float64()),
        pa.field("w", pa.float64()),
        pa.field("h", pa.float64()),
        pa.field("points", pa.list_(pa.float64())),
        pa.field("source_format", pa.string(), nullable=False),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("source_ref", pa.string(), nullable=False),
    ]
)

# Items and predictions carry open-ended extra columns (slice attributes, model
# input features) after these core columns.
ITEM_CORE_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("uri", pa.string()),
        pa.field("width", pa.float64()),
        pa.field("height", pa.float64()),
        pa.field("captured_at", pa.timestamp("us", tz="UTC")),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("export_date", pa.date32()),
    ]
)

PREDICTION_CORE_SCHEMA = pa.schema(
    [
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
        pa.field("model_version", pa.string()),
        pa.field("predicted_label", pa.string()),
        pa.field("confidence", pa.float64()),
        pa.field("source_file", pa.string(), nullable=False),
        pa.field("export_date", pa.date32()),
    ]
)

# A production log's model probabilities, one column per class (prob_<class>): the model's output, read by the
# label-issue finder and left out of drift's monitored columns.
PROBABILITY_PREFIX = "prob_"


def normalize_item_ids(ids: pd.Series) -> pd.Series:
    """The one spelling of an item id: text without surrounding white space.

    Exports, catalogs, gold files and production logs are typed by different people and
    tools; ``" img-1"`` and ``"img-1"`` are the same item, so every canonical table
    (through :func:`conform`) stores the stripped form and joins never miss silently.
    """
    # stripped by Arrow and kept there: as Python strings, a million ids cost 0.2 s to make and as much to write
    return ids.astype("str").str.strip()


def conform(frame: pd.DataFrame, schema: pa.Schema, *, extra: str = "forbid") -> pd.DataFrame:
    """:func:`conform_table`, back in pandas."""
    return conform_table(frame, schema, extra=extra).to_pandas()


def conform_table(frame: pd.DataFrame, schema: pa.Schema, *, extra: str = "forbid") -> pa.Table:
    """Cast a frame to a schema through Arrow, so dtypes are identical for every source.

    ``extra`` says what to do with columns the schema does not name: ``forbid``
    raises, ``keep`` appends them after the schema's columns (slice attributes and
    model features), ``drop`` ignores them. Item ids are normalized here, once for
    every table; list columns that a parser left all-empty become object columns of
    nulls (pandas infers float64 for them, which Arrow cannot read as a list).
    """
    missing = [name for name in schema.names if name not in frame.columns]
    for name in missing:
        frame = frame.assign(**{name: None})
    if "item_id" in schema.names and len(frame):
        frame = frame.assign(item_id=normalize_item_ids(frame["item_id"]))
    for field in schema:
        if pa.types.is_list(field.type) and frame[field.name].dtype != object:
            column = frame[field.name]
            frame = frame.assign(**{field.name: column.astype(object).where(column.notna(), None)})
    others = [c for c in frame.columns if c not in schema.names]
    if others and extra == "forbid":
        raise ValueError(f"unexpected columns {others}")
    fields = list(schema)
    if extra == "keep":
        fields += [pa.field(c, arrow_type_of(frame[c])) for c in others]
    target = pa.schema(fields)
    return pa.Table.from_pandas(frame[target.names], schema=target, preserve_index=False)


def arrow_type_of(column: pd.Series) -> pa.DataType:
    """Numbers stay numbers (drift needs them); everything else is text."""
    if pd.api.types.is_bool_dtype(column):
        return pa.bool_()
    if pd.api.types.is_numeric_dtype(column):
        return pa.float64()
    return pa.string()


def answer_batches(attributes: pd.Series) -> pd.Series:
    """The relabel batch each row answers (text), missing for every other row."""
    return extract(attributes, ANSWER_BATCH, '"batch_id":"relabel-')


def tool_annotations(source_ref: pd.Series) -> pd.Series:
    """The tool annotation each row belongs to (text): a Label Studio annotation (``task=…/annotation=…``) or a
    CVAT task (``task=…``, its images told apart by their item in the key); missing for rows of other formats
    (COCO, YOLO, tables), which give their annotations no ids that last across exports."""
    return extract(source_ref, TOOL_ANNOTATION, "task=")


def annotation_identity(item_ids: pd.Series, annotator_ids: pd.Series, ids: pd.Series) -> np.ndarray:
    """What one tool annotation is, as text: its item, its :func:`tool_annotations` ids and its annotator. The
    annotator tells apart two instances of a tool that number their tasks and annotations alike (ours and a
    vendor's Label Studio). A CVAT task named with its creation time is told apart by it, and its annotator is
    left out: CVAT records no author per shape, and exports a task reassigned to another labeler with the new
    assignee as the annotator of every shape it holds, shapes that replace the earlier assignee's."""
    items, annotators, tools = (arrow_text(c) for c in (item_ids, annotator_ids, ids))
    annotators = pc.if_else(pc.match_substring_regex(tools, INSTANCE_NAMED), "", annotators)
    return np.asarray(
        pc.binary_join_element_wise(items, tools, annotators, pa.scalar("|", pa.large_string())).to_numpy(
            zero_copy_only=False
        )
    )
