"""Lesson 03: overlayfs copy-on-write, the container's root.

The image's layers are read-only "lower" directories; each container gets an empty "upper"
directory, and overlayfs shows the union (Documentation/filesystems/overlayfs.rst). Reading
a file reads it from the lower layer; the first write copies it up whole into the upper
layer; deleting a lower file leaves a *whiteout* (a 0:0 character device) in the upper layer.

    sudo .venv/bin/python examples/03_overlay.py
"""
import json
import os
import stat
import subprocess

import lesson
from minibox import images


def describe(path):
    info = os.lstat(path)
    if stat.S_ISCHR(info.st_mode) and info.st_rdev == 0:
        return "whiteout (character device 0:0: 'deleted')"
    if stat.S_ISLNK(info.st_mode):
        return f"symlink to {os.readlink(path)}"
    return f"file, {info.st_size} bytes"


def main():
    lesson.start("Lesson 03: overlay copy-on-write",
                 "minibox/rootfs.py (mount_overlay), minibox/images/layers.py (whiteouts), overlayfs docs")
    layer = images.layers_of(images.resolve("busybox"))[0]
    lesson.say("A container that adds a file, changes one and deletes one:")
    lesson.run("minibox", "run", "--name", "lesson-03", "busybox", "sh", "-c",
               "echo hello > /etc/motd; echo 'lesson:x:1000:1000::/:/bin/sh' >> /etc/passwd; "
               "rm /bin/vi; grep ' / / ' /proc/self/mountinfo | tr , '\\n' | grep dir=",
               check_code=0)
    try:
        inspect = subprocess.run(lesson.MINIBOX + ["inspect", "lesson-03"], capture_output=True,
                                 text=True, check=True)
        upper = json.loads(inspect.stdout)[0]["GraphDriver"]["Data"]["UpperDir"]
        lesson.say(f"Its upper layer ({upper}) holds only what changed:")
        for directory, _, files in sorted(os.walk(upper)):
            for name in sorted(files):
                path = os.path.join(directory, name)
                print(f"  upper /{os.path.relpath(path, upper):12} {describe(path)}")
        lesson.say(f"The image's layer ({layer}) did not change:")
        for name in ("etc/motd", "etc/passwd", "bin/vi"):
            path = os.path.join(layer, name)
            print(f"  layer /{name:12} {describe(path) if os.path.lexists(path) else 'absent'}")
        print(flush=True)
        lesson.say("A new container from the same image sees the image, not the other's changes:")
        lesson.run("minibox", "run", "--rm", "busybox", "sh", "-c",
                   "ls /etc/motd; grep -c lesson /etc/passwd; ls /bin/vi")
    finally:
        lesson.say("Removing the container removes its upper layer:")
        lesson.run("minibox", "rm", "lesson-03")


if __name__ == "__main__":
    main()
