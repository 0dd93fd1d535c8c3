"""Loading a YAML file into a configuration model: every problem named by file, line and field path, with a
"did you mean" for misspelt keys."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from pydantic import BaseModel, ValidationError

from carrierfeeds.config.feed import Feed
from carrierfeeds.config.mapping import CarrierMapping
from carrierfeeds.config.schema import CensusSchema
from carrierfeeds.errors import ConfigError

M = TypeVar("M", bound=BaseModel)

#: libyaml's loader when PyYAML was built with it (several times faster); its nodes carry the same marks.
_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """One pass over ``text``: its node tree (for line numbers) and the data built from that tree."""
    try:
        return _parse_with(_FAST_LOADER, text)
    except yaml.YAMLError:
        if _FAST_LOADER is yaml.SafeLoader:
            raise
    # libyaml words some problems differently (same line and column): the pure-Python loader's error is
    # the one people have seen, so a bad file is parsed again to raise that.
    return _parse_with(yaml.SafeLoader, text)


def _parse_with(loader_class: type[yaml.SafeLoader], text: str) -> tuple[yaml.Node | None, Any]:
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        try:
            data = loader.construct_document(node) if node is not None else None
        except (ValueError, OverflowError) as exc:  # a date YAML reads as one but the calendar refuses
            bad = _bad_scalar(node)
            raise yaml.constructor.ConstructorError(
                problem=f"{bad.value!r} is not a real date ({exc})" if bad is not None else str(exc),
                problem_mark=bad.start_mark if bad is not None else None) from None
    finally:
        loader.dispose()
    return node, data


def _bad_scalar(node: yaml.Node | None) -> yaml.ScalarNode | None:
    """The first scalar in ``node`` that its tag's constructor refuses (2024-13-01 as a timestamp)."""
    stack = [node]
    while stack:
        current = stack.pop(0)
        if isinstance(current, yaml.ScalarNode):
            try:
                yaml.SafeLoader("").construct_object(current)
            except (ValueError, OverflowError):
                return current
        elif isinstance(current, yaml.MappingNode):
            stack += [part for pair in current.value for part in pair]
        elif isinstance(current, yaml.SequenceNode):
            stack += current.value
    return None


def _line_of(node: yaml.Node | None, path: tuple[int | str, ...]) -> int | None:
    """1-based line of ``path`` in a composed YAML tree (the deepest node that exists)."""
    line = None
    for part in path:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
            if node is None:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    if node is not None:
        line = node.start_mark.line + 1
    return line


def _model_of(annotation: Any, tag: object = None) -> Any:
    """The model class inside an annotation (Optional, Annotated, tagged union by ``tag``)."""
    args = [a for a in getattr(annotation, "__args__", (annotation,)) if hasattr(a, "model_fields")]
    for arg in args:
        kind = arg.model_fields.get("kind")
        if tag is None or (kind is not None and kind.default == tag):
            return arg
    return args[0] if args else annotation


def _clean_loc(model: type[BaseModel], loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's tagged-union markers from a location, so it reads as the YAML path."""
    out: list[int | str] = []
    current: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        fields = getattr(current, "model_fields", None)
        if fields is not None and part in fields:
            out.append(part)
            annotation = fields[part].annotation
            # Only a tagged union (models with ``kind``) puts a tag in the location; a plain optional
            # model's next part is a field name, perhaps a misspelt one.
            fields_of = getattr(_model_of(annotation), "model_fields", {})
            tag = parts[0] if parts and isinstance(parts[0], str) and "kind" in fields_of \
                and parts[0] not in fields_of else None
            current = _model_of(annotation, tag)
            if tag is not None and hasattr(current, "model_fields") and tag not in current.model_fields:
                parts.pop(0)
        else:
            out.append(part)
            current = None
    return tuple(out)


def _allowed_keys(model: type[BaseModel], path: tuple[int | str, ...]) -> list[str]:
    current: Any = model
    for part in path[:-1]:
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        current = _model_of(ann)
    fields = getattr(current, "model_fields", None)
    return list(fields) if fields else []


#: pydantic's error types in the project's words: what the field must be (``{name}`` from the error's ctx).
_WORDS: dict[str, str] = {
    "missing": "is required",
    "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "int_type": "must be a whole number", "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number", "float_parsing": "must be a number",
    "string_type": "must be text (quote it in YAML)",
    "string_too_short": "must have at least {min_length} character(s)",
    "string_too_long": "must have at most {max_length} characters",
    "string_pattern_mismatch": "is not in the expected form (pattern {pattern})",
    "less_than_equal": "must be at most {le}", "less_than": "must be below {lt}",
    "greater_than_equal": "must be at least {ge}", "greater_than": "must be above {gt}",
    "too_short": "must have at least {min_length} item(s)", "too_long": "must have at most {max_length} items",
    "literal_error": "must be one of {expected}", "enum": "must be one of {expected}",
    "date_type": "must be a date (YYYY-MM-DD)", "date_parsing": "must be a date (YYYY-MM-DD)",
    "date_from_datetime_parsing": "must be a date (YYYY-MM-DD)",
    "datetime_type": "must be a date and time", "datetime_parsing": "must be a date and time",
    "time_type": "must be a wall time (HH:MM)", "time_parsing": "must be a wall time (HH:MM)",
    "dict_type": "must be a mapping of fields", "model_type": "must be a mapping of fields",
    "model_attributes_type": "must be a mapping of fields",
    "list_type": "must be a list", "set_type": "must be a list", "tuple_type": "must be a list",
    "union_tag_invalid": "kind must be one of {expected_tags}",
    "union_tag_not_found": "needs a kind (one of the kinds this field takes)",
}


def _in_our_words(err: Any) -> str:
    """One pydantic error as the project says it: no "Value error, ", no "Input should be"."""
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind in ("value_error", "assertion_error"):
        return str(ctx.get("error") or err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    words = _WORDS.get(kind)
    if words is None:
        return str(err["msg"])
    try:
        text = words.format(**ctx)
    except (KeyError, IndexError):
        return str(err["msg"])
    if kind in ("literal_error", "enum") and isinstance(err.get("input"), str):
        choices = [c.strip(" '\"") for c in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        close = difflib.get_close_matches(err["input"], [c for c in choices if c], n=1)
        text += f"; did you mean {close[0]!r}?" if close else ""
    return text


def load_model(model: type[M], path: Path) -> M:
    """Load YAML ``path`` into ``model``; every problem becomes one ConfigError listing them all."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    try:
        node, data = _parse(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise ConfigError(f"not valid YAML at {where}: {getattr(exc, 'problem', exc)}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of fields at the top level", file=str(path))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False, include_input=True):
            loc = _clean_loc(model, tuple(err["loc"]))
            line = _line_of(node, loc)
            field = ".".join(str(p) for p in loc) or "(top level)"
            msg = _in_our_words(err)
            if err["type"] == "extra_forbidden":
                close = difflib.get_close_matches(str(loc[-1]), _allowed_keys(model, loc), n=1)
                msg = "unknown field" + (f"; did you mean {close[0]!r}?" if close else "")
            problems.append((f"line {line}: " if line else "") + f"{field}: {msg}")
        first = ".".join(str(p) for p in _clean_loc(model, tuple(exc.errors()[0]["loc"])))
        raise ConfigError("; ".join(problems), file=str(path), field=None,
                          details={"problems": problems, "first_field": first}) from None


def load_feed(path: Path) -> Feed:
    """Load and check ``feeds/<feed_id>.yaml``; the file name must match its feed_id."""
    feed = load_model(Feed, path)
    if path.stem != feed.feed_id:
        raise ConfigError(f"feed_id {feed.feed_id!r} does not match the file name", file=str(path),
                          field="feed_id")
    return feed


def load_mapping(path: Path) -> CarrierMapping:
    mapping = load_model(CarrierMapping, path)
    if path.stem != mapping.mapping_id:
        raise ConfigError(f"mapping_id {mapping.mapping_id!r} does not match the file name",
                          file=str(path), field="mapping_id")
    return mapping


def load_schema(path: Path) -> CensusSchema:
    schema = load_model(CensusSchema, path)
    if path.stem != schema.schema_id:
        raise ConfigError(f"schema_id {schema.schema_id!r} does not match the file name",
                          file=str(path), field="schema_id")
    return schema


T = TypeVar("T")


class ConfigCache:
    """Mappings and schemas loaded once per file version (path, mtime, size), for a caller loading many
    feeds that share them (the board). A file that does not load raises the same ConfigError each time.

    Hold one for one pass over the feeds: an edit that keeps a file's size within the file system's
    mtime resolution would go unseen by a cache kept longer.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, Path, int, int], object] = {}

    def mapping(self, path: Path) -> CarrierMapping:
        return self._load("mapping", path, load_mapping)

    def schema(self, path: Path) -> CensusSchema:
        return self._load("schema", path, load_schema)

    def _load(self, kind: str, path: Path, load: Callable[[Path], T]) -> T:
        try:
            stat = path.stat()
        except OSError:
            return load(path)  # the loader's own error (file not found)
        key = (kind, path, stat.st_mtime_ns, stat.st_size)
        if key not in self._loaded:
            try:
                self._loaded[key] = load(path)
            except ConfigError as exc:
                self._loaded[key] = exc
        found = self._loaded[key]
        if isinstance(found, ConfigError):
            raise found.with_traceback(None)
        return cast(T, found)
