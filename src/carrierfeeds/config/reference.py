"""docs/reference.md, generated from the configuration models: every field of a census schema, a carrier
mapping and a feed, with its type, default and description.

``python -m carrierfeeds.config.reference`` writes it and, beside it, docs/census-to-834.md (which census
column feeds which 834 element, from :mod:`carrierfeeds.x12.elements`); ``--check``: exit 1 when either file
is not current (tests/test_reference_docs.py and tests/x12/test_x12_field_reference.py run the check).
:func:`render_reference` is pure: the models in, Markdown out.
"""

from __future__ import annotations

import inspect
import json
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from carrierfeeds.config.feed import Feed
from carrierfeeds.config.mapping import CarrierMapping
from carrierfeeds.config.schema import CensusSchema

#: The documents, each with the folder its files live in.
ROOTS: tuple[tuple[type[BaseModel], str], ...] = (
    (Feed, "feeds/<feed_id>.yaml"),
    (CarrierMapping, "mappings/<mapping_id>.yaml"),
    (CensusSchema, "schemas/<schema_id>.yaml"),
)
DEFAULT_PATH = Path("docs") / "reference.md"
#: The census-to-834 field reference, written beside the configuration reference.
FIELD_REFERENCE_NAME = "census-to-834.md"


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def _models_in(annotation: Any) -> Iterator[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    for arg in typing.get_args(annotation):
        yield from _models_in(arg)


def _type(annotation: Any) -> str:
    """A field's type as a reader of YAML sees it."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is Literal:
        return " | ".join(f"`{json.dumps(a)}`" for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join("null" if a is type(None) else _type(a) for a in args)
    if origin in (dict, typing.Mapping) or annotation is dict:
        key, value = args or (str, Any)
        return f"map of {_type(key)} to {_type(value)}"
    if origin in (tuple, list, frozenset, set):
        return f"list of {_type(args[0])}" if args else "list"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    names = {str: "text", int: "integer", float: "number", bool: "true/false"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(see its fields)"
    return f"`{json.dumps(value, default=str, sort_keys=False)}`"


def _first_paragraph(doc: str | None) -> str:
    return " ".join(inspect.cleandoc(doc or "").split("\n\n")[0].split())


def description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    """The field's description; a field holding a model says what that model is; a ``kind`` literal
    selects the variant."""
    if field.description:
        return " ".join(field.description.split())
    if name == "kind" and typing.get_origin(field.annotation) is Literal:
        return f"selects this variant ({model.__name__})"
    nested = list(_models_in(field.annotation))
    if len(nested) == 1:
        return _first_paragraph(nested[0].__doc__)
    return ""


def _walk(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every model its fields hold, depth first, each once."""
    order: list[type[BaseModel]] = []

    def visit(model: type[BaseModel]) -> None:
        if model in order:
            return
        order.append(model)
        for field in model.model_fields.values():
            for nested in _models_in(field.annotation):
                visit(nested)

    visit(root)
    return order


def missing_descriptions() -> list[str]:
    """``Model.field`` for every field without a description (the reference must explain every field)."""
    seen: set[type[BaseModel]] = set()
    out: list[str] = []
    for root, _ in ROOTS:
        for model in _walk(root):
            if model in seen:
                continue
            seen.add(model)
            out += [f"{model.__name__}.{name}" for name, field in model.model_fields.items()
                    if not description(model, name, field)]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_reference() -> str:
    """docs/reference.md: one section per document and per model it holds, a table of fields each."""
    parts = ["# Configuration reference", "",
             "Generated from the configuration models (`src/carrierfeeds/config/`) by "
             "`python -m carrierfeeds.config.reference`; do not edit by hand (a test fails when it is not "
             "current). Every file is checked when it is loaded, and `carrierfeeds feeds check` names the "
             "file, line and field of a mistake. Unknown fields are refused.", ""]
    done: set[type[BaseModel]] = set()
    for root, where in ROOTS:
        parts += [f"- [{root.__name__}](#{_anchor(root)}): `{where}`"]
    parts.append("")
    for root, where in ROOTS:
        for model in _walk(root):
            if model in done:
                continue
            done.add(model)
            heading = f"## {model.__name__}" if model is root else f"### {model.__name__}"
            parts += [heading, ""]
            if model is root:
                parts += [f"File: `{where}`.", ""]
            doc = inspect.cleandoc(model.__doc__ or "")
            if doc:
                parts += [" ".join(doc.split("\n\n")[0].split()), ""]
            parts += ["| field | type | default | description |", "| --- | --- | --- | --- |"]
            for name, field in model.model_fields.items():
                key = field.alias or name
                parts.append(f"| `{key}` | {_cell(_type(field.annotation))} | {_cell(_default(field))} | "
                             f"{_cell(description(model, name, field))} |")
            parts.append("")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write docs/reference.md (or the path given) and docs/census-to-834.md beside it; ``--check``: exit 1
    when either differs from what the models and the field declaration give."""
    import argparse

    # Imported here: the field declaration reads the config models, so config may not import it at its top.
    from carrierfeeds.x12.elements import render_field_reference

    parser = argparse.ArgumentParser(prog="python -m carrierfeeds.config.reference",
                                     description="Write the schema/mapping/feed field reference from the models, "
                                                 "and the census-to-834 field reference beside it.")
    parser.add_argument("path", nargs="?", type=Path, default=DEFAULT_PATH, help="where to write it")
    parser.add_argument("--check", action="store_true", help="exit 1 when a file is not current; write nothing")
    args = parser.parse_args(argv)
    path: Path = args.path
    docs = ((path, render_reference()), (path.with_name(FIELD_REFERENCE_NAME), render_field_reference()))
    if args.check:
        stale = [p for p, text in docs if (p.read_text(encoding="utf-8") if p.exists() else "") != text]
        for p in stale:
            sys.stderr.write(f"{p} is not current: run `python -m carrierfeeds.config.reference`\n")
        return 1 if stale else 0
    for p, text in docs:
        p.write_text(text, encoding="utf-8")
        sys.stdout.write(f"wrote {p}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
