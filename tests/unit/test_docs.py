"""Facts of the documentation that cannot drift from the code (docs/development.md).

Three checks, each a small function tested on a bad sample first (a check that cannot fail
is a defect), then run on the real tree:

* every environment variable the code reads has a row in docs/configuration.md, and every row
  there names a variable something reads;
* every route of the app's API is in the OpenAPI document that ``GET /openapi.json`` serves,
  and the document names no route the app lacks;
* every internal link of README.md, CHANGELOG.md, bench/README.md and docs/*.md points at a
  file (and heading) that exists.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import config
from orchestrator.config import settings_from_mapping
from webapp import create_app

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION_PAGE = ROOT / "docs" / "configuration.md"

# Where the scan looks for environment reads: the product, the local kit, the migrations,
# the benchmarks and the tests (whose variables are documented too). This file is left out:
# its bad samples are not reads.
SCANNED = ("orchestrator", "webapp", "migrations", "bench", "tests", "celeryconfig.py")
# The product's own source: a documented name it holds as a string counts as read (it may be
# read through a loop or a table the scan does not follow).
PRODUCT = ("orchestrator", "webapp", "migrations", "celeryconfig.py")
# Read by programs and libraries the processes run rather than by this code, documented all
# the same: a name, or a prefix ending in "_" for a library's family (OpenTelemetry's SDK reads
# every OTEL_* variable itself).
READ_BY_OTHERS = ("FLOWER_BASIC_AUTH", "OTEL_")
# Read by the code, but not configuration: the system's own, or a value one test process
# hands to another.
NOT_CONFIGURATION = {"PATH", "HOME", "FAULT_HOOK_DIR"}

# A documented variable: a backticked name in a table row's first cell; `<N>` (any upper-case
# word in angle brackets) stands for a part built from a name, e.g. `ROBOT_<N>_URL`.
DOCUMENTED = re.compile(r"\|\s*`([A-Z][A-Z0-9_]*(?:<[A-Z]+>[A-Z0-9_]*)*)`\s*\|")
PLACEHOLDER = re.compile(r"<[A-Z]+>")


# --- 1. Environment variables -----------------------------------------------------------------


@dataclass
class EnvReads:
    """What a scan of the source found: names read, templates read, string fragments seen."""

    names: set[str] = field(default_factory=set)
    templates: set[str] = field(default_factory=set)  # f-strings, each field written {}
    fragments: set[str] = field(default_factory=set)  # every string constant of the source


def _is_environ(node: ast.expr) -> bool:
    """Say whether an expression is the environment (``os.environ``, ``environ``, ``env``)."""
    if isinstance(node, ast.Attribute):
        return node.attr == "environ"
    return isinstance(node, ast.Name) and node.id in ("environ", "env")


def _key_of_read(node: ast.AST) -> ast.expr | None:
    """Return the key expression if the node reads the environment, else None."""
    if isinstance(node, ast.Call):
        func = node.func
        if not node.args:
            return None
        if isinstance(func, ast.Attribute) and func.attr == "get" and _is_environ(func.value):
            return node.args[0]
        if (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
            isinstance(func, ast.Name) and func.id == "getenv"
        ):
            return node.args[0]
    if (
        isinstance(node, ast.Subscript)
        and isinstance(node.ctx, ast.Load)
        and _is_environ(node.value)
    ):
        return node.slice
    return None


def _template(node: ast.JoinedStr) -> str:
    return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)


def scan_env_reads(sources: Iterable[str]) -> EnvReads:
    """Find the environment variables some source reads.

    Seen: ``os.environ.get("X")``, ``os.environ["X"]``, ``getenv("X")``, a module constant
    holding the name (``NAME = "X"`` … ``environ.get(NAME)``), click's ``envvar="X"``, an
    f-string (``environ.get(f"ROBOT_{name}_URL")``, kept as the template ``ROBOT_{}_URL``), and
    a helper that reads the variable its parameter names (``def limit(app, name): …
    environ.get(name)`` … ``limit(app, "X")``).
    """
    trees = [ast.parse(source) for source in sources]
    found = EnvReads()
    helpers: dict[str, int] = {}  # function name → position of the parameter it reads
    for tree in trees:
        constants = {
            target.id: node.value.value
            for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            for target in node.targets
            if isinstance(target, ast.Name) and isinstance(node.value.value, str)
        }
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            params = [a.arg for a in function.args.args]
            for node in ast.walk(function):
                key = _key_of_read(node)
                if isinstance(key, ast.Name) and key.id in params:
                    helpers[function.name] = params.index(key.id)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.fragments.add(node.value)
            is_envvar = isinstance(node, ast.keyword) and node.arg == "envvar"
            if is_envvar and isinstance(node.value, ast.Constant):
                found.names.add(str(node.value.value))
            key = _key_of_read(node)
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found.names.add(key.value)
            elif isinstance(key, ast.Name) and key.id in constants:
                found.names.add(constants[key.id])
            elif isinstance(key, ast.JoinedStr):
                found.templates.add(_template(key))
    for tree in trees:
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            position = helpers.get(name or "")
            if position is not None and position < len(node.args):
                arg = node.args[position]
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.names.add(arg.value)
    found.names = {n for n in found.names if re.fullmatch(r"[A-Z][A-Z0-9_]*", n)}
    return found


def documented_variables(markdown: str) -> set[str]:
    """Return the variables named in the first cell of the page's table rows."""
    return {m.group(1) for line in markdown.splitlines() if (m := DOCUMENTED.match(line))}


def _pattern(row: str) -> re.Pattern[str]:
    """Return the regex of a documented row: each `<N>` stands for a name's part."""
    parts = PLACEHOLDER.split(row)
    return re.compile("[A-Z0-9_]+".join(re.escape(p) for p in parts))


def _template_pattern(template: str) -> re.Pattern[str]:
    return re.compile(".+".join(re.escape(p) for p in template.split("{}")))


def _read_by_others(name: str) -> bool:
    return any(name == r or (r.endswith("_") and name.startswith(r)) for r in READ_BY_OTHERS)


def variable_drift(reads: EnvReads, documented: set[str], named: Iterable[str] = ()) -> list[str]:
    """Say which read variables are not documented, and which documented ones nothing reads.

    ``named``: the strings the product's source holds; a documented name among them counts
    as read.
    """
    named = set(named)
    problems = []
    patterns = {row: _pattern(row) for row in documented if PLACEHOLDER.search(row)}
    for name in sorted(reads.names - NOT_CONFIGURATION):
        if name not in documented and not any(p.fullmatch(name) for p in patterns.values()):
            problems.append(f"{name} is read but has no row in docs/configuration.md")
    for template in sorted(reads.templates):
        shown = template.replace("{}", "<…>")
        if not any(_template_pattern(template).fullmatch(row) for row in documented):
            problems.append(f"{shown} is read but no row of docs/configuration.md matches it")
    for row in sorted(documented):
        if row in reads.names or row in named or _read_by_others(row):
            continue
        if row in patterns:
            # Read by pattern: a template or a name the code reads matches it, or the code
            # holds the fixed parts around the placeholders as strings (a name built in steps).
            if any(_template_pattern(t).fullmatch(row) for t in reads.templates) or any(
                patterns[row].fullmatch(name) for name in reads.names
            ):
                continue
            fixed = [p.strip("_") for p in PLACEHOLDER.split(row) if p.strip("_")]
            seen = {f.strip("_") for f in reads.fragments}
            if fixed and all(part in seen for part in fixed):
                continue
        problems.append(f"{row} has a row in docs/configuration.md but nothing reads it")
    return problems


def _sources(entries: Iterable[str] = SCANNED) -> Iterator[str]:
    for entry in entries:
        path = ROOT / entry
        for file in [path] if path.is_file() else sorted(path.rglob("*.py")):
            if file.resolve() != Path(__file__).resolve():
                yield file.read_text()


def test_the_scan_finds_each_way_a_variable_is_read():
    source = """
import os
import click
from os import environ, getenv
MULTIPROC = "SAMPLE_CONSTANT"
a = os.environ.get("SAMPLE_GET", "x")
b = os.environ["SAMPLE_ITEM"]
c = getenv("SAMPLE_GETENV")
d = environ.get(MULTIPROC)
os.environ["SAMPLE_WRITTEN"] = "not a read"
def limit(app, name, default):
    return os.environ.get(name, default)
limit(app, "SAMPLE_HELPER", "1/minute")
def robot(name):
    return os.environ.get(f"SAMPLE_{name.upper()}_URL")
@click.option("--token", envvar="SAMPLE_CLICK")
def cli(token): ...
"""
    reads = scan_env_reads([source])
    assert reads.names == {
        "SAMPLE_GET",
        "SAMPLE_ITEM",
        "SAMPLE_GETENV",
        "SAMPLE_CONSTANT",
        "SAMPLE_HELPER",
        "SAMPLE_CLICK",
    }
    assert reads.templates == {"SAMPLE_{}_URL"}


def test_the_variable_check_fails_on_a_missing_row_and_on_a_row_nothing_reads():
    reads = scan_env_reads(['import os\nos.environ.get("SAMPLE_READ")\nos.environ["SAMPLE_BOTH"]'])
    page = "| variable | meaning |\n| --- | --- |\n| `SAMPLE_BOTH` | x |\n| `SAMPLE_STALE` | y |\n"
    assert variable_drift(reads, documented_variables(page)) == [
        "SAMPLE_READ is read but has no row in docs/configuration.md",
        "SAMPLE_STALE has a row in docs/configuration.md but nothing reads it",
    ]


def test_a_row_counts_as_read_when_the_product_names_it_or_a_library_reads_it():
    reads = scan_env_reads(["import os\nfor name in NAMES:\n    os.environ.get(name)"])
    page = "| `SAMPLE_LOOPED` | a |\n| `OTEL_TRACES_SAMPLER` | b |\n| `FLOWER_BASIC_AUTH` | c |\n"
    documented = documented_variables(page)
    assert variable_drift(reads, documented, named={"SAMPLE_LOOPED"}) == []
    assert variable_drift(reads, documented) == [
        "SAMPLE_LOOPED has a row in docs/configuration.md but nothing reads it"
    ]


def test_a_placeholder_row_covers_the_variables_built_from_its_pattern():
    built = scan_env_reads(['import os\ndef f(n):\n    return os.environ.get(f"SAMPLE_{n}_URL")'])
    in_steps = scan_env_reads(
        [
            'import os\nSUFFIXES = ("URL", "HOURS")\ndef f(n, s):\n'
            '    return os.environ.get("SAMPLE_" + n + "_" + s)'
        ]
    )
    page = "| `SAMPLE_<N>_URL` | a |\n| `SAMPLE_<N>_HOURS` | b |\n"
    documented = documented_variables(page)
    assert documented == {"SAMPLE_<N>_URL", "SAMPLE_<N>_HOURS"}
    assert variable_drift(built, {"SAMPLE_<N>_URL"}) == []
    assert variable_drift(in_steps, documented) == []
    # A pattern row whose parts the code never holds is stale; a template no row matches is
    # undocumented.
    assert variable_drift(built, {"SAMPLE_<N>_URL", "SAMPLE_<N>_COLOUR"}) == [
        "SAMPLE_<N>_COLOUR has a row in docs/configuration.md but nothing reads it"
    ]
    assert variable_drift(built, set()) == [
        "SAMPLE_<…>_URL is read but no row of docs/configuration.md matches it"
    ]
    # A literal name the pattern covers needs no row of its own.
    literal = scan_env_reads(['import os\nos.environ.get("SAMPLE_EAST_URL")'])
    assert variable_drift(literal, {"SAMPLE_<N>_URL"}) == []


def test_every_variable_read_is_documented_and_every_documented_one_is_read():
    reads = scan_env_reads(_sources())
    reads.names |= set(config._PARSERS) | {"APP_ENV"}
    named = scan_env_reads(_sources(PRODUCT)).fragments
    documented = documented_variables(CONFIGURATION_PAGE.read_text())
    assert variable_drift(reads, documented, named) == []


# --- 2. Routes and the OpenAPI document ------------------------------------------------------

METHODS = {"get", "put", "post", "delete", "patch"}


def api_routes(url_map) -> set[tuple[str, str]]:
    """Return (path in OpenAPI form, method) for every route the OpenAPI document must name.

    Left out: static files, the dashboard's HTML pages (``/`` and everything under
    ``/dashboard``, for people, behind the sign-in) and ``/openapi.json`` itself.
    """
    routes = set()
    for rule in url_map.iter_rules():
        if rule.endpoint.rsplit(".", 1)[-1] == "static" or rule.endpoint.startswith("dashboard"):
            continue
        if rule.rule in ("/", "/openapi.json") or rule.rule.startswith("/dashboard"):
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def documented_routes(document: dict) -> set[tuple[str, str]]:
    """Return (path, method) for every operation of an OpenAPI document."""
    return {
        (path, method)
        for path, operations in document["paths"].items()
        for method in operations
        if method in METHODS
    }


def route_drift(app: set[tuple[str, str]], document: set[tuple[str, str]]) -> list[str]:
    """Say which app routes the document lacks, and which documented ones the app lacks."""
    return [
        f"{m.upper()} {p} is served but not in /openapi.json" for p, m in sorted(app - document)
    ] + [f"{m.upper()} {p} is in /openapi.json but not served" for p, m in sorted(document - app)]


def test_the_route_check_fails_on_a_route_missing_either_way():
    from flask import Flask

    sample = Flask(__name__)
    sample.add_url_rule("/api/things/<thing_id>", "read", lambda thing_id: "")
    sample.add_url_rule("/api/things", "make", lambda: "", methods=["POST"])
    sample.add_url_rule("/dashboard/things", "dashboard.things", lambda: "")
    document = {
        "paths": {
            "/api/things/{thing_id}": {"get": {}, "parameters": []},
            "/api/gone": {"delete": {}},
        }
    }
    assert route_drift(api_routes(sample.url_map), documented_routes(document)) == [
        "POST /api/things is served but not in /openapi.json",
        "DELETE /api/gone is in /openapi.json but not served",
    ]


def test_every_api_route_is_in_the_openapi_document_and_back(tmp_path):
    app = create_app(settings_from_mapping({"database_url": f"sqlite:///{tmp_path}/docs.db"}))
    response = app.test_client().get("/openapi.json")
    assert response.status_code == 200
    served = api_routes(app.url_map)
    assert ("/api/jobs", "post") in served  # the exclusions leave the API in
    assert route_drift(served, documented_routes(response.get_json())) == []


# --- 3. Internal links ----------------------------------------------------------------------

LINK = re.compile(r"(?<!!)\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def _prose(markdown: str) -> str:
    """Return the text outside fenced code blocks and code spans (links there are not links)."""
    lines, fenced = [], False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            lines.append("")
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return "\n".join(lines)


def github_anchor(heading: str) -> str:
    """Return the anchor GitHub gives a heading's text (before de-duplication)."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.replace("`", "").strip().lower()
    kept = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Return every heading anchor of a page, with GitHub's -1, -2 … for repeats."""
    seen: dict[str, int] = {}
    found = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if fenced or not (m := HEADING.match(line)):
            continue
        slug = github_anchor(m.group(2))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def broken_links(pages: Iterable[Path]) -> list[str]:
    """Say which relative links and anchors of the pages point nowhere."""
    problems = []
    for page in pages:
        text = _prose(page.read_text())
        for target in [*LINK.findall(text), *REFERENCE.findall(text)]:
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: …
                continue
            path_part, _, anchor = target.partition("#")
            file = (page.parent / path_part).resolve() if path_part else page
            where = f"{page.name}: {target}"
            if not file.exists():
                problems.append(f"{where}: no such file")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
                problems.append(f"{where}: no such heading")
    return problems


def test_github_anchors_follow_githubs_rules():
    page = (
        "# Robot-job orchestrator\n## Scale-out: RabbitMQ, Sentinel (CONTRACT §10)\n"
        "## `GET /api/jobs/<id>`\n## Notes\n## Notes\n```\n# not a heading\n```\n"
    )
    assert anchors(page) == {
        "robot-job-orchestrator",
        "scale-out-rabbitmq-sentinel-contract-10",
        "get-apijobsid",
        "notes",
        "notes-1",
    }


def test_the_link_check_fails_on_a_missing_file_or_heading(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n[ok](other.md#a-section) [self](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) [no heading](other.md#nowhere) [no anchor](#nothing)\n"
        "`[in code](missing-too.md)`\n```\n[fenced](missing-three.md)\n```\n"
        "[ref]: missing-four.md\n"
    )
    assert broken_links([page]) == [
        "page.md: missing.md: no such file",
        "page.md: other.md#nowhere: no such heading",
        "page.md: #nothing: no such heading",
        "page.md: missing-four.md: no such file",
    ]


def test_every_internal_link_of_the_readme_and_docs_points_somewhere():
    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "README.md"]
    pages += sorted((ROOT / "docs").glob("*.md"))
    assert len(pages) > 10
    assert broken_links(pages) == []


# --- The docs speak of the present ---------------------------------------------------------


def history_sentences(markdown: str) -> list[str]:
    """Return the lines that speak of the project's history by issue number."""
    return [line for line in markdown.splitlines() if re.search(r"\bissues? [0-9]+", line, re.I)]


def test_the_history_check_finds_issue_numbers():
    assert history_sentences("# Title\nfixed until issue 16 here\nissue-free line\n") == [
        "fixed until issue 16 here"
    ]


def test_the_readme_and_docs_name_no_issue_numbers():
    found = {
        page.relative_to(ROOT).as_posix(): lines
        for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        if (lines := history_sentences(page.read_text()))
    }
    assert found == {}, "history belongs in CHANGELOG.md"
