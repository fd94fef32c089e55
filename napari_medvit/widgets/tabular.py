"""Tabular input panel (for DAFT): one field per feature, missing toggles, or a row of a CSV file."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from magicgui.widgets import CheckBox, Container, FileEdit, FloatSpinBox, Label, PushButton, SpinBox

_MISSING_TEXT = {"", "na", "nan", "none", "null", "?"}


def read_csv_row(path: str | Path, row: int, names: Sequence[str] | None = None) -> dict[str, float | None]:
    """Row ``row`` (0 = first data row) of a CSV file with a header, as name -> number or None.

    Only the columns in ``names`` (all when None) are read; other columns, such as a case id,
    may hold anything."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{Path(path).name}: no data rows under the header")
    if not 0 <= row < len(rows):
        raise ValueError(f"{Path(path).name}: row {row} does not exist (it has {len(rows)} data rows)")
    out: dict[str, float | None] = {}
    for name, text in rows[row].items():
        if names is not None and name not in names:
            continue
        text = (text or "").strip()
        if text.lower() in _MISSING_TEXT:
            out[name] = None
            continue
        try:
            out[name] = float(text)
        except ValueError:
            raise ValueError(f"{Path(path).name}, row {row}: {name} = {text!r} is not a number") from None
    return out


class TabularPanel(Container):
    """Fields generated from a feature list (name, unit, default, optional missing indicator)."""

    def __init__(self, features: Sequence[Mapping[str, Any]]) -> None:
        super().__init__(labels=True)
        self.features = list(features)
        self.fields: dict[str, FloatSpinBox] = {}
        self.missing: dict[str, CheckBox] = {}
        for f in self.features:
            field = FloatSpinBox(label=f["name"], value=float(f.get("default", 0.0)), min=-1e9, max=1e9, step=0.1,
                                 tooltip=f.get("unit", ""))
            self.fields[f["name"]] = field
            self.append(field)
            if f.get("missing"):
                box = CheckBox(text=f"{f['name']} missing", value=False)
                box.changed.connect(lambda v, fld=field: setattr(fld, "enabled", not v))
                self.missing[f["name"]] = box
                self.append(box)
        self.csv_file = FileEdit(label="CSV", mode="r", filter="*.csv", value="")
        self.csv_row = SpinBox(label="row", min=0, max=1_000_000, value=0)
        self.load_button = PushButton(text="Load row")
        self.message = Label(value="")
        self.extend([self.csv_file, self.csv_row, self.load_button, self.message])
        self.load_button.changed.connect(self.load_csv_row)

    def values(self) -> dict[str, float | None]:
        return {name: (None if name in self.missing and self.missing[name].value else float(field.value))
                for name, field in self.fields.items()}

    def set_values(self, values: Mapping[str, float | None]) -> None:
        for name, value in values.items():
            if name in self.fields:
                missing = value is None or (isinstance(value, float) and math.isnan(value))
                if name in self.missing:
                    self.missing[name].value = missing
                if not missing:
                    self.fields[name].value = float(value)  # type: ignore[arg-type]

    def load_csv_row(self, *_: Any) -> None:
        path = str(self.csv_file.value or "")
        if not path or path == ".":
            self.message.value = "choose a CSV file first"
            return
        try:
            row = read_csv_row(path, int(self.csv_row.value), names=list(self.fields))
        except (OSError, ValueError) as exc:
            self.message.value = str(exc)
            return
        known = {k: v for k, v in row.items() if k in self.fields}
        self.set_values(known)
        self.message.value = f"loaded {len(known)} of {len(self.fields)} features from row {self.csv_row.value}"
