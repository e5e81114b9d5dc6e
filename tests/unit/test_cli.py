"""The minibox command line without containers: where options end, repeatable options,
every command's --help, bad usage as one line with exit 125, errors as Docker's exit codes,
and what `run` imports."""
import subprocess
import sys

import pytest

from minibox import cli, container, images
from minibox.errors import MiniboxError


def parsed(*argv):
    """The command's function name and its arguments, as `minibox ARGV` would call it."""
    function, settings, _ = cli.parse(list(argv))
    return function.__name__, settings


@pytest.mark.parametrize("argv, expected", [
    (["run", "busybox", "ls", "-l"], ["busybox", "ls", "-l"]),
    (["run", "busybox", "sh", "-c", "echo hi"], ["busybox", "sh", "-c", "echo hi"]),
    (["run", "--rm", "busybox", "env", "--rm", "-e", "X", "--help"],
     ["busybox", "env", "--rm", "-e", "X", "--help"]),
    (["run", "--rootfs", "/srv/root", "sh", "-i"], ["sh", "-i"]),
])
def test_run_options_end_at_image(argv, expected):
    name, settings = parsed(*argv)
    assert name == "run" and settings["args"] == expected
    assert settings["env"] == [] and settings["remove"] == ("--rm" in argv[:2])


def test_run_takes_grouped_flags_and_repeated_options():
    _, settings = parsed("run", "--rm", "-it", "-e", "A=1", "--env", "B=2", "-v", "/a:/b",
                         "-p", "8080:80", "-p", "9090:90", "--cap-add", "NET_ADMIN",
                         "--memory-swap", "-1", "--network", "none", "busybox", "sh")
    assert settings["remove"] and settings["interactive"] and settings["tty"]
    assert settings["env"] == ["A=1", "B=2"] and settings["volume"] == ["/a:/b"]
    assert settings["publish"] == ["8080:80", "9090:90"] and settings["cap_add"] == ["NET_ADMIN"]
    assert settings["memory_swap"] == "-1" and settings["network_mode"] == "none"
    assert settings["args"] == ["busybox", "sh"]


def test_exec_options_end_at_the_container():
    name, settings = parsed("exec", "-e", "A=1", "web", "ls", "-la")
    assert name == "exec_command"
    assert (settings["reference"], settings["command"], settings["env"]) == (
        "web", ["ls", "-la"], ["A=1"])


def test_groups_root_and_runc_style_kill():
    assert parsed("image", "import", "--name", "app:1", "x.tar") == (
        "image_import", {"name": "app:1", "max_size": 10 << 30, "archive": "x.tar"})
    assert parsed("image", "import", "--max-size", "20G", "x.tar")[1]["max_size"] == 20 << 30
    assert parsed("network", "rm", "minibox0") == ("network_rm", {"name": "minibox0"})
    assert parsed("kill", "c1", "KILL") == ("kill", {"signal_name": None, "args": ["c1", "KILL"]})
    assert parsed("stop", "a", "b") == ("stop", {"timeout": 10, "containers": ["a", "b"]})
    assert cli.parse(["--root", "/tmp/r", "ps"])[2] == "/tmp/r"


def every_command():
    return [name.split() for name in cli.COMMANDS] + [[group] for group in cli.GROUPS] + [[]]


@pytest.mark.parametrize("command", every_command(), ids=" ".join)
def test_every_help_exits_0_with_usage_and_options(command, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0
    assert out.startswith(f"usage: minibox {' '.join(command)}".rstrip())
    assert "--help  " in out


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    listed = [line.split()[0] for line in capsys.readouterr().out.split("commands:\n")[1]
              .splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert listed == list(dict.fromkeys(name.split()[0] for name in cli.COMMANDS))


def test_run_help_reads_like_docker_s(capsys):
    with pytest.raises(SystemExit):
        cli.main(["run", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: minibox run [OPTIONS] (IMAGE | --rootfs DIR) [CMD [ARG...]]\n")
    for listed in ("  -e, --env KEY=VALUE ", "  -h, --hostname HOSTNAME\n", "  --rm  ",
                   "  -p, --publish [HOSTIP:]HOSTPORT:CONTAINERPORT[/tcp]\n"):
        assert listed in out
    assert max(len(line) for line in out.splitlines()) <= cli.HELP_WIDTH


@pytest.mark.parametrize("argv, message", [
    ([], "no command given (see: minibox --help)"),
    (["nosuch"], "no such command: nosuch (see: minibox --help)"),
    (["--bogus", "ps"], "no such option: --bogus (see: minibox --help)"),
    (["run", "--bogus", "busybox"], "no such option: --bogus (see: minibox run --help)"),
    (["run", "--net", "none", "busybox"], "no such option: --net (see: minibox run --help)"),
    (["run", "--network"], "argument --network: expected one argument (see: minibox run --help)"),
    (["image"], "no command given (see: minibox image --help)"),
    (["image", "build", "alpine"], "invalid choice: 'alpine'"),
    (["network", "rm"], "required: NETWORK (see: minibox network rm --help)"),
    (["rm"], "required: CONTAINER (see: minibox rm --help)"),
    (["ps", "extra"], "unexpected argument: extra (see: minibox ps --help)"),
    (["logs", "--tail", "-1", "c"], "'-1' is not a whole number of 0 or more"),
    (["stop", "-t", "x", "c"], "argument -t/--time: 'x' is not a whole number"),
    (["exec", "c"], "no command given (see: minibox exec --help)"),
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
    """`minibox run` up to container.run, which calls `outcome(spec)` instead."""
    monkeypatch.setattr(cli, "check_caller", lambda command: None)
    monkeypatch.setattr(images, "image_config", lambda reference: {})
    seen = []

    def run_with(outcome):
        monkeypatch.setattr(container, "run",
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


def test_parsing_run_imports_nothing_heavy():
    """click (~25 ms), pyroute2 (~150 ms), inspect and typing (~5 ms) stay out of every start;
    shutil (bz2, lzma) too, which argparse imports to ask the terminal's width."""
    code = ("import sys, minibox.cli; "
            "minibox.cli.parse(['run', '--rm', '--network', 'none', 'busybox', 'true']); "
            "print(' '.join(sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.split()
    assert "argparse" in loaded
    assert not {"click", "pyroute2", "inspect", "typing", "shutil"} & set(loaded)
