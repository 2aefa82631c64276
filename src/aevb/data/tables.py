"""CSV tables -> RawDataset: numeric columns, optional header, optional label column.

A first row with a field that is neither a number nor a missing-entry marker (empty, NA, ...) is
a header. ``label_column`` (a header name or a 0-based column index; by default a header column
named label, target or class, with a notice; "none" for no label column) is taken out of the data; its values become integer labels (numbers as
they are, other strings as indices into their sorted distinct values, kept as ``label_names``).
Every other field must be a finite number (or, with data.missing = mask, a missing-entry marker:
NaN) and every row must have the same number of fields.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from aevb.data.bundled import RawDataset
from aevb.data.excerpt import excerpt
from aevb.data.user import infer_range

MISSING_FIELDS = ("", "nan", "na", "n/a", "null", "?")  # missing entries under data.missing = mask


def _is_number(field: str) -> bool:
    try:
        float(field)
        return True
    except ValueError:
        return False


LABEL_NAMES = ("label", "target", "class")  # a header column named so is the label unless told otherwise


def _label_index(label_column: str, header: list[str] | None, num_columns: int, path: Path) -> int | None:
    if label_column == "none":
        return None
    if label_column == "":
        columns = header or []
        named = [j for j, h in enumerate(columns) if h.strip().lower() in LABEL_NAMES]
        if len(named) > 1:
            raise ValueError(f"{path}: columns {', '.join(repr(columns[j]) for j in named)} all look like labels; say "
                             "which with --set data.label_column=NAME (or data.label_column=none to keep them as data)")
        if named:
            print(f"notice: {path}: column {columns[named[0]]!r} is taken as the label, not as data "
                  "(--set data.label_column=none keeps it as a data column)", file=sys.stderr)
            return named[0]
        return None
    if header is not None and label_column in header:
        return header.index(label_column)
    if label_column.lstrip("-").isdigit():
        index = int(label_column)
        if -num_columns <= index < num_columns:
            return index % num_columns
    shown = ", ".join(excerpt(h) for h in header[:10]) + (f", ... ({len(header)} in all)" if len(header) > 10 else "") \
        if header else ""
    names = f"columns {shown}" if header else f"{num_columns} unnamed columns (no header)"
    raise ValueError(f"{path}: data.label_column = {label_column!r} is neither a column name nor an index; "
                     f"the file has {names}")


def read_rows(path: Path) -> tuple[list[str] | None, list[tuple[int, list[str]]]]:
    """(header or None, [(line number, fields)]) with equal field counts, blank lines skipped."""
    dialect = "excel-tab" if path.suffix.lower() == ".tsv" else "excel"
    with open(path, newline="") as f:
        rows = [(n, [v.strip() for v in row]) for n, row in enumerate(csv.reader(f, dialect), 1) if any(v.strip() for v in row)]
    if not rows:
        raise ValueError(f"{path}: the file is empty; expected one example per row of numbers")
    header = None
    if not all(_is_number(v) or v.lower() in MISSING_FIELDS for v in rows[0][1]):  # a header has a name in it
        header, rows = rows[0][1], rows[1:]
        if not rows:
            raise ValueError(f"{path}: only a header line, no data rows")
    width = len(header) if header else len(rows[0][1])
    for line, fields in rows:
        if len(fields) != width:
            raise ValueError(f"{path}, line {line}: {len(fields)} fields, expected {width} "
                             f"({'as in the header' if header else 'as in the first row'}); every row needs the same columns")
    return header, rows


def read_csv(path: Path, label_column: str = "", missing: bool = False) -> RawDataset:
    """Read a numeric CSV (see the module docstring). Returns x (N, D) float64 and labels or None.

    With ``missing`` (data.missing = mask) an empty field or NaN/NA/N/A/null/? (any case) is a
    missing entry, read as NaN; otherwise it is an error naming the line and column.
    """
    header, rows = read_rows(path)
    width = len(rows[0][1])
    label = _label_index(str(label_column), header, width, path)
    keep = [j for j in range(width) if j != label]
    x = np.empty((len(rows), len(keep)), np.float64)
    for i, (line, fields) in enumerate(rows):
        for k, j in enumerate(keep):
            if missing and fields[j].lower() in MISSING_FIELDS:
                x[i, k] = np.nan
                continue
            try:
                value = float(fields[j])
            except ValueError:
                value = None
            if value is None or not np.isfinite(value):
                col = f"column {j + 1}" + (f" ({excerpt(header[j])})" if header else "")
                what = "not a number" if value is None else "not finite (NaN/inf are not data)"
                hint = "" if missing else " (or mark missing entries with --set data.missing=mask)"
                raise ValueError(f"{path}, line {line}, {col}: {excerpt(fields[j])} is {what}; expected a finite number{hint}")
            x[i, k] = value
    y, names = None, None
    if label is not None:
        raw_labels = [fields[label] for _, fields in rows]
        if all(_is_number(v) and float(v).is_integer() for v in raw_labels):
            y = np.array([int(float(v)) for v in raw_labels], np.int64)
        else:
            names = sorted(set(raw_labels))
            y = np.array([names.index(v) for v in raw_labels], np.int64)
    if x.shape[1] == 0:
        raise ValueError(f"{path}: no data columns left after taking out the label column")
    features = [header[j] for j in keep] if header else None
    return RawDataset(x, y, (x.shape[1],), source=f"CSV table {path}", label_names=names, feature_names=features,
                      **infer_range(x))
