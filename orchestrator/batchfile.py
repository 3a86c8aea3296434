"""Read a batch of orders from CSV or JSON text, with every problem tied to its line.

CSV: a header row with ``orderId`` and either one ``pedidoInput`` column holding a JSON object,
or one column per field of ``pedidoInput`` (the cells are kept as text, as typed). Commas,
semicolons or tabs separate the cells. JSON: ``{"orders": [...]}`` or a bare list of orders.
The job API checks the same rules again; this module exists so that the CLI and the dashboard
can say *where* a file is wrong.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from . import jsonvalues
from .text import has_unsafe_characters

MAX_ORDER_ID = 100
TOO_DEEP = "is nested too deeply to read"


@dataclass(frozen=True)
class RowError:
    """One problem, at a line of the file (None when the format gives no line)."""

    line: int | None
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}" if self.line is not None else self.message


@dataclass
class Batch:
    """The orders read, the line each starts on, and every problem found."""

    orders: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int | None] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    places: list[str] = field(default_factory=list)  # "line 7" or "order #3", per order

    def add(self, order: dict[str, Any], line: int | None, position: int) -> None:
        self.orders.append(order)
        self.lines.append(line)
        self.places.append(f"line {line}" if line is not None else f"order #{position + 1}")

    def where(self, index: int) -> str:
        """Name the order at ``index`` of ``orders`` for a person: its line, else its position."""
        return self.places[index] if 0 <= index < len(self.places) else f"order #{index + 1}"


def parse_batch(data: bytes | str, filename: str | None = None) -> Batch:
    """Read CSV or JSON (by the file name's extension, else by the first character)."""
    if isinstance(data, bytes):
        data = data.removeprefix(codecs.BOM_UTF8)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            return Batch(errors=[RowError(line, "the file is not UTF-8 text")])
    else:
        text = data.removeprefix("\ufeff")
    name = (filename or "").lower()
    if name.endswith(".json"):
        return parse_json(text)
    if name.endswith((".csv", ".tsv", ".txt")):
        return parse_csv(text)
    return parse_json(text) if text.lstrip()[:1] in ("{", "[") else parse_csv(text)


def _check_order_id(value: Any) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "orderId is empty"
    if len(value) > MAX_ORDER_ID:
        return f"orderId is longer than {MAX_ORDER_ID} characters"
    if has_unsafe_characters(value):
        return "orderId contains a control character, line separator or bidirectional override"
    return None


def _finish(batch: Batch) -> Batch:
    """Flag repeated orderIds and an empty batch."""
    first: dict[str, int] = {}
    for index, order in enumerate(batch.orders):
        order_id = order["orderId"]
        if order_id in first:
            message = f"orderId {order_id!r} repeats {batch.where(first[order_id])}"
            line = batch.lines[index]
            if line is None:
                message = f"{batch.where(index)}: {message}"
            batch.errors.append(RowError(line, message))
        else:
            first[order_id] = index
    if not batch.orders and not batch.errors:
        batch.errors.append(RowError(None, "the file has no orders"))
    batch.errors.sort(key=lambda e: (e.line is None, e.line or 0))
    return batch


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def parse_csv(text: str) -> Batch:
    """Read orders from CSV text; see the module's docstring for the two layouts."""
    batch = Batch()
    first_line = text.lstrip("\r\n").split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(first_line))
    header: list[str] | None = None
    header_line = 0
    line = 1  # the line the current record starts on
    try:
        for row in reader:
            start, line = line, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header, header_line = [cell.strip() for cell in row], start
                problem = _check_header(header)
                if problem:
                    batch.errors.append(RowError(start, problem))
                    return batch
                continue
            if len(row) != len(header):
                batch.errors.append(
                    RowError(start, f"expected {len(header)} cells, found {len(row)}")
                )
                continue
            order = _csv_order(dict(zip(header, row, strict=True)), start, batch)
            if order is not None:
                batch.add(order, start, len(batch.orders))
    except csv.Error as exc:
        batch.errors.append(RowError(reader.line_num, f"unreadable CSV: {exc}"))
        return batch
    if header is None:
        batch.errors.append(RowError(None, "the file is empty: it needs a header row"))
        return batch
    if not batch.orders and not batch.errors:
        batch.errors.append(RowError(header_line, "the file has a header but no orders"))
    return _finish(batch)


def _check_header(header: list[str]) -> str | None:
    if "orderId" not in header:
        found = ", ".join(repr(h) for h in header)
        return f"the header needs an orderId column; found {found}"
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        return f"the header names a column twice: {', '.join(repeated)}"
    if "" in header:
        return "the header has a column without a name"
    if "pedidoInput" in header and len(header) > 2:
        others = ", ".join(h for h in header if h not in ("orderId", "pedidoInput"))
        return f"with a pedidoInput column there can be no other field columns (found {others})"
    if len(header) == 1:
        return "the header has only orderId: add a pedidoInput column or one column per field"
    return None


def _csv_order(cells: dict[str, str], line: int, batch: Batch) -> dict[str, Any] | None:
    order_id = cells.pop("orderId")
    problem = _check_order_id(order_id)
    if problem:
        batch.errors.append(RowError(line, problem))
        return None
    if "pedidoInput" not in cells:
        return {"orderId": order_id, "pedidoInput": cells}
    try:
        pedido = jsonvalues.loads(cells["pedidoInput"])
    except jsonvalues.NumberOutOfRange as exc:
        batch.errors.append(RowError(line, f"pedidoInput: {exc}"))
        return None
    except json.JSONDecodeError as exc:
        batch.errors.append(RowError(line, f"pedidoInput is not valid JSON: {exc.msg}"))
        return None
    except ValueError as exc:  # NaN, Infinity, an integer of thousands of digits
        batch.errors.append(RowError(line, f"pedidoInput is not valid JSON: {exc}"))
        return None
    except RecursionError:
        batch.errors.append(RowError(line, f"pedidoInput {TOO_DEEP}"))
        return None
    if not isinstance(pedido, dict):
        batch.errors.append(RowError(line, "pedidoInput must be a JSON object ({...})"))
        return None
    return {"orderId": order_id, "pedidoInput": pedido}


def parse_json(text: str) -> Batch:
    """Read orders from ``{"orders": [...]}`` or a bare JSON list."""
    batch = Batch()
    try:
        document = jsonvalues.loads(text)
    except jsonvalues.NumberOutOfRange as exc:
        batch.errors.append(RowError(None, str(exc)))
        return batch
    except json.JSONDecodeError as exc:
        batch.errors.append(RowError(exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})"))
        return batch
    except ValueError as exc:  # NaN, Infinity, an integer of thousands of digits
        batch.errors.append(RowError(None, f"invalid JSON: {exc}"))
        return batch
    except RecursionError:
        batch.errors.append(RowError(None, f"the JSON {TOO_DEEP}"))
        return batch
    if isinstance(document, dict):
        extra = sorted(set(document) - {"orders"})
        if extra or "orders" not in document:
            batch.errors.append(
                RowError(None, 'the JSON must be {"orders": [...]} or a list of orders')
            )
            return batch
        document = document["orders"]
    if not isinstance(document, list):
        batch.errors.append(RowError(None, "the orders must be a JSON list"))
        return batch
    for index, order in enumerate(document):
        where = f"order #{index + 1}"
        if not isinstance(order, dict):
            batch.errors.append(RowError(None, f"{where}: must be an object"))
            continue
        if isinstance(order.get("orderId"), str) and order["orderId"]:
            where += f" ({order['orderId'][:MAX_ORDER_ID]})"
        unknown = sorted(set(order) - {"orderId", "pedidoInput"})
        problems = [f"unknown field {name!r}" for name in unknown]
        problem = _check_order_id(order.get("orderId"))
        if problem:
            problems.append(problem)
        if not isinstance(order.get("pedidoInput"), dict):
            problems.append("pedidoInput must be a JSON object ({...})")
        if problems:
            batch.errors.extend(RowError(None, f"{where}: {p}") for p in problems)
            continue
        batch.add({"orderId": order["orderId"], "pedidoInput": order["pedidoInput"]}, None, index)
    return _finish(batch)


def api_errors(batch: Batch, details: dict[str, Any]) -> list[str]:
    """Turn the job API's 422 ``details`` ({"orders": {index: {field: [...]}}}) into lines."""
    messages: list[str] = []
    orders = details.get("orders")
    if isinstance(orders, dict):
        for index, fields in sorted(orders.items(), key=lambda kv: _as_int(kv[0])):
            where = batch.where(_as_int(index))
            if isinstance(fields, dict):
                for name, problems in fields.items():
                    messages.append(f"{where}: {name}: {_join(problems)}")
            else:
                messages.append(f"{where}: {_join(fields)}")
    elif orders is not None:
        messages.append(f"orders: {_join(orders)}")
    for name, problems in details.items():
        if name != "orders":
            messages.append(f"{name}: {_join(problems)}")
    return messages


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _join(problems: Any) -> str:
    if isinstance(problems, list):
        return "; ".join(str(p) for p in problems)
    return str(problems)
