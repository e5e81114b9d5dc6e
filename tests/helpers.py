"""Small helpers shared by the tests."""
import os


def container_dirs(root):
    """The container directories under a state root (names/ is bookkeeping, not a container)."""
    try:
        return sorted(name for name in os.listdir(root) if name != "names")
    except FileNotFoundError:
        return []
