"""The Label Studio labeling config of a guideline version.

Label Studio validates imported pre-annotations against the project's config: every result's
``from_name``/``to_name`` must name a control of the config and every label must be one of that
control's values. The task files and the config are therefore derived from the same `Control` list, so
a project built from this config accepts the outbox's task files. The control names are the ones the
project's exports already use (``label``, ``polygon``, ``scene`` on ``image``), so answers read the same
whether they come from an old project or a new one.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from labelops.guidelines import Guideline

IMAGE = "image"  # the object tag's name: every result's to_name
MEDIA_FIELD = "image"  # the task data field holding the media URI (the Image tag's value is $image)
SCENE_REQUIRED = "Pick the scene: every image has one, and an answer without it would leave the item waiting."


@dataclass(frozen=True)
class Control:
    """A control tag: its name is a result's ``from_name``, its type a result's ``type``."""

    name: str
    tag: str
    result_type: str
    geometry: str
    labels: tuple[str, ...]


# One control per geometry, in the order labelers see them.
CONTROL_SPECS = (
    ("label", "RectangleLabels", "rectanglelabels", "bbox"),
    ("polygon", "PolygonLabels", "polygonlabels", "polygon"),
    ("scene", "Choices", "choices", "classification"),
)


def controls(guideline: Guideline) -> tuple[Control, ...]:
    """The controls of ``guideline``, each with the classes whose geometry it draws (empty ones left out)."""
    found = []
    for name, tag, result_type, geometry in CONTROL_SPECS:
        labels = tuple(c.name for c in guideline.classes.values() if geometry in c.geometry)
        if labels:
            found.append(Control(name, tag, result_type, geometry, labels))
    return tuple(found)


def labeling_config(guideline: Guideline) -> bytes:
    """The ``<View>`` XML of ``guideline``, built as an element tree so class names are escaped, never spliced."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", {"name": IMAGE, "value": f"${MEDIA_FIELD}", "zoom": "true"})
    for control in controls(guideline):
        attributes = {"name": control.name, "toName": IMAGE}
        if control.tag == "Choices":  # every image has a scene: Label Studio refuses a submission without one
            attributes.update(choice="single", showInline="true", required="true", requiredMessage=SCENE_REQUIRED)
        element = ET.SubElement(view, control.tag, attributes)
        child = "Choice" if control.tag == "Choices" else "Label"
        for label in control.labels:
            ET.SubElement(element, child, {"value": label})
    ET.indent(view)
    return ET.tostring(view, encoding="utf-8", xml_declaration=False) + b"\n"
