"""minibox: a container runtime built from Linux namespaces, cgroups, overlayfs and pivot_root."""
