"""Lesson 05: networking: a veth pair per container, a bridge between them, a published port.

A new network namespace has only `lo`. minibox's default `--network bridge` adds a veth pair
(veth(4): a virtual cable): one end is `eth0` inside, the other a port of the bridge
`minibox0` on the host (a virtual switch whose own address is the containers' gateway).
`-p 127.0.0.1:HOSTPORT:PORT` publishes a container port on the host's loopback through a
small proxy that the container's monitor runs. A VM joins the same bridge with `minivm run
--network bridge`: its NIC is virtio-net, and its host end a tap device that QEMU holds,
where a container has a veth.
Traffic here stays between the host, these containers and that VM.

    sudo .venv/bin/python examples/05_networking.py
"""
import socket
import sys
import time

import lesson

WEB = "lesson-05-web"
HOST_PORT = 18080
PAGE = "hello from lesson 05"


def host_get(port):
    """GET / from the host over loopback; the reply's last line (the page)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = b""
        while chunk := connection.recv(4096):
            reply += chunk
    return reply.decode(errors="replace").splitlines()[-1]


def main():
    lesson.start("Lesson 05: networking (veth + bridge)",
                 "minibox/bridge.py (connect, _ensure_bridge), minibox/ipam.py, "
                 "minibox/portproxy.py, minivm/nic.py (the VM's tap), veth(4), "
                 "network_namespaces(7)")
    lesson.say("With --network none a container has only loopback:")
    lesson.run("minibox", "run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    lesson.say("A web server on the bridge, its port 80 published on the host's 127.0.0.1:"
               f"{HOST_PORT}:")
    lesson.run("minibox", "run", "-d", "--name", WEB, "-p", f"127.0.0.1:{HOST_PORT}:80",
               "busybox", "sh", "-c",
               f"echo '{PAGE}' > /tmp/index.html; exec httpd -f -p 80 -h /tmp", check_code=0)
    try:
        inside = lesson.run("minibox", "exec", WEB, "ip", "-o", "-4", "addr", "show", "eth0")
        address = inside.stdout.split()[3].split("/")[0]
        lesson.say("On the host: the bridge with the gateway address, and the veth ends "
                   "plugged into it:")
        lesson.run("ip", "-o", "-4", "addr", "show", "minibox0")
        lesson.run("ip", "-o", "link", "show", "master", "minibox0")
        lesson.say(f"Another container reaches the web server at {address} through the bridge:")
        lesson.run("minibox", "run", "--rm", "busybox", "wget", "-qO-", f"http://{address}/")
        lesson.say(f"The host reaches it on the published port 127.0.0.1:{HOST_PORT}:")
        for attempt in range(50):  # the server may take a moment to listen
            try:
                print(f"  GET http://127.0.0.1:{HOST_PORT}/ -> {host_get(HOST_PORT)}\n",
                      flush=True)
                break
            except OSError as error:
                if attempt == 49:
                    print(f"  GET http://127.0.0.1:{HOST_PORT}/ failed: {error}", file=sys.stderr)
                time.sleep(0.1)
        lesson.say("A VM on the same bridge: eth0 is a virtio NIC (driver virtio_net), "
                   "its other end a tap in minibox0; it reaches the container too:")
        lesson.run("minivm", "run", "--network", "bridge", "--", "sh", "-c",
                   "ip -o -4 addr show eth0; basename $(readlink "
                   f"/sys/class/net/eth0/device/driver); wget -qO- http://{address}/")
    finally:
        lesson.say("Removing the container removes its veth pair (and frees its address):")
        lesson.run("minibox", "rm", "-f", WEB)
        lesson.run("ip", "-o", "link", "show", "master", "minibox0")


if __name__ == "__main__":
    main()
