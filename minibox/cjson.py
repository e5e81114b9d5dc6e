"""JSON through CPython's C accelerator (the `_json` module) alone, for the engine's calls.

An engine runs `minibox start`, `delete` and `kill` as one process each, and each reads a
state.json of a few hundred bytes. The json package would cost more than the reading: its
decoder.py and encoder.py compile regular expressions when imported (re, with enum and the
sre compiler: bench/README.md has the figure). The scanner and the encoder those modules
wrap are written in C and need none of that; this module hands them the options
json.JSONDecoder and JSONEncoder would. Indented output (what a person reads) and any
Python without `_json` take the json package itself.
"""
try:
    import _json
except ImportError:  # not CPython
    _json = None


class _DecoderOptions:
    """The attributes _json.make_scanner reads from its json.JSONDecoder (json.loads's)."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_WHITESPACE = " \t\n\r"  # JSON's own (RFC 8259), which str.strip() would exceed


def loads(text):
    """json.loads(text) for str or UTF-8 bytes; invalid JSON raises ValueError."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")  # UnicodeDecodeError: a ValueError too
    if _json is None:
        import json
        return json.loads(text)
    text = text.strip(_WHITESPACE)
    try:
        value, end = _json.make_scanner(_DecoderOptions())(text, 0)
    except StopIteration as stop:  # the scanner's "no value starts here"
        raise ValueError(f"not JSON at character {stop.value}") from None
    if end != len(text):
        raise ValueError(f"not JSON: extra data at character {end}")
    return value


def _unserializable(value):
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value, indent=None):
    """json.dumps(value, indent=indent)."""
    if _json is None or indent is not None:
        import json
        return json.dumps(value, indent=indent)
    encode = _json.make_encoder({}, _unserializable, _json.encode_basestring_ascii, None,
                                ": ", ", ", False, False, True)
    return "".join(encode(value, 0))
