# Two commands matter: `sudo make demo` and `sudo make test`. Both run `setup` first,
# which is idempotent and quick once everything is installed.
# The distribution's Python: the one python3-venv and python3-dev (below) are for, where PATH
# puts another first (pyenv). Built with PGO, it also starts a container ~8 % faster here.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
VENV   := .venv
APT_PACKAGES := qemu-system-x86 qemu-utils busybox-static libcap-dev cpio iproute2 libc6-dev \
                python3-venv python3-dev gcc runc crun bubblewrap
# What only the tests need: the engines that drive minibox (tests/engines), podman's seccomp
# profile and libseccomp (the differential tests), Chromium (the --html page's screenshot).
# `make demo` does not install them on a workshop laptop.
TEST_APT_PACKAGES := docker.io podman golang-github-containers-common libseccomp2 chromium

# Install the packages of $(1) that are missing. Their services must not start: a packaged
# dockerd would make docker0 and firewall rules; the tests run private ones (policy-rc.d(8)
# exit 101 tells invoke-rc.d and deb-systemd-invoke "not now", unless the host has its own).
define apt_install
	@missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null \
	    | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	    echo "setup: apt-get install $$missing"; \
	    guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then guard=/usr/sbin/policy-rc.d; \
	        printf '#!/bin/sh\nexit 101\n' > $$guard; chmod 755 $$guard; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	    status=$$?; [ -z "$$guard" ] || rm -f $$guard; exit $$status; \
	fi
endef

.PHONY: setup test-setup kernel tiny-kernel-hint demo test clean

setup: $(VENV)/.installed
	@# Bytecode now: where PYTHONDONTWRITEBYTECODE is set (CI, some shells), every start
	@# would otherwise compile minibox from source again (~40 ms of a container start).
	@$(VENV)/bin/python -m compileall -q minibox minivm

$(VENV)/.installed: pyproject.toml
	$(call apt_install,$(APT_PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	# compat mode: a plain path .pth; the default editable finder adds ~15 ms to every start
	$(VENV)/bin/pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

# minivm's tiny guest kernel (minivm/tinykernel.py): built once per machine from Debian's
# linux-source in ~5 minutes on 2 cores, progress shown; `minivm run` boots it ~3x faster
# than Debian's. A no-op when the cache already holds it for this minivm/tiny.config.
kernel: setup
	$(VENV)/bin/python -m minivm kernel build

# Where `minivm kernel build` puts it for root (minivm/kernel.py: cache_dir, tiny_dir).
TINY_VMLINUX := $(or $(MINIVM_CACHE),/var/cache/minivm)/tiny/vmlinux

# `sudo make demo TINY_KERNEL=1` builds the tiny kernel first (as `sudo make kernel` does);
# without it, a demo on Debian's kernel says so in one line before it starts.
demo: setup $(if $(filter 1,$(TINY_KERNEL)),kernel,tiny-kernel-hint)
	$(VENV)/bin/python examples/side_by_side.py

tiny-kernel-hint:
	@[ -e $(TINY_VMLINUX) ] || echo "demo: VMs boot Debian's kernel here; a 5-minute build" \
	    "makes them ~3x faster: sudo make demo TINY_KERNEL=1 (or sudo make kernel, once)"

test-setup: setup
	$(call apt_install,$(TEST_APT_PACKAGES))

# The tiny kernel too, so that its tests (tests/vm/test_minivm_tiny_kernel.py) run in CI
# and every VM test boots the kernel minivm recommends: 5 minutes on a fresh machine, then
# cached.
test: test-setup kernel
	$(VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) *.egg-info
