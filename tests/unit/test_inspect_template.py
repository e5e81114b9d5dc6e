"""`minibox inspect -f`: Go template field paths, as `docker inspect -f` takes them."""
import pytest

from minibox.gotemplate import go_format, parse_format as parse
from minibox.errors import MiniboxError

INFO = {"Id": "abc", "State": {"Pid": 42, "Running": True, "Error": ""},
        "Config": {"Cmd": ["sleep", "60"], "Env": ["A=1"], "Tty": False},
        "NetworkSettings": {"IPAddress": "10.88.0.2", "Ports": {}}, "Image": None}


@pytest.mark.parametrize("template, expected", [
    ("{{.State.Pid}}", "42"),
    ("pid={{ .State.Pid }} ip={{.NetworkSettings.IPAddress}}!", "pid=42 ip=10.88.0.2!"),
    ("{{json .Config}}", '{"Cmd":["sleep","60"],"Env":["A=1"],"Tty":false}'),
    ("{{.Config.Cmd}}", "[sleep 60]"),
    ("{{.State.Running}} {{.Image}} {{.NetworkSettings.Ports}}", "true <nil> map[]"),
    ("{{json .Id}}", '"abc"'),
    ("no actions", "no actions"),
    ("{{.State}}", "map[Error: Pid:42 Running:true]"),
])
def test_field_paths_and_json_print_as_go_does(template, expected):
    assert parse(template)(INFO) == expected


def test_the_whole_value_is_a_dot():
    assert parse("{{json .}}")({"a": 1}) == '{"a":1}'
    assert go_format({"b": [1, None], "a": {}}) == "map[a:map[] b:[1 <nil>]]"


@pytest.mark.parametrize("template, reason", [
    ("{{.State.Pid", "an unclosed {{ or a stray }}"),
    ("}}", "an unclosed {{ or a stray }}"),
    ("{{}}", "{{}} is not .Field.Path or json .Field.Path"),
    ("{{range .Mounts}}{{end}}", "is not .Field.Path or json .Field.Path"),
    ("{{State.Pid}}", "'State.Pid' is not a field path like .State.Pid"),
    ("{{.State..Pid}}", "is not a field path"),
    ("{{upper .Id}}", "is not .Field.Path or json .Field.Path"),
])
def test_a_template_it_cannot_read_is_one_line_before_any_output(template, reason):
    with pytest.raises(MiniboxError, match="^bad --format template ") as refused:
        parse(template)
    assert reason in str(refused.value) and "\n" not in str(refused.value)


def test_a_field_the_container_does_not_have_is_named():
    with pytest.raises(MiniboxError, match=r"no field \.State\.Nope$"):
        parse("{{.State.Nope}}")(INFO)
    with pytest.raises(MiniboxError, match=r"no field \.Config\.Cmd\.X$"):
        parse("{{.Config.Cmd.X}}")(INFO)
