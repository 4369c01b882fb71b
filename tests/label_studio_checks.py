"""What Label Studio checks of a labeling config and of pre-annotations, as far as this project's files go.

Label Studio 1.23's prediction validation (on with ``fflag_feat_utc_210_prediction_validation_15082025``)
refuses a whole import when one result names a control or object the project's config lacks, has another
type than its control, or a label the control does not list. The e2e test checks the same against the real
server (tests/test_label_studio_e2e.py).
"""

from __future__ import annotations

from defusedxml import ElementTree


def config_controls(xml: bytes) -> dict[str, tuple[str, str, list[str]]]:
    """Each control of a labeling config: result type, toName and values, as Label Studio reads them."""
    root = ElementTree.fromstring(xml)
    assert root.tag == "View"
    return {
        c.get("name"): (c.tag.lower(), c.get("toName"), [v.get("value") for v in c])
        for c in root
        if c.tag in ("RectangleLabels", "PolygonLabels", "Choices")
    }


def invalid_results(tasks: list[dict], xml: bytes) -> list[str]:
    """Label Studio's prediction validation, as far as this project's results go: control, object, type, label."""
    controls = config_controls(xml)
    image = ElementTree.fromstring(xml).find("Image").get("name")
    problems = []
    for task in tasks:
        for prediction in task.get("predictions", []):
            for r in prediction["result"]:
                kind, to_name, values = controls.get(r["from_name"], (None, None, []))
                labels = r["value"].get(r["type"], [])
                if (
                    kind != r["type"]
                    or r["to_name"] != to_name
                    or to_name != image
                    or not labels
                    or set(labels) - set(values)
                ):
                    problems.append(f"{task['data']['item_id']}: {r['from_name']}/{r['type']}/{labels}")
                if r["type"] == "rectanglelabels":
                    v = r["value"]
                    if not (
                        0 <= v["x"]
                        and 0 <= v["y"]
                        and v["x"] + v["width"] <= 100 + 1e-9
                        and v["y"] + v["height"] <= 100 + 1e-9
                    ):
                        problems.append(f"{task['data']['item_id']}: box outside the image {v}")
    return problems
