"""The landing zone's layout, and the readers for its item, gold and production files.

```
exports/YYYY-MM-DD/…     annotation exports, one file (or YOLO folder) per export
items/YYYY-MM-DD/…       item metadata
gold/…                   gold labels; undated files hold for every day, gold/YYYY-MM-DD/ from that day on
production/YYYY-MM-DD/…  model inference logs
```
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class ExportUnit:
    """One export: a single file, or a folder of files read together (YOLO)."""

    name: str  # key relative to the landing root
    keys: tuple[str, ...]

    @property
    def is_folder(self) -> bool:
        return len(self.keys) != 1 or self.keys[0] != self.name


def day_keys(all_keys: list[str], area: str, day: str) -> list[str]:
    prefix = f"{area}/{day}/"
    return sorted(k for k in all_keys if k.startswith(prefix))


def export_units(keys: list[str], day: str, *, folder_markers: tuple[str, ...]) -> list[ExportUnit]:
    """Group a day's export keys into units.

    A sub-folder that holds a YOLO class list is one export; any other sub-folder
    is just a way of filing single exports.
    """
    prefix = f"exports/{day}/"
    folders: dict[str, list[str]] = {}
    for key in keys:
        relative = key[len(prefix) :]
        top = relative.split("/", 1)[0]
        if "/" in relative:
            folders.setdefault(prefix + top, []).append(key)
    units: list[ExportUnit] = []
    grouped: set[str] = set()
    for folder, members in folders.items():
        if any(posixpath.basename(k).lower() in folder_markers for k in members):
            units.append(ExportUnit(name=folder, keys=tuple(sorted(members))))
            grouped.update(members)
    units.extend(ExportUnit(name=k, keys=(k,)) for k in keys if k not in grouped)
    return sorted(units, key=lambda u: u.name)


def gold_keys(all_keys: list[str], day: str) -> list[str]:
    """Gold files in force on ``day``: undated ones, and dated folders up to that day."""
    chosen = []
    for key in all_keys:
        if not key.startswith("gold/"):
            continue
        parts = key.split("/")
        if len(parts) > 2 and DAY.match(parts[1]):
            if parts[1] <= day:
                chosen.append(key)
        else:
            chosen.append(key)
    return sorted(chosen)
