"""minibox/shared.py: the helpers minibox and minivm both use, render_format above all."""
import re

import pytest

from minibox.errors import MiniboxError
from minibox.gotemplate import render_format

RECORD = {"Id": "0123abcd", "Name": "web", "State": {"Status": "running", "Pid": 42,
                                                    "Running": True, "Error": None},
          "Config": {"Cmd": ["sh", "-c", "echo hi"], "Env": ["A=1", "B=2"]}}


@pytest.mark.parametrize("template,expected", [
    ("{{.State.Pid}}", "42"),
    ("{{ .Name }} is {{.State.Status}}", "web is running"),
    ("{{.State.Running}}", "true"),
    ("{{.State.Error}}", "<nil>"),
    ("{{.Config.Cmd}}", "[sh -c echo hi]"),
    ("{{.State}}", "map[Error:<nil> Pid:42 Running:true Status:running]"),
    ("{{json .Config}}", '{"Cmd":["sh","-c","echo hi"],"Env":["A=1","B=2"]}'),
    ("{{json .Config.Env}}", '["A=1","B=2"]'),
    ("{{json .}}", '{"Id":"0123abcd","Name":"web","State":{"Status":"running","Pid":42,'
                   '"Running":true,"Error":null},"Config":{"Cmd":["sh","-c","echo hi"],'
                   '"Env":["A=1","B=2"]}}'),
    ("no actions", "no actions"),
])
def test_go_template_paths_render_as_docker_inspect_does(template, expected):
    assert render_format(template, RECORD) == expected


@pytest.mark.parametrize("template,message", [
    ("{{.State.Nope}}", "no field .State.Nope"),
    ("{{.Name.Length}}", "no field .Name.Length"),
    ("{{range .Config.Env}}", "{{range .Config.Env}} is not .Field.Path"),
    ("{{upper .Name}}", "{{upper .Name}} is not .Field.Path"),
    ("{{Name}}", "'Name' is not a field path"),
])
def test_what_the_subset_cannot_do_is_one_error_naming_the_action(template, message):
    with pytest.raises(MiniboxError, match="^bad --format template '.*': .*" + re.escape(message)):
        render_format(template, RECORD)
