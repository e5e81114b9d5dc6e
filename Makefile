# Two commands matter: `sudo make demo` and `sudo make test`. Both run `setup` first,
# which is idempotent and quick once everything is installed.
# The distribution's Python: the one python3-venv and python3-dev (below) are for, where PATH
# puts another first (pyenv). Built with PGO, it also starts a container ~8 % faster here.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
APT_PACKAGES := qemu-system-x86 qemu-utils busybox-static libcap-dev cpio iproute2 libc6-dev \
                python3-venv python3-dev gcc runc crun bubblewrap docker.io podman \
                libseccomp2 golang-github-containers-common chromium

.PHONY: setup demo test clean

setup: $(VENV)/.installed
	@# Bytecode now: where PYTHONDONTWRITEBYTECODE is set (CI, some shells), every start
	@# would otherwise compile minibox from source again (~40 ms of a container start).
	@$(VENV)/bin/python -m compileall -q minibox minivm

$(VENV)/.installed: pyproject.toml
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	    | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "setup: apt-get install $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# compat mode: a plain path .pth; the default editable finder adds ~15 ms to every start
	$(VENV)/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

demo: setup
	$(VENV)/bin/python examples/side_by_side.py

test: setup
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
