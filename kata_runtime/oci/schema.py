"""JSON Schema draft-04, the part of it that the runtime-spec schemas use, without ``jsonschema``.

``jsonschema`` and what it imports (referencing, rpds, attrs...) cost ``create`` 3.3 MB of the CLI's
own peak RSS (27.9 -> 24.6 MB VmHWM) and 0.11-0.16 s (measured 2026-12-02, jsonschema 4.26), for a
dozen keywords.
:class:`Schema` compiles the schema documents once into a tree of checks (about 3 ms for
``config-schema.json`` and what it references) and gives the first :class:`Violation` of an
instance, with the JSON path of the offending field.

What is known, in the forms the runtime-spec schemas use them, and nothing else: a schema with
another keyword or another form (an ``items`` list, a ``type`` list, ``additionalProperties:
false``, a ``$ref`` to a document it was not given...) is refused with :class:`SchemaError` when it
is compiled, so that an update of the schema files cannot be half-checked in silence:

- ``$schema`` (draft-04's URI only), ``description``, ``definitions`` (read only as ``$ref`` targets);
- ``$ref``: ``"<document>#<JSON pointer>"`` or ``"#<JSON pointer>"``, relative to the document it is
  in; as draft-04 says, the keywords beside a ``$ref`` are ignored (they must still be known ones);
- ``type`` (one name; ``integer`` is an int, neither a bool nor ``1.0``), ``enum`` (of strings);
- ``properties``, ``patternProperties``, ``additionalProperties`` (a schema), ``required``;
- ``items`` (a schema), ``minItems``; ``pattern`` (``re.search``, as jsonschema); ``minimum``,
  ``maximum``; ``allOf``, ``anyOf``.

The verdicts and the messages are those of jsonschema's ``Draft4Validator``
(``tests/unit/test_schema.py`` runs both on several hundred documents). Where an instance has several
violations, the first in the schema's order is reported (jsonschema's ``best_match`` weighs them
differently); an ``anyOf`` that fails reports the violation of its branch that got deepest into
the instance.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

JsonPath = tuple[str | int, ...]

DRAFT4 = "http://json-schema.org/draft-04/schema#"

_TYPES: dict[str, Callable[[Any], bool]] = {
    "array": lambda v: isinstance(v, list),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "null": lambda v: v is None,
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "object": lambda v: isinstance(v, dict),
    "string": lambda v: isinstance(v, str),
}
_is_number = _TYPES["number"]
_PLAIN_KEY = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]*$")  # printed as .key in a JSON path, others as ['key']


class SchemaError(Exception):
    """A schema this module cannot check exactly (unknown keyword or form, unresolvable ``$ref``):
    the message names the document and the JSON pointer of the place."""


@dataclass(frozen=True)
class Violation:
    """Why an instance is not valid: where (``path``, keys and indexes from the top) and what."""

    path: JsonPath
    message: str

    @property
    def json_path(self) -> str:
        """The path as jsonschema writes it: ``$.process.args``, ``$.mounts[2]``,
        ``$.annotations['io.k8s.x']``."""
        out = "$"
        for elem in self.path:
            if isinstance(elem, int):
                out += f"[{elem}]"
            elif _PLAIN_KEY.match(elem):
                out += "." + elem
            else:
                out += "['" + elem.replace("\\", "\\\\").replace("'", "\\'") + "']"
        return out

    def __str__(self) -> str:
        return f"{self.json_path}: {self.message}"


_Check = Callable[[Any, JsonPath], Violation | None]


class _Node:
    """One compiled schema object: its checks in the schema's order, the first violation wins.
    Filled after it is registered, so that a schema can refer to itself through ``$ref``."""

    __slots__ = ("checks",)

    def __init__(self) -> None:
        self.checks: list[_Check] = []

    def __call__(self, instance: Any, path: JsonPath) -> Violation | None:
        for check in self.checks:
            found = check(instance, path)
            if found is not None:
                return found
        return None


_ANNOTATIONS = frozenset({"$schema", "description", "definitions"})
_KEYWORDS = _ANNOTATIONS | {
    "$ref", "type", "enum", "properties", "patternProperties", "additionalProperties", "required", "items",
    "minItems", "pattern", "minimum", "maximum", "allOf", "anyOf",
}


class Schema:
    """A draft-04 schema compiled from ``documents`` (parsed JSON by name, e.g. ``defs.json``), the
    root being the whole document ``root``. Raises :class:`SchemaError` for what it cannot check."""

    def __init__(self, documents: Mapping[str, Any], root: str) -> None:
        self._documents = documents
        self._nodes: dict[tuple[str, str], _Node] = {}
        self._resolving: list[str] = []  # the $ref chain being followed: a cycle of bare $refs has no meaning
        self._root = self._ref(root + "#", root, "")

    def first_violation(self, instance: Any) -> Violation | None:
        """None when ``instance`` is valid, else its first violation."""
        return self._root(instance, ())

    def is_valid(self, instance: Any) -> bool:
        return self._root(instance, ()) is None

    # -- compiling ------------------------------------------------------------------------------

    def _ref(self, ref: str, doc: str, pointer: str) -> _Node:
        where = f"{doc}#{pointer}"
        name, hashmark, fragment = ref.partition("#")
        target_doc = name or doc
        if target_doc not in self._documents or (fragment and not fragment.startswith("/")):
            raise SchemaError(f"{where}: $ref {ref!r} does not name a known document and a JSON pointer "
                              f"(known: {', '.join(sorted(self._documents))})")
        known = self._nodes.get((target_doc, fragment))
        if known is not None:  # compiled, or being compiled: a schema that contains itself
            return known
        key = f"{target_doc}#{fragment}"
        if key in self._resolving:
            raise SchemaError(f"{where}: $ref {ref!r} refers to itself")
        value: Any = self._documents[target_doc]
        for token in fragment.split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(value, dict) and token in value:
                value = value[token]
            elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
                value = value[int(token)]
            else:
                raise SchemaError(f"{where}: $ref {ref!r} points at nothing")
        self._resolving.append(key)
        try:
            return self._compile(value, target_doc, fragment)
        finally:
            self._resolving.pop()

    def _compile(self, schema: Any, doc: str, pointer: str) -> _Node:
        known = self._nodes.get((doc, pointer))
        if known is not None:
            return known
        where = f"{doc}#{pointer}"
        if not isinstance(schema, dict):
            raise SchemaError(f"{where}: a schema must be an object, not {schema!r}")
        unknown = sorted(set(schema) - _KEYWORDS)
        if unknown:
            raise SchemaError(f"{where}: unknown keyword {unknown[0]!r} (this validator knows "
                              f"{', '.join(sorted(_KEYWORDS))})")
        if schema.get("$schema", DRAFT4) != DRAFT4:
            raise SchemaError(f"{where}: $schema {schema['$schema']!r} is not draft-04's {DRAFT4!r}")
        if "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise SchemaError(f"{where}: $ref must be a string")
            node = self._ref(ref, doc, pointer)
            self._nodes[(doc, pointer)] = node
            return node
        node = _Node()
        self._nodes[(doc, pointer)] = node
        for keyword, value in schema.items():
            if keyword not in _ANNOTATIONS:
                node.checks.append(self._keyword(keyword, value, schema, doc, pointer))
        return node

    def _sub(self, schema: Any, doc: str, pointer: str, *tokens: str | int) -> _Node:
        for token in tokens:
            pointer += "/" + str(token).replace("~", "~0").replace("/", "~1")
        return self._compile(schema, doc, pointer)

    def _keyword(self, keyword: str, value: Any, schema: dict[str, Any], doc: str, pointer: str) -> _Check:
        def bad(what: str) -> SchemaError:
            return SchemaError(f"{doc}#{pointer}: {keyword} {what}")

        if keyword == "type":
            if not isinstance(value, str) or value not in _TYPES:
                raise bad(f"must be one of {', '.join(sorted(_TYPES))}, not {value!r}")
            return _type(value)
        if keyword == "enum":
            if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
                raise bad("must be a non-empty list of strings")
            return _enum(value)
        if keyword in ("properties", "patternProperties"):
            if not isinstance(value, dict):
                raise bad("must be an object")
            subs = {name: self._sub(sub, doc, pointer, keyword, name) for name, sub in value.items()}
            return _properties(subs) if keyword == "properties" else _pattern_properties(
                {_regex(name, bad): sub for name, sub in subs.items()})
        if keyword == "additionalProperties":
            if not isinstance(value, dict):
                raise bad("must be a schema (true and false are not supported)")
            declared = schema.get("properties", {})
            patterns = [_regex(p, bad) for p in schema.get("patternProperties", {})]
            return _additional_properties(self._sub(value, doc, pointer, keyword), declared, patterns)
        if keyword == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise bad("must be a list of strings")
            return _required(value)
        if keyword == "items":
            if not isinstance(value, dict):
                raise bad("must be a schema (a list of schemas is not supported)")
            return _items(self._sub(value, doc, pointer, keyword))
        if keyword == "minItems":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad("must be a non-negative integer")
            return _min_items(value)
        if keyword == "pattern":
            if not isinstance(value, str):
                raise bad("must be a string")
            return _pattern(_regex(value, bad))
        if keyword in ("minimum", "maximum"):
            if not _is_number(value):
                raise bad("must be a number")
            return _bound(value, keyword == "minimum")
        if keyword in ("allOf", "anyOf"):
            if not isinstance(value, list) or not value:
                raise bad("must be a non-empty list of schemas")
            branches = [self._sub(sub, doc, pointer, keyword, i) for i, sub in enumerate(value)]
            return _all_of(branches) if keyword == "allOf" else _any_of(branches)
        if keyword == "$ref":  # reached only through a schema with $ref, which _compile handles
            raise bad("is handled by _compile")
        raise bad("is not known")  # pragma: no cover - _KEYWORDS and this function disagree


def _regex(text: str, bad: Callable[[str], SchemaError]) -> re.Pattern[str]:
    try:
        return re.compile(text)
    except re.error as e:
        raise bad(f"{text!r} is not a regular expression: {e}") from None


# -- the checks: each returns the first violation of its keyword, or None ---------------------------

def _type(name: str) -> _Check:
    matches = _TYPES[name]

    def check(instance: Any, path: JsonPath) -> Violation | None:
        return None if matches(instance) else Violation(path, f"{instance!r} is not of type {name!r}")
    return check


def _enum(values: list[str]) -> _Check:
    allowed = frozenset(values)

    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, str) and instance in allowed:
            return None
        return Violation(path, f"{instance!r} is not one of {values!r}")
    return check


def _properties(subs: dict[str, _Node]) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, dict):
            for name, node in subs.items():
                if name in instance:
                    found = node(instance[name], path + (name,))
                    if found is not None:
                        return found
        return None
    return check


def _pattern_properties(subs: dict[re.Pattern[str], _Node]) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, dict):
            for regex, node in subs.items():
                for key, value in instance.items():
                    if regex.search(key):
                        found = node(value, path + (key,))
                        if found is not None:
                            return found
        return None
    return check


def _additional_properties(node: _Node, declared: dict[str, Any], patterns: list[re.Pattern[str]]) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, dict):
            for key, value in instance.items():
                if key not in declared and not any(p.search(key) for p in patterns):
                    found = node(value, path + (key,))
                    if found is not None:
                        return found
        return None
    return check


def _required(names: list[str]) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, dict):
            for name in names:
                if name not in instance:
                    return Violation(path, f"{name!r} is a required property")
        return None
    return check


def _items(node: _Node) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, list):
            for index, item in enumerate(instance):
                found = node(item, path + (index,))
                if found is not None:
                    return found
        return None
    return check


def _min_items(least: int) -> _Check:
    words = "should be non-empty" if least == 1 else "is too short"

    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, list) and len(instance) < least:
            return Violation(path, f"{instance!r} {words}")
        return None
    return check


def _pattern(regex: re.Pattern[str]) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        if isinstance(instance, str) and not regex.search(instance):
            return Violation(path, f"{instance!r} does not match {regex.pattern!r}")
        return None
    return check


def _bound(limit: int | float, lower: bool) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        if not _is_number(instance):
            return None
        if lower and instance < limit:
            return Violation(path, f"{instance!r} is less than the minimum of {limit!r}")
        if not lower and instance > limit:
            return Violation(path, f"{instance!r} is greater than the maximum of {limit!r}")
        return None
    return check


def _all_of(branches: list[_Node]) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        for node in branches:
            found = node(instance, path)
            if found is not None:
                return found
        return None
    return check


def _any_of(branches: list[_Node]) -> _Check:
    def check(instance: Any, path: JsonPath) -> Violation | None:
        failures: list[Violation] = []
        for node in branches:
            found = node(instance, path)
            if found is None:
                return None
            failures.append(found)
        deepest = max(len(f.path) for f in failures)
        best = [f for f in failures if len(f.path) == deepest]
        if len(best) == 1:
            return best[0]
        return Violation(path, f"{instance!r} is not valid under any of the given schemas")
    return check
