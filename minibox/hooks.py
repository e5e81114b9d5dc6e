"""OCI hooks: programs the runtime runs at fixed points of a container's life.

config.json's `hooks` lists, per stage, programs (path, args, env, timeout) that get the
container's state JSON on stdin -- how tools like nvidia-container-toolkit or a CNI plugin
set up a container's devices or network from outside. Most stages are run by the runtime,
in the host's namespaces; two by the container's init, in the container's namespaces
(https://github.com/opencontainers/runtime-spec/blob/main/config.md#posix-platform-hooks):

    prestart, createRuntime  after the namespaces exist, before pivot_root: a failure aborts
                             the create and leaves nothing behind
    createContainer          (the init) the same moment, in the container's namespaces: the
                             root is mounted but not yet pivoted to, so the path is the
                             host's; a failure aborts the create the same way
    startContainer           (the init) after `start`, before the command: the path is the
                             container's; a failure stops the container
    poststart                after the command started: a failure is only a warning
    poststop                 after `delete`: a failure is only a warning

The state each one reads, as crun 1.8 passes it (measured with its hooks on this host):
"created" with the init's host PID for the first four, "running" for poststart, "stopped"
with pid 0 for poststop. runc 1.1 says "creating" up to createContainer; the spec's
conformance checks (runtime-tools' hooks_stdin) expect "created" for prestart, as crun. Where
crun strays from the spec's state schema, the spec's text decides: crun passes pid 0 to
createContainer and startContainer and status "starting" to startContainer, a status the
schema does not have; here they get the container's PID "as seen by the host" and
"created" (the command has not run yet), as runc's startContainer does.
"""
import sys

from .errors import MiniboxError


def run(configured, stages, state_json, fatal=True):
    """Run each hook of the given stages in order, feeding it the state JSON. `configured`:
    the spec's hooks, {stage: [hook, ...]}."""
    for stage in stages:
        for hook in configured.get(stage, []):
            failure = _run_one(hook, state_json)
            if failure is None:
                continue
            message = f"{stage} hook {hook['path']} {failure}"
            if fatal:
                raise MiniboxError(message)
            print(f"minibox: warning: {message}", file=sys.stderr)


def _run_one(hook, state_json):
    """None on success, else what went wrong."""
    import subprocess
    env = dict(item.split("=", 1) for item in hook.get("env", []))
    try:
        result = subprocess.run(hook.get("args") or [hook["path"]], executable=hook["path"],
                                input=state_json.encode(), env=env, capture_output=True,
                                timeout=hook.get("timeout"), close_fds=True)
    except subprocess.TimeoutExpired:
        return f"timed out after {hook['timeout']} s"
    except OSError as error:
        return f"could not run: {error.strerror}"
    if result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        return f"failed with exit code {result.returncode}" + (f": {detail[-1]}" if detail else "")
    return None
