"""The minibox command line without containers: where options end, repeatable options,
every command's --help, bad usage as one line with exit 125, errors as Docker's exit codes,
the rootless gate, inspect's templates, and what `run` imports."""
import json
import subprocess
import sys

import click
import pytest

from minibox import cli, images, rootless, supervisor
from minibox.errors import MiniboxError


@pytest.fixture
def parse(monkeypatch):
    """argv -> (the command's function name, its arguments by name, --root DIR or None), as
    `minibox ARGV` would call it: click parses, and every command's invoke only records."""
    def parse(*argv):
        calls = []
        with monkeypatch.context() as patched:
            patched.setattr(click.Command, "invoke",
                            lambda command, ctx: calls.append((command, ctx.params)))
            with pytest.raises(SystemExit) as exited:
                cli.main(list(argv))
        assert exited.value.code == 0
        (_, top), *_, (command, settings) = calls
        settings = {key: list(value) if isinstance(value, tuple) else value
                    for key, value in settings.items()}
        return command.callback.__name__, settings, top["root"]
    return parse


@pytest.fixture
def parsed(parse):
    """The command's function name and its arguments."""
    return lambda *argv: parse(*argv)[:2]


@pytest.mark.parametrize("argv, expected", [
    (["run", "busybox", "ls", "-l"], ["busybox", "ls", "-l"]),
    (["run", "busybox", "sh", "-c", "echo hi"], ["busybox", "sh", "-c", "echo hi"]),
    (["run", "--rm", "busybox", "env", "--rm", "-e", "X", "--help"],
     ["busybox", "env", "--rm", "-e", "X", "--help"]),
    (["run", "--rootfs", "/srv/root", "sh", "-i"], ["sh", "-i"]),
])
def test_run_options_end_at_image(argv, expected, parsed):
    name, settings = parsed(*argv)
    assert name == "run" and settings["args"] == expected
    assert settings["env"] == [] and settings["remove"] == ("--rm" in argv[:2])


def test_run_takes_grouped_flags_and_repeated_options(parsed):
    _, settings = parsed("run", "--rm", "-it", "-e", "A=1", "--env", "B=2", "-v", "/a:/b",
                         "-p", "8080:80", "-p", "9090:90", "--cap-add", "NET_ADMIN",
                         "--memory-swap", "-1", "--network", "none", "busybox", "sh")
    assert settings["remove"] and settings["interactive"] and settings["tty"]
    assert settings["env"] == ["A=1", "B=2"] and settings["volume"] == ["/a:/b"]
    assert settings["publish"] == ["8080:80", "9090:90"] and settings["cap_add"] == ["NET_ADMIN"]
    assert settings["memory_swap"] == "-1" and settings["network_mode"] == "none"
    assert settings["args"] == ["busybox", "sh"]


def test_exec_options_end_at_the_container(parsed):
    name, settings = parsed("exec", "-e", "A=1", "web", "ls", "-la")
    assert name == "exec_command"
    assert (settings["reference"], settings["command"], settings["env"]) == (
        "web", ["ls", "-la"], ["A=1"])


def test_groups_root_and_runc_style_kill(parse, parsed):
    assert parsed("image", "import", "--name", "app:1", "x.tar") == (
        "image_import", {"name": "app:1", "max_size": 10 << 30, "archive": "x.tar"})
    assert parsed("image", "import", "--max-size", "20G", "x.tar")[1]["max_size"] == 20 << 30
    assert parsed("network", "rm", "minibox0") == ("network_rm", {"name": "minibox0"})
    assert parsed("kill", "c1", "KILL") == ("kill", {"signal_name": None, "every_process": False,
                                                     "args": ["c1", "KILL"]})
    assert parsed("stop", "a", "b") == ("stop", {"timeout": 10, "containers": ["a", "b"]})
    assert parse("--root", "/tmp/r", "ps")[2] == "/tmp/r"


def every_command(group=cli.minibox, words=()):
    """[], ["run"], ..., ["image"], ["image", "import"]...: every group and command."""
    found = [list(words)]
    for name in group.list_commands(click.Context(group)):
        command = group.get_command(click.Context(group), name)
        found += every_command(command, (*words, name)) if isinstance(command, click.Group) \
            else [[*words, name]]
    return found


@pytest.mark.parametrize("command", every_command(), ids=" ".join)
def test_every_help_exits_0_with_usage_and_options(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith(f"Usage: minibox {' '.join(command)}".rstrip())
    assert "--help  " in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = [line.split()[0] for line in capsys.readouterr().out.split("Commands:\n")[1]
              .splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert listed == [words[0] for words in every_command() if len(words) == 1]
    assert len(listed) == 26  # with runc's pause, resume, update, events, features


def test_run_help_reads_like_docker_s(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("Usage: minibox run [OPTIONS] (IMAGE | --rootfs DIR) [CMD [ARG...]]\n")
    for listed in ("  -e, --env KEY=VALUE ", "  -h, --hostname HOSTNAME ", "  --rm  ",
                   "  -p, --publish [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]\n"):
        assert listed in out
    assert max(len(line) for line in out.splitlines()) <= cli.HELP_WIDTH


@pytest.mark.parametrize("argv, message", [
    ([], "missing command (see: minibox --help)"),
    (["nosuch"], "no such command 'nosuch' (see: minibox --help)"),
    (["--bogus", "ps"], "no such option '--bogus' (see: minibox --help)"),
    (["run", "--bogus", "busybox"], "no such option '--bogus'"),
    (["run", "--bogus", "busybox"], "(see: minibox run --help)"),
    # click never abbreviates a long option: --net is not --network
    (["run", "--net", "none", "busybox"], "no such option '--net'"),
    (["run", "--net", "none", "busybox"], "(see: minibox run --help)"),
    (["run", "--network"], "option '--network' requires an argument (see: minibox run --help)"),
    (["image"], "missing command (see: minibox image --help)"),
    (["image", "build", "alpine"], "'alpine' is not 'busybox'"),
    (["network", "rm"], "missing argument 'NETWORK' (see: minibox network rm --help)"),
    (["rm"], "missing argument 'CONTAINER...' (see: minibox rm --help)"),
    (["ps", "extra"], "unexpected extra argument (extra) (see: minibox ps --help)"),
    (["logs", "--tail", "-1", "c"], "'-1' is not a whole number of 0 or more"),
    (["stop", "-t", "x", "c"], "'-t' / '--time': 'x' is not a whole number"),
    (["exec", "c"], "no command given (see: minibox exec --help)"),
    (["inspect", "-f", "{{.State.Pid", "c"], "bad --format template '{{.State.Pid': an "
                                              "unclosed {{"),
    (["inspect", "-f", "{{range .Mounts}}", "c"], "is not .Field.Path or json .Field.Path"),
])
def test_bad_usage_is_one_line_and_exit_125(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    captured = capsys.readouterr()
    assert exited.value.code == 125 and captured.out == ""
    assert captured.err.startswith("minibox: ") and captured.err.count("\n") == 1
    assert message in captured.err


@pytest.fixture
def fake_run(monkeypatch):
    """`minibox run` up to supervisor.run_foreground, which calls `outcome(spec)` instead."""
    monkeypatch.setattr(cli, "check_caller", lambda command, allowed: None)
    monkeypatch.setattr(images, "resolve", lambda reference: f"sha256:{reference}")
    monkeypatch.setattr(images, "run_settings", lambda image_id: {})
    monkeypatch.setattr(images, "layers_of", lambda image_id: [])
    seen = []

    def run_with(outcome):
        monkeypatch.setattr(supervisor, "run_foreground",
                            lambda spec, container_id: seen.append(spec) or outcome(spec))
        return seen
    return run_with


def test_a_double_dash_before_image_only_ends_the_options(fake_run):
    seen = fake_run(lambda spec: 0)
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--network", "none", "--", "img", "echo", "--", "x"])
    assert exited.value.code == 0 and seen[0].command == ["echo", "--", "x"]


def test_the_commands_exit_code_and_minibox_errors_are_docker_s(fake_run, capsys):
    fake_run(lambda spec: 42)
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--network", "none", "img", "true"])
    assert exited.value.code == 42

    def not_found(spec):
        raise MiniboxError("true: command not found in the container", exit_code=127)
    fake_run(not_found)
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--network", "none", "img", "true"])
    assert exited.value.code == 127
    assert capsys.readouterr().err == "minibox: true: command not found in the container\n"


def test_a_bug_is_one_line_unless_minibox_debug(fake_run, capsys, monkeypatch):
    def bug(spec):
        raise KeyError("pid")
    fake_run(bug)
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--network", "none", "img", "true"])
    assert exited.value.code == 125
    assert capsys.readouterr().err == ("minibox: internal error: KeyError: 'pid' "
                                       "(MINIBOX_DEBUG=1 shows the traceback)\n")
    monkeypatch.setenv("MINIBOX_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(["run", "--network", "none", "img", "true"])


def test_parsing_run_imports_no_other_command():
    """Lazy sub-commands: `run` loads the command line and run.py, not the modules of the
    other commands, nor pyroute2 (~150 ms) or shutil (bz2, lzma: the terminal's width)."""
    code = ("import sys, minibox.cli, click; from unittest import mock; "
            "mock.patch.object(click.Command, 'invoke', lambda *a: 0).start(); "
            "minibox.cli.main(['run', '--rm', '--network', 'none', 'busybox', 'true'])")
    code = f"import atexit, sys; atexit.register(lambda: print(' '.join(sys.modules))); {code}"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True
                            ).stdout.split()
    assert {"click", "minibox.cli", "minibox.cli.run"} <= set(loaded)
    assert not {"minibox.cli.containers", "minibox.cli.images", "minibox.cli.network",
                "minibox.cli.oci", "pyroute2", "shutil"} & set(loaded)


def test_kill_takes_docker_s_and_runc_s_forms(parsed):
    assert parsed("kill", "-s", "KILL", "a", "b") == (
        "kill", {"signal_name": "KILL", "every_process": False, "args": ["a", "b"]})
    assert parsed("kill", "a", "b") == ("kill", {"signal_name": None, "every_process": False,
                                                 "args": ["a", "b"]})


def test_each_command_declares_whether_it_runs_without_root():
    declared = [" ".join(words) for words in every_command()
                if words and not isinstance(_command(words), click.Group)
                and _command(words).rootless]
    assert declared == ["run", "exec", "ps", "logs", "stop", "kill", "rm", "inspect", "gc",
                        "images", "image build", "rmi", "spec"]


def _command(words):
    command = cli.minibox
    for word in words:
        command = command.get_command(click.Context(command), word)
    return command


def test_shell_completion_is_click_s():
    script = subprocess.run([sys.executable, "-m", "minibox"], capture_output=True, text=True,
                            env={"_MINIBOX_COMPLETE": "bash_source", "PATH": "/usr/bin:/bin"})
    assert script.returncode == 0 and "complete " in script.stdout
    words = subprocess.run([sys.executable, "-m", "minibox"], capture_output=True, text=True,
                           env={"_MINIBOX_COMPLETE": "bash_complete", "COMP_WORDS": "minibox im",
                                "COMP_CWORD": "1", "PATH": "/usr/bin:/bin"})
    assert sorted(words.stdout.split()) == ["plain,image", "plain,images"]


@pytest.mark.skipif(rootless.ENABLED, reason="the engines' calls run as root")
def test_engine_calls_skip_click_and_keep_the_error_contract(tmp_path):
    """state/start/delete/kill as runc's callers spell them (ocicalls.py): no click, and still
    one line on stderr, runc's JSON line in --log, exit 125 (but `delete --force` of a
    container that is gone: exit 0, as runc and crun); any other shape is click's."""
    log = tmp_path / "log.json"
    for call in (["state", "nope"], ["start", "nope"], ["delete", "--force", "nope"],
                 ["delete", "nope"], ["kill", "--all", "nope", "KILL"], ["kill", "nope"]):
        ran = subprocess.run([sys.executable, "-X", "importtime", "-m", "minibox", "--root",
                              str(tmp_path), "--log", str(log), "--log-format", "json", *call],
                             capture_output=True, text=True, timeout=30)
        imported = [line.split("|")[-1].strip() for line in ran.stderr.splitlines()
                    if line.startswith("import time:")]
        errors = [line for line in ran.stderr.splitlines() if not line.startswith("import time:")]
        if call[:2] == ["delete", "--force"]:
            assert (ran.returncode, errors) == (0, []), call
        else:
            assert (ran.returncode, errors) == (125, ["minibox: no such container: nope"]), call
        assert "click" not in imported, call
    assert log.read_text().count('"msg": "no such container: nope"') == 5
    ran = subprocess.run([sys.executable, "-X", "importtime", "-m", "minibox", "delete", "nope",
                          "--bogus"], capture_output=True, text=True, timeout=30)
    assert ran.returncode == 125 and "click" in ran.stderr
    assert ran.stderr.splitlines()[-1] == ("minibox: no such option '--bogus' "
                                           "(see: minibox delete --help)")


def _imported_by(argv):
    """(exit status, stdout, stderr's lines but -X importtime's, the modules imported) of
    `python -m minibox ARGV`."""
    ran = subprocess.run([sys.executable, "-X", "importtime", "-m", "minibox", *argv],
                         capture_output=True, text=True, timeout=30)
    lines = ran.stderr.splitlines()
    return (ran.returncode, ran.stdout,
            [line for line in lines if not line.startswith("import time:")],
            {line.split("|")[-1].strip() for line in lines if line.startswith("import time:")})


@pytest.mark.skipif(rootless.ENABLED, reason="the engines' calls run as root")
def test_engine_create_skips_click_and_keeps_the_error_contract(tmp_path):
    """`create` as containerd's shim and conmon spell it (ocicalls.py): no click; an
    option of another shape goes to click, which names it."""
    log = tmp_path / "log.json"
    code, _, errors, imported = _imported_by([
        "--root", str(tmp_path), "--log", str(log), "--log-format", "json", "--systemd-cgroup",
        "create", "--bundle", str(tmp_path / "nope"), "--pid-file", str(tmp_path / "pid"),
        "--console-socket", str(tmp_path / "socket"), "--no-pivot", "--no-new-keyring",
        "--preserve-fds=0", "c1"])
    message = f"{tmp_path}/nope/config.json: no such file (`minibox spec` writes a default one)"
    assert (code, errors) == (125, [f"minibox: {message}"])
    assert "click" not in imported
    assert f'"msg": "{message}"' in log.read_text()
    code, _, errors, imported = _imported_by(["create", "--preserve-fds", "many", "c1"])
    assert code == 125 and "click" in imported
    assert errors[-1] == ("minibox: invalid value for '--preserve-fds': 'many' is not a valid "
                          "integer range (see: minibox create --help)")


@pytest.mark.skipif(rootless.ENABLED, reason="the engines' calls run as root")
def test_engine_calls_on_a_container_load_nothing_of_the_create_path(tmp_path):
    """Each call an engine makes is a process of its own: `state` and `delete` of a container
    import neither container.py nor what makes one (init, network, security: ctypes,
    prctl). The ledger's cgroup entry is still released (state.RELEASED_BY imports its
    module), and the saved spec's poststop hook still runs."""
    from minibox import security, spec, state
    fake_cgroup = tmp_path / "cgroup"  # an empty directory stands in for the cgroup's
    fake_cgroup.mkdir()
    (tmp_path / "c1").mkdir()
    (tmp_path / "c1" / "state.json").write_text('{"id": "c1", "status": "stopped"}')
    poststop = tmp_path / "poststop.json"
    (tmp_path / "c1" / "spec.json").write_text(spec.ContainerSpec(
        ["true"], security=security.SecurityProfile(), hooks={"poststop": [
            {"path": "/bin/sh", "args": ["sh", "-c", f"cat > {poststop}"]}]}).dumps())
    (tmp_path / "c1" / "ledger").write_text(
        f'{{"kind": "dir", "path": "{tmp_path}/c1"}}\n'
        f'{{"kind": "cgroup", "paths": ["{fake_cgroup}"], "groups": []}}\n')
    heavy = {"minibox.container", "minibox.init", "minibox.network", "minibox.security",
             "ctypes", "prctl", "click"}
    code, out, errors, imported = _imported_by(["--root", str(tmp_path), "state", "c1"])
    assert (code, errors, json.loads(out)["status"]) == (0, [], "stopped")
    assert not heavy & imported
    code, _, errors, imported = _imported_by(["--root", str(tmp_path), "delete", "c1"])
    assert (code, errors) == (0, []) and not heavy & imported
    assert not fake_cgroup.exists()
    assert json.loads(poststop.read_text())["status"] == "stopped"
    assert list(tmp_path.iterdir()) == [poststop] and set(state.RELEASED_BY) == {
        "cgroup", "network", "proxy"}
    # Without hooks to run, not even json (re, enum): state.json through cjson.
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "state.json").write_text('{"id": "c2", "status": "stopped"}')
    (tmp_path / "c2" / "ledger").write_text(f'{{"kind": "dir", "path": "{tmp_path}/c2"}}\n')
    code, _, errors, imported = _imported_by(["--root", str(tmp_path), "delete", "c2"])
    assert (code, errors) == (0, []) and not {"json", "re", "enum", "signal"} & imported
    assert not (tmp_path / "c2").exists()
