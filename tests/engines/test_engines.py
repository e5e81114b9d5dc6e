"""Docker and podman drive the runtime through runc's command line (create, start, state,
kill, delete, exec, pause, resume, events...): each engine's everyday commands, checked by
what the engine reports and the kernel shows. runc is the control: the same tests pass with it."""
import os
import re
import time

import pytest

from .conftest import IMAGE

pytestmark = [pytest.mark.root, pytest.mark.engine]

def test_run_gives_output_and_exit_code(engine):
    result = engine.run("--rm", IMAGE, "sh", "-c", "echo hello from $(hostname); exit 3",
                        check=False)
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("hello from ")


def test_a_missing_command_is_127_and_fast(engine):
    started = time.monotonic()
    result = engine.run("--rm", IMAGE, "nosuchcommand", check=False)
    assert result.returncode == 127, result.stderr
    assert "nosuchcommand" in result.stderr
    assert time.monotonic() - started < 15


def test_a_bad_user_is_the_engines_error_and_fast(engine):
    started = time.monotonic()
    result = engine.run("--rm", "--user", "nosuchuser", IMAGE, "true", check=False)
    assert result.returncode != 0
    assert "nosuchuser" in result.stderr
    assert time.monotonic() - started < 15


def test_run_with_a_terminal(engine):
    result = engine.run("--rm", "-t", IMAGE, "sh", "-c", "tty; exit 4", check=False)
    assert result.returncode == 4, result.stderr
    assert re.match(r"/dev/pts/\d+", result.stdout)


def test_detached_exec_logs_stop_and_rm(engine):
    container = engine.run("-d", IMAGE, "sh", "-c",
                           "echo started; trap 'echo bye; exit 0' TERM; "
                           "while :; do sleep 0.1; done").stdout.strip()
    assert engine.state(container) == "running"
    pid = int(engine("inspect", "-f", "{{.State.Pid}}", container).stdout)
    assert os.stat(f"/proc/{pid}/ns/pid").st_ino != os.stat("/proc/self/ns/pid").st_ino
    exec_result = engine("exec", container, "sh", "-c", "echo $$; ps | wc -l; exit 5",
                         check=False)
    assert exec_result.returncode == 5, exec_result.stderr
    terminal = engine("exec", "-t", container, "tty")
    assert re.match(r"/dev/pts/\d+", terminal.stdout)
    assert "started" in engine("logs", container).stdout
    engine("stop", "-t", "5", container)
    assert engine.state(container) == "exited"
    assert engine("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip() == "0"
    assert "bye" in engine("logs", container).stdout
    engine("rm", container)
    assert not os.path.exists(f"/proc/{pid}")


def test_kill_pause_and_unpause(engine):
    container = engine.run("-d", IMAGE, "sleep", "60").stdout.strip()
    engine("pause", container)
    assert engine.state(container) == "paused"
    pid = int(engine("inspect", "-f", "{{.State.Pid}}", container).stdout)
    with open(f"/proc/{pid}/status") as status:
        assert re.search(r"^State:\s+[DS]", status.read(), re.M)  # frozen in the freezer
    engine("unpause", container)
    assert engine.state(container) == "running"
    engine("kill", "-s", "KILL", container)
    engine("wait", container, check=False)
    assert engine("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip() == "137"


def test_stats_reads_the_cgroup(engine):
    container = engine.run("-d", "--memory", "64m", IMAGE, "sleep", "60").stdout.strip()
    stats = engine("stats", "--no-stream", "--format", "{{.MemUsage}}", container).stdout
    usage, limit = (in_bytes(text) for text in stats.split("/"))
    assert abs(limit - 64 * 2 ** 20) < 2 ** 20, stats  # docker says 64MiB, podman 67.11MB
    assert usage > 0, stats


def in_bytes(text):
    number, unit = re.fullmatch(r"\s*([\d.]+)\s*([kKMG]?i?B)\s*", text).groups()
    scale = {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9,
             "KiB": 2 ** 10, "MiB": 2 ** 20, "GiB": 2 ** 30}[unit]
    return float(number) * scale


@pytest.mark.slow
def test_fifty_runs_in_a_row(engine):
    for _ in range(50):
        result = engine.run("--rm", IMAGE, "true", timeout=60, check=False)
        assert result.returncode == 0, result.stderr
    assert engine("ps", "-aq").stdout == ""
