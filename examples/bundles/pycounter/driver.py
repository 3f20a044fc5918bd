#!/usr/bin/env python3
"""pycounter: a drvkit driver written in Python with the standard library
only. It speaks the out-of-process driver protocol (PROTOCOL.md at the root
of the drvkit repository) on the socket the daemon passed as descriptor
$DRVKIT_SOCKET_FD: one JSON object per SOCK_SEQPACKET message, descriptors
attached with SCM_RIGHTS.

Methods: "count" adds one and returns {"count": n, "pid": pid}; "echo"
returns its input; "notify" sends its input to every client of the
instance as message 0x10001, the driver's first own type.
"""

import base64
import json
import os
import socket
import sys

VERSION = "1.0"               # the protocol version this driver speaks
MAX_MESSAGE = 128 * 1024      # the protocol's message size limit
MAX_FILES = 16
MSG_DRIVER_DEFINED = 0x10000  # the first message type drivers may send
MSG_COUNT = MSG_DRIVER_DEFINED + 1


class Driver:
    def __init__(self, sock):
        self.sock = sock
        self.count = 0
        self.files = []

    def send(self, msg):
        self.sock.send(json.dumps(msg, separators=(",", ":")).encode())

    def recv(self):
        data, fds, _flags, _addr = socket.recv_fds(self.sock, MAX_MESSAGE + 1, MAX_FILES)
        if not data:
            return None, fds  # the daemon closed the socket
        if len(data) > MAX_MESSAGE:
            raise ValueError("message over %d bytes" % MAX_MESSAGE)
        return json.loads(data), fds

    def log(self, text, level="info"):
        self.send({"type": "log", "level": level, "text": text})

    def result(self, msg, data=None):
        reply = {"type": "result", "id": msg["id"]}
        if data is not None:
            reply["data"] = base64.b64encode(data).decode()
        self.send(reply)

    def error(self, msg, code, text):
        self.send({"type": "error", "id": msg.get("id", 0), "code": code, "text": text})

    def handshake(self):
        hello, fds = self.recv()
        for fd in fds:
            os.close(fd)
        if hello is None or hello.get("type") != "hello":
            raise SystemExit("no hello from the daemon")
        major = hello["version"].split(".")[0]
        if major != VERSION.split(".")[0]:
            self.error({}, "version", "driver speaks %s, daemon %s" % (VERSION, hello["version"]))
            raise SystemExit("protocol version mismatch: daemon speaks %s" % hello["version"])
        self.send({"type": "hello", "version": VERSION, "pid": os.getpid()})

    def start(self, msg, fds):
        # The granted device descriptors, in the order of msg["files"]:
        # {resource, node, kind} says what each one is.
        self.files = list(zip(msg.get("files", []), fds))
        props = msg["nub"].get("properties", {})
        self.count = int(props.get("start", 0))
        self.log("started on %s %s with %d device(s)" % (msg["nub"]["class"], msg["nub"]["name"], len(fds)))
        self.result(msg)

    def call(self, msg):
        data = base64.b64decode(msg.get("data", ""))
        method = msg["method"]
        if method == "count":
            self.count += 1
            self.result(msg, json.dumps({"count": self.count, "pid": os.getpid()}).encode())
        elif method == "echo":
            self.result(msg, data)
        elif method == "notify":
            note = {"type": "notify", "to": "clients", "msg": MSG_COUNT}
            if data:
                note["data"] = base64.b64encode(data).decode()
            self.send(note)
            self.result(msg)
        else:
            self.error(msg, "no_method", "no method %r" % method)

    def serve(self):
        self.handshake()
        while True:
            msg, fds = self.recv()
            if msg is None:
                return 1
            kind = msg.get("type")
            if kind == "start":
                self.start(msg, fds)
            elif kind == "call":
                self.call(msg)
            elif kind == "message":
                pass  # ServiceIsTerminated and the like: stop comes next
            elif kind == "will_terminate":
                pass  # nothing in flight to abort
            elif kind == "did_terminate":
                self.result(msg)
            elif kind == "stop":
                for _, fd in self.files:
                    os.close(fd)
                self.result(msg)
                return 0
            elif kind == "cancel":
                pass  # calls are answered at once: nothing to cancel
            elif kind == "error":
                print("daemon gave up: %s" % msg.get("text"), file=sys.stderr)
                return 1


def main():
    fd = int(os.environ["DRVKIT_SOCKET_FD"])
    sock = socket.socket(fileno=fd)
    sys.exit(Driver(sock).serve())


if __name__ == "__main__":
    main()
