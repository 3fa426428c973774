"""The study file's JSON Schema and its reference page, generated from the typed specs.

The study is a tree of pydantic dataclasses (``sweeps.study.Study``, ``core.specs``); pydantic turns their
types into a JSON Schema, and each field's help is the comment the spec already carries beside
or above it, so nothing is written twice. Editors read the schema (every shipped study starts with
``# yaml-language-server: $schema=../study.schema.json``) to complete and check keys; the
reference page (``docs/study-reference.md``) is the same facts for people. Where the loader is
more lenient than JSON can say (a single value for a list), the schema says so too.

    python -m sweeps.schema            # rewrite sweeps/study.schema.json, docs/study-reference.md, docs/tasks-and-methods.md
    python -m sweeps.schema --check    # exit 1 if either is stale (CI, tests/test_schema.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any, Optional

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILE = Path(__file__).with_name("study.schema.json")
REFERENCE_FILE = REPO / "docs" / "study-reference.md"
CATALOGUE_FILE = REPO / "docs" / "tasks-and-methods.md"
SCHEMA_URL_COMMENT = "# yaml-language-server: $schema="


def field_help(cls: type) -> dict[str, str]:
    """Each field's comment in the class source: the one on its line, else the comment block
    right above it (a block also covers the fields that follow it without a blank line)."""
    lines, _ = inspect.getsourcelines(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    helps: dict[str, str] = {}
    block: list[str] = []
    fields_since = False  # fields have followed the block: a comment now starts a new one
    for line in lines[1:]:
        stripped = line.strip()
        if not stripped:
            block, fields_since = [], False
            continue
        if stripped.startswith("#"):
            if line.startswith("    #"):  # a comment of the class body, not of a method
                block = [] if fields_since else block
                fields_since = False
                block.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"\s{4}(\w+)\s*:", line)
        if not match or match.group(1) not in names:
            if stripped.startswith(("def ", "@")):
                break
            continue
        inline = line.split("  # ", 1)[1].strip() if "  # " in line else ""
        helps[match.group(1)] = inline or " ".join(block)
        fields_since = True
    return helps


def _dataclasses(root: type) -> dict[str, type]:
    """Every dataclass of the study tree by name (what pydantic names its $defs)."""
    import typing

    found: dict[str, type] = {}

    def walk(tp: Any) -> None:
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if tp.__name__ in found:
                return
            found[tp.__name__] = tp
            hints = typing.get_type_hints(tp)
            for f in dataclasses.fields(tp):
                if f.init:
                    walk(hints[f.name])
        for arg in typing.get_args(tp):
            walk(arg)

    walk(root)
    return found


def _lenient_lists(node: Any) -> Any:
    """The loader takes one value where a list is expected (``methods: lora``): say so."""
    if isinstance(node, dict):
        node = {k: _lenient_lists(v) for k, v in node.items()}
        if node.get("type") == "array" and "items" in node:
            items = node["items"]
            meta = {k: node.pop(k) for k in ("default", "description", "title") if k in node}
            return {"anyOf": [node, items], **meta}
        return node
    if isinstance(node, list):
        return [_lenient_lists(v) for v in node]
    return node


def study_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a study file."""
    from pydantic import TypeAdapter

    from sweeps.study import Study

    classes = _dataclasses(Study)
    raw = TypeAdapter(Study).json_schema(mode="validation")
    defs = raw.pop("$defs")
    defs["Study"] = raw
    out: dict[str, Any] = {}
    for name, cls in classes.items():
        schema = defs[name]
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        helps = field_help(cls)
        props = {}
        for key, prop in schema["properties"].items():
            if key not in init:
                continue
            prop = {k: v for k, v in prop.items() if k != "title"}
            if helps.get(key):
                prop["description"] = helps[key]
            props[key] = prop
        for f in dataclasses.fields(cls):  # defaults pydantic leaves out (factories of plain data)
            if f.init and f.name in props and "default" not in props[f.name] and f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
                if not dataclasses.is_dataclass(value):
                    props[f.name]["default"] = value
        schema["properties"] = props
        schema["required"] = [k for k in schema.get("required", []) if k in init]
        doc = inspect.getdoc(cls) or ""
        if doc and not doc.startswith(f"{name}("):
            schema["description"] = doc.split("\n\n", 1)[0].replace("\n", " ")
        out[name] = _lenient_lists(schema)
    top = out.pop("Study")
    top["required"] = [k for k in top["required"] if k != "name"]  # default: the file's name
    top.pop("title", None)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "peft-sweeps study",
        "x-about": top.pop("description", ""),
        "description": "A study file of peft-sweeps (python -m sweeps.run STUDY). Generated by python -m sweeps.schema; see docs/study-reference.md.",
        **top,
        "$defs": {k: out[k] for k in sorted(out)},
    }


def _type_text(prop: dict[str, Any]) -> str:
    if "$ref" in prop:
        return f"[{prop['$ref'].rsplit('/', 1)[1]}](#{prop['$ref'].rsplit('/', 1)[1].lower()})"
    if "anyOf" in prop:
        parts = [_type_text(p) for p in prop["anyOf"]]
        return " or ".join(dict.fromkeys(p for p in parts if p != "null")) + (" or null" if "null" in parts else "")
    if "const" in prop:
        return json.dumps(prop["const"])
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    kind = prop.get("type", "any")
    if kind == "array":
        return f"list of {_type_text(prop.get('items', {}))}"
    if kind == "object":
        inner = prop.get("additionalProperties")
        return f"mapping to {_type_text(inner)}" if isinstance(inner, dict) and inner else "mapping"
    return kind


def _default_text(key: str, prop: dict[str, Any], required: list[str]) -> str:
    if key in required:
        return "required"
    if "default" not in prop:
        return "its section's defaults" if "$ref" in json.dumps(prop) else "none"
    return f"`{json.dumps(prop['default'])}`"


def reference_markdown(schema: dict[str, Any]) -> str:
    """docs/study-reference.md: each section's keys with type, default and what they do."""
    lines = [
        "# Study file reference",
        "",
        "Generated by `python -m sweeps.schema` from the study's typed specs (`sweeps/study.py`,",
        "`core/specs.py`) and the comments beside their fields; do not edit by hand (CI checks it is",
        "current). The same facts as a JSON Schema for editors: `sweeps/study.schema.json` (every",
        "shipped study's first line points VS Code's YAML extension at it). How studies and search",
        "spaces work: [studies.md](studies.md).",
        "",
    ]
    sections = [("Study", schema)] + list(schema["$defs"].items())
    for name, node in sections:
        lines += [f"## {name}", ""]
        about = node.get("x-about") or node.get("description")
        if about:
            lines += [about, ""]
        lines += ["| key | type | default | what it does |", "| --- | --- | --- | --- |"]
        for key, prop in node["properties"].items():
            help_text = (prop.get("description") or "").replace("|", "\\|")
            lines.append(f"| `{key}` | {_type_text(prop)} | {_default_text(key, prop, node.get('required', []))} | {help_text} |")
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def catalogue_markdown() -> str:
    """docs/tasks-and-methods.md: the registered tasks, methods and search spaces, each in its
    own words (the registry entries and the spaces' files), so adding one updates the page."""
    from search_spaces import known_spaces, load_space
    from trainables.kinds import TASKS
    from trainables.model.methods import METHODS

    lines = [
        "# Tasks, methods and search spaces",
        "",
        "Generated by `python -m sweeps.schema` from the registries (`trainables/kinds/`,",
        "`trainables/model/methods.py`) and `search_spaces/*.yaml`; do not edit by hand. How to add one:",
        "[ARCHITECTURE.md](ARCHITECTURE.md). Every key of a study: [study-reference.md](study-reference.md).",
        "",
        "## Tasks (`task:`)",
        "",
        "| task | kind | what | model head | metrics (`search.metric`) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, task in TASKS.items():
        lines.append(f"| `{name}` | {task.kind.name} | {_cell(task.description)} | `{task.kind.auto_model_name}` | {', '.join(task.metrics)} |")
    lines += ["", "## Methods (`methods:`)", "", "| method | what | trains | its own hyperparameters (the rule each follows) |", "| --- | --- | --- | --- |"]
    for name, method in METHODS.items():
        trains = {"adapter": "the adapter and the task head", "head": "the task head only", "all": "every weight"}[method.trains]
        own = "; ".join(f"`{k}`: {_cell(rule[1])}" for k, rule in method.hyperparams.items()) or "none"
        lines.append(f"| `{name}` | {_cell(method.description)} | {trains}{' (4-bit base)' if method.quantized else ''} | {own} |")
    lines += ["", "## Search spaces (`search_space.name`)", "", "| space | what | params (methods that sample them) |", "| --- | --- | --- |"]
    for name in known_spaces():
        space = load_space(name)
        params = ", ".join(f"`{k}`" + (f" ({'/'.join(p.methods)})" if p.methods else "") for k, p in space.params.items())
        lines.append(f"| `{name}` | {_cell(space.description)} | {params} |")
    return "\n".join(lines) + "\n"


def rendered() -> dict[Path, str]:
    schema = study_schema()
    return {SCHEMA_FILE: json.dumps(schema, indent=2) + "\n", REFERENCE_FILE: reference_markdown(schema), CATALOGUE_FILE: catalogue_markdown()}


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.schema", description="Write (or --check) the study JSON Schema and its reference page.")
    p.add_argument("--check", action="store_true", help="exit 1 if the committed files differ from what the specs generate")
    args = p.parse_args(argv)
    files = rendered()
    stale = [path for path, text in files.items() if not path.is_file() or path.read_text() != text]
    if args.check:
        if stale:
            print(f"error: stale: {', '.join(str(p.relative_to(REPO)) for p in stale)} (fix: run python -m sweeps.schema and commit)", file=sys.stderr)
            return 1
        print("study schema and reference are current")
        return 0
    for path, text in files.items():
        path.write_text(text)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

