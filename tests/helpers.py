"""Small helpers shared by the tests."""
import os


def container_dirs(root):
    """The container directories under a state root (names/ is bookkeeping, not a container)."""
    try:
        return sorted(name for name in os.listdir(root) if name != "names")
    except FileNotFoundError:
        return []


def busybox_layer(store):
    """The busybox image's (one) layer directory in the image store at `store`."""
    import subprocess
    import sys
    code = "from minibox import images; print(images.image_layers('busybox')[0])"
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, MINIBOX_STORE=store),
                          capture_output=True, text=True, check=True).stdout.strip()
