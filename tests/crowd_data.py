"""Loaders for the real crowdsourcing sets in data/real, as long frames plus gold labels."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

REAL = Path(__file__).resolve().parents[1] / "data" / "real"


def snow(task: str) -> tuple[pd.DataFrame, pd.Series]:
    """Snow et al. (2008) RTE / TEMP / WSD judgments with the expert gold labels."""
    data = pd.read_csv(
        REAL / f"bayesian_combination_tutorial2/all_collected_data/{task}.standardized.tsv", sep="\t", dtype=str
    )
    frame = pd.DataFrame(
        {"item_id": data["orig_id"], "annotator_id": data["!amt_worker_ids"], "label": data["response"]}
    )
    gold = data.drop_duplicates("orig_id").set_index("orig_id")["gold"]
    return frame, gold


def bluebirds() -> tuple[pd.DataFrame, pd.Series]:
    """Welinder et al. (2010) bluebirds: 39 workers x 108 images, binary."""
    labels = yaml.safe_load((REAL / "cubam/demo/bluebirds/labels.yaml").read_text())
    truth = yaml.safe_load((REAL / "cubam/demo/bluebirds/gt.yaml").read_text())
    frame = pd.DataFrame(
        [(str(item), str(worker), str(label)) for worker, answers in labels.items() for item, label in answers.items()],
        columns=["item_id", "annotator_id", "label"],
    )
    return frame, pd.Series({str(k): str(v) for k, v in truth.items()})


def kscgr(inclusive: bool = False) -> pd.DataFrame:
    """The two KSCGR annotators' boxes (x, y, w, h in pixels), one item per video frame."""
    frames = []
    for name in ("annotator_1", "annotator_2"):
        data = pd.read_csv(
            REAL / f"dataset-annotation/KSCGR/agreement/{name}.txt",
            sep="\t",
            skiprows=1,
            header=None,
            names=["frame", "label", "points", "box_id", "path"],
            dtype=str,
        )
        data = data[
            data["points"].str.fullmatch(r"\(\d+,\d+,\d+,\d+\)", na=False)
        ]  # drops the '---' / 'Modified on' trailer
        xywh = data["points"].str.strip("()").str.split(",", expand=True).astype(float)
        frames.append(
            pd.DataFrame(
                {
                    "item_id": data["frame"],
                    "annotator_id": name,
                    "label": data["label"],
                    "x": xywh[0],
                    "y": xywh[1],
                    "w": xywh[2] + inclusive,
                    "h": xywh[3] + inclusive,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)
