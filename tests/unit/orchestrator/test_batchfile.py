"""Reading batches from CSV and JSON, every problem tied to its line."""

from __future__ import annotations

import json

import pytest

from orchestrator.batchfile import api_errors, parse_batch


def messages(batch) -> list[str]:
    return [str(error) for error in batch.errors]


def test_csv_with_a_pedido_input_column():
    batch = parse_batch(b'orderId,pedidoInput\nA-1,"{""ciudad"": ""Cali"", ""n"": 2}"\n', "o.csv")
    assert batch.errors == []
    assert batch.orders == [{"orderId": "A-1", "pedidoInput": {"ciudad": "Cali", "n": 2}}]
    assert batch.lines == [2]


@pytest.mark.parametrize("separator", [",", ";", "\t"])
def test_csv_with_one_column_per_field(separator):
    text = "\n".join(
        separator.join(row) for row in [["orderId", "ciudad", "peso"], ["B-1", "Cali", "1.5"]]
    )
    batch = parse_batch(text + "\n", "o.csv")
    assert batch.orders == [{"orderId": "B-1", "pedidoInput": {"ciudad": "Cali", "peso": "1.5"}}]


def test_csv_lines_count_blank_lines_and_quoted_line_breaks():
    text = 'orderId,nota\n\nC-1,"two\nlines"\n,x\nC-3,y,z\n'
    batch = parse_batch(text.encode(), "o.csv")
    assert messages(batch) == ["line 5: orderId is empty", "line 6: expected 2 cells, found 3"]
    assert batch.lines == [3]


def test_excel_bom_and_non_utf8():
    assert parse_batch(b"\xef\xbb\xbforderId,x\nD-1,1\n", "o.csv").orders == [
        {"orderId": "D-1", "pedidoInput": {"x": "1"}}
    ]
    batch = parse_batch(b"orderId,x\nD-1,caf\xe9\n", "o.csv")
    assert messages(batch) == ["line 2: the file is not UTF-8 text"]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("id,pedidoInput", "the header needs an orderId column; found 'id', 'pedidoInput'"),
        ("orderId,x,x", "the header names a column twice: x"),
        ("orderId,,x", "the header has a column without a name"),
        ("orderId,pedidoInput,x", "with a pedidoInput column there can be no other field"),
        ("orderId", "the header has only orderId"),
    ],
)
def test_csv_header_problems_are_on_line_1(header, problem):
    [error] = parse_batch(f"{header}\nE-1,1,2\n", "o.csv").errors
    assert error.line == 1 and error.message.startswith(problem)


def test_csv_row_problems():
    text = 'orderId,pedidoInput\nF-1,{}\nF-2,"[1]"\nF-3,{nope\nF-1,{}\n' + "G" * 101 + ",{}\n"
    assert messages(parse_batch(text, "o.csv")) == [
        "line 3: pedidoInput must be a JSON object ({...})",
        "line 4: pedidoInput is not valid JSON: Expecting property name enclosed in double quotes",
        "line 5: orderId 'F-1' repeats line 2",
        "line 6: orderId is longer than 100 characters",
    ]


def test_empty_files():
    assert messages(parse_batch("", "o.csv")) == ["the file is empty: it needs a header row"]
    assert messages(parse_batch("orderId,x\n", "o.csv")) == [
        "line 1: the file has a header but no orders"
    ]
    assert messages(parse_batch('{"orders": []}', "o.json")) == ["the file has no orders"]


def test_json_object_or_bare_list():
    order = {"orderId": "H-1", "pedidoInput": {"a": [1, 2]}}
    assert parse_batch('{"orders": [{"orderId": "H-1", "pedidoInput": {"a": [1, 2]}}]}').orders == [
        order
    ]
    assert parse_batch('[{"orderId": "H-1", "pedidoInput": {"a": [1, 2]}}]').orders == [order]


def test_json_problems():
    assert messages(parse_batch('{"orders": [\n  {"orderId": 1,}\n]}', "o.json")) == [
        "line 2: invalid JSON: Expecting property name enclosed in double quotes (column 17)"
    ]
    text = (
        '[{"orderId": "I-1", "pedidoInput": {}}, 7, {"orderId": "", "pedidoInput": []},'
        ' {"orderId": "I-1", "pedidoInput": {}, "extra": 1}, {"orderId": "I-1", "pedidoInput": {}}]'
    )
    assert messages(parse_batch(text)) == [
        "order #2: must be an object",
        "order #3: orderId is empty",
        "order #3: pedidoInput must be a JSON object ({...})",
        "order #4 (I-1): unknown field 'extra'",
        "order #5: orderId 'I-1' repeats order #1",
    ]
    assert messages(parse_batch('{"jobs": []}')) == [
        'the JSON must be {"orders": [...]} or a list of orders'
    ]


def test_api_errors_point_at_the_lines():
    batch = parse_batch("orderId,x\nJ-1,1\nJ-2,2\n", "o.csv")
    details = {"orders": {"1": {"orderId": ["too odd"]}}, "Idempotency-Key": ["too long"]}
    assert api_errors(batch, details) == [
        "line 3: orderId: too odd",
        "Idempotency-Key: too long",
    ]
    assert api_errors(batch, {"orders": ["must contain 1 to 5 orders"]}) == [
        "orders: must contain 1 to 5 orders"
    ]


DEEP = 50_000


def test_json_nested_too_deeply_is_a_problem_not_a_crash():
    batch = parse_batch("[" * DEEP + "]" * DEEP)
    assert [str(e) for e in batch.errors] == ["the JSON is nested too deeply to read"]
    deep_order = '{"orders": [{"orderId": "A", "pedidoInput": ' + '{"a": ' * DEEP + "1" + "}" * DEEP
    assert [str(e) for e in parse_batch(deep_order + "}]}").errors] == [
        "the JSON is nested too deeply to read"
    ]


def test_a_csv_cell_nested_too_deeply_names_its_line():
    cell = '"' + "[" * DEEP + "]" * DEEP + '"'
    batch = parse_batch(f"orderId,pedidoInput\nA,{{}}\nB,{cell}\n", "deep.csv")
    assert [str(e) for e in batch.errors] == ["line 3: pedidoInput is nested too deeply to read"]


@pytest.mark.parametrize(
    "character", ["\x85", "\x9b", "\u2028", "\u2029", "\u202a", "\u202e", "\u2066", "\u2069"]
)
def test_order_ids_with_c1_controls_separators_or_bidi_overrides_are_refused(character):
    batch = parse_batch(json.dumps([{"orderId": f"ORD{character}1", "pedidoInput": {}}]))
    assert len(batch.errors) == 1
    assert "control character, line separator or bidirectional override" in str(batch.errors[0])


@pytest.mark.parametrize("number", ["1e400", "-1e400", "1" + "0" * 400])
def test_a_number_no_double_holds_is_a_problem_of_its_line(number):
    """CONTRACT §3: ``1e400`` in pedidoInput is refused, in a CSV cell and in a JSON file."""
    csv_batch = parse_batch(f'orderId,pedidoInput\nA-1,"{{""x"": {number}}}"\n', "o.csv")
    assert csv_batch.orders == []
    assert messages(csv_batch) == [
        "line 2: pedidoInput: a number does not fit a double (64-bit float) at x"
    ]
    document = f'{{"orders": [{{"orderId": "A-1", "pedidoInput": {{"y": [1, {number}]}}}}]}}'
    json_batch = parse_batch(document, "o.json")
    assert json_batch.orders == []
    assert messages(json_batch) == [
        "a number does not fit a double (64-bit float) at orders.0.pedidoInput.y.1"
    ]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_non_json_constants_are_a_problem_not_a_crash(constant):
    batch = parse_batch(f'[{{"orderId": "A", "pedidoInput": {{"x": {constant}}}}}]', "o.json")
    assert batch.orders == [] and len(batch.errors) == 1
    cell = parse_batch(f'orderId,pedidoInput\nA-1,"{{""x"": {constant}}}"\n', "o.csv")
    assert cell.orders == [] and messages(cell)[0].startswith("line 2: pedidoInput is not valid")


def test_the_largest_and_smallest_doubles_are_kept():
    batch = parse_batch('[{"orderId": "A", "pedidoInput": {"x": 1.7e308, "y": 1e-400}}]', "o.json")
    assert batch.orders == [{"orderId": "A", "pedidoInput": {"x": 1.7e308, "y": 0.0}}]
