"""cjson: the json package's results from CPython's C scanner and encoder alone."""
import json
import subprocess
import sys

import pytest

from minibox import cjson

DOCUMENTS = [
    {"status": "running", "pid": 4242, "pid_start": 123456789, "exit_code": None,
     "restarts": 0, "remove": True, "annotations": {"io.kubernetes.pod": "x"}},
    {"kind": "cgroup", "paths": ["/sys/fs/cgroup/memory/minibox/abc"]},
    [1, -2.5, 1e300, "é\n\"\\\t\u2603\U0001f600", None, True, False, [], {}],
    "text", 0, {"nested": {"deeper": [{"a": [[]]}]}},
]
NOT_JSON = ["", " ", "{", "{} x", "[1,]", "nul", "{'a': 1}", '{"a" 1}', '"unterminated',
            "[1 2]", '{"a": 1}}', "\x00"]


@pytest.mark.parametrize("value", DOCUMENTS)
def test_the_same_text_as_json_and_back(value):
    assert cjson.dumps(value) == json.dumps(value)
    assert cjson.dumps(value, indent=2) == json.dumps(value, indent=2)
    text = json.dumps(value, indent=1)
    assert cjson.loads(text) == json.loads(text)
    assert cjson.loads(f" \n{text}\r\n\t".encode()) == value


@pytest.mark.parametrize("text", NOT_JSON)
def test_what_json_refuses_is_a_value_error(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        cjson.loads(text)


def test_bytes_that_are_not_utf8_are_a_value_error():
    with pytest.raises(ValueError):
        cjson.loads(b'{"a": "\xff"}')


def test_what_json_cannot_encode_is_a_type_error():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        cjson.dumps({"a": {1}})


def test_reading_and_writing_import_neither_json_nor_re():
    probe = ("import sys; from minibox import cjson; "
             "cjson.loads(cjson.dumps({'a': [1, 'b']})); "
             "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    ran = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=30, check=True)
    assert ran.stdout == "[]\n"
