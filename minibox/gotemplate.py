"""`--format` templates: the part of Go's text/template that `docker inspect -f` is used with.

Literal text around actions; an action is a field path (`{{.State.Pid}}`, `{{.}}`) or `json`
of one (`{{json .Config}}`). Values print as Go prints them (`[a b]`, `map[k:v]`, `true`,
`<nil>`); json prints compact JSON, as Go's encoding/json. No range, if or pipes: workshop
material does not need them (https://pkg.go.dev/text/template). minibox's inspect and minivm's
ps and inspect read the same templates.
"""
import json
import re

from .errors import MiniboxError

_ACTION = re.compile(r"{{(.*?)}}", re.DOTALL)
_FIELD_PATH = re.compile(r"\.|(\.[A-Za-z_][A-Za-z0-9_]*)+")


def parse_format(template):
    """The template as a function: a record (nested dicts) -> text. A template it cannot read
    is one line naming it (MiniboxError: `inspect` exits 125), before anything is printed."""
    parts = []
    position = 0
    for action in _ACTION.finditer(template):
        parts.append(_literal(template, template[position:action.start()]))
        parts.append(_action(template, action.group(1).split()))
        position = action.end()
    parts.append(_literal(template, template[position:]))
    return lambda value: "".join(part(value) for part in parts)


def _literal(template, text):
    if "{{" in text or "}}" in text:
        _fail(template, "an unclosed {{ or a stray }}")
    return lambda value: text


def _action(template, words):
    if len(words) == 2 and words[0] == "json":
        path = _path(template, words[1])
        return lambda value: json.dumps(_lookup(template, value, path), separators=(",", ":"))
    if len(words) == 1:
        path = _path(template, words[0])
        return lambda value: go_format(_lookup(template, value, path))
    _fail(template, f"{{{{{' '.join(words)}}}}} is not .Field.Path or json .Field.Path")


def _path(template, text):
    if not _FIELD_PATH.fullmatch(text):
        _fail(template, f"{text!r} is not a field path like .State.Pid")
    return text.split(".")[1:] if text != "." else []


def _lookup(template, value, path):
    for depth, key in enumerate(path):
        if not isinstance(value, dict) or key not in value:
            _fail(template, f"no field .{'.'.join(path[:depth + 1])}")
        value = value[key]
    return value


def go_format(value):
    """A value as Go's fmt prints it with %v."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(go_format(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{key}:{go_format(value[key])}" for key in sorted(value)) + "]"
    return str(value)


def _fail(template, reason):
    raise MiniboxError(f"bad --format template {template!r}: {reason}")


def render_format(template, data):
    """`template` filled from one record: parse_format, then apply."""
    return parse_format(template)(data)
