#!/usr/bin/env python3
"""pycounter: a drvkit driver written in Python with the standard library
only. It speaks the out-of-process driver protocol (PROTOCOL.md at the root
of the drvkit repository) on the socket the daemon passed as descriptor
$DRVKIT_SOCKET_FD: one JSON object per SOCK_SEQPACKET message, descriptors
attached with SCM_RIGHTS.

Methods: "count" adds one and returns {"count": n, "pid": pid}; "echo"
returns its input; "notify" sends its input to every client of the
instance as message 0x10001, the driver's first own type.

It serves direct call channels (protocol 1.3): an application's
connection handed over by the daemon, on which the application's call
frames of the user-client protocol (userclient/wire/PROTOCOL.md) arrive
and are answered here, without the daemon in between.
"""

import base64
import json
import os
import selectors
import socket
import struct
import sys

VERSION = "1.3"               # the protocol version this driver speaks
MAX_MESSAGE = 128 * 1024      # the protocol's message size limit
MAX_FILES = 16
MSG_DRIVER_DEFINED = 0x10000  # the first message type drivers may send
MSG_COUNT = MSG_DRIVER_DEFINED + 1

# User-client frames on a direct call channel: a 4-byte big-endian length
# of what follows, then type, flags, 2 reserved bytes, an 8-byte request id
# and a 4-byte control length; the control JSON, then the data.
FRAME_HEADER = struct.Struct(">IBBHQI")
F_CALL, F_REPLY, F_ERROR, F_PING, F_CANCEL = 5, 6, 8, 10, 11
FLAG_FATAL = 1


class Channel:
    """One application's direct call channel."""

    def __init__(self, sock, methods, max_frame):
        self.sock = sock
        self.methods = {m["name"]: m for m in methods}
        self.max_frame = max_frame or 1 << 20
        self.buf = b""

    def send(self, ftype, fid, control=b"", data=b"", flags=0):
        # An application that went, or does not read, loses its channel
        # (serve_channel closes it), not the driver.
        self.sock.sendall(FRAME_HEADER.pack(16 + len(control) + len(data), ftype, flags, 0, fid, len(control)) + control + data)

    def error(self, fid, code, text, flags=0):
        self.send(F_ERROR, fid, json.dumps({"code": code, "message": text}).encode(), flags=flags)

    def frames(self):
        """The whole frames received so far: (type, flags, id, control, data)."""
        while len(self.buf) >= 4:
            (length,) = struct.unpack_from(">I", self.buf)
            if length < 16 or length > self.max_frame:
                raise ValueError("frame length %d" % length)
            if len(self.buf) < 4 + length:
                return
            _, ftype, flags, reserved, fid, clen = FRAME_HEADER.unpack_from(self.buf)
            if reserved or flags or clen > length - 16:
                raise ValueError("malformed frame header")
            body = self.buf[20:4 + length]
            self.buf = self.buf[4 + length:]
            yield ftype, fid, body[:clen], body[clen:]


class Driver:
    def __init__(self, sock):
        self.sock = sock
        self.count = 0
        self.files = []
        self.channels = {}        # channel number -> Channel
        self.ending = None        # the termination's root cause, once it began
        self.sel = selectors.DefaultSelector()

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
        self.send({"type": "hello", "version": VERSION, "pid": os.getpid(), "direct": True})

    def start(self, msg, fds):
        # The granted device descriptors, in the order of msg["files"]:
        # {resource, node, kind} says what each one is.
        self.files = list(zip(msg.get("files", []), fds))
        props = msg["nub"].get("properties", {})
        self.count = int(props.get("start", 0))
        self.log("started on %s %s with %d device(s)" % (msg["nub"]["class"], msg["nub"]["name"], len(fds)))
        self.result(msg)

    def run(self, method, data):
        """A method's output, or raises LookupError for an unknown one."""
        if method == "count":
            self.count += 1
            return json.dumps({"count": self.count, "pid": os.getpid()}).encode()
        if method == "echo":
            return data
        if method == "notify":
            note = {"type": "notify", "to": "clients", "msg": MSG_COUNT}
            if data:
                note["data"] = base64.b64encode(data).decode()
            self.send(note)
            return b""
        raise LookupError("no method %r" % method)

    def call(self, msg):
        try:
            self.result(msg, self.run(msg["method"], base64.b64decode(msg.get("data", ""))))
        except LookupError as e:
            self.error(msg, "no_method", str(e))

    def open_channel(self, msg, fds):
        if len(fds) != 1:
            for fd in fds:
                os.close(fd)
            self.error(msg, "protocol", "a channel carries one descriptor")
            return
        sock = socket.socket(fileno=fds[0])
        sock.settimeout(2.0)  # a send to an application that does not read gives up
        ch = Channel(sock, msg.get("methods", []), msg.get("max_frame", 0))
        self.channels[msg["channel"]] = ch
        self.sel.register(ch.sock, selectors.EVENT_READ, msg["channel"])
        self.result(msg)

    def close_channel(self, number):
        ch = self.channels.pop(number, None)
        if ch is not None:
            self.sel.unregister(ch.sock)
            ch.sock.close()

    def serve_channel(self, number):
        ch = self.channels.get(number)
        if ch is None:
            return  # closed by a daemon message of the same select()
        try:
            data = ch.sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self.close_channel(number)  # the application went
            return
        ch.buf += data
        try:
            for ftype, fid, control, data in ch.frames():
                if ftype == F_CALL:
                    self.channel_call(ch, fid, json.loads(control).get("method", ""), data)
                elif ftype == F_PING:
                    ch.send(F_REPLY, fid, data=data)
                elif ftype != F_CANCEL:  # calls are answered at once: nothing to cancel
                    raise ValueError("a direct call channel serves call, cancel and ping")
        except (ValueError, KeyError, AttributeError) as e:
            try:
                ch.error(0, "protocol", str(e), FLAG_FATAL)
            except OSError:
                pass
            self.close_channel(number)
        except OSError:
            self.close_channel(number)  # the application went, or stopped reading

    def channel_call(self, ch, fid, method, data):
        m = ch.methods.get(method)
        if m is None:
            ch.error(fid, "no_method", "no method %r" % method)
        elif self.ending is not None:
            # Terminated: as the daemon would answer.
            code = "no_device" if self.ending == "unplug" else "terminated"
            ch.error(fid, code, "terminated (%s)" % self.ending)
        elif m.get("max_input") and len(data) > m["max_input"]:
            ch.error(fid, "failed", "%d bytes of input, max_input is %d" % (len(data), m["max_input"]))
        else:
            out = self.run(method, data)
            if m.get("max_output") and len(out) > m["max_output"]:
                ch.error(fid, "failed", "the driver returned %d bytes, max_output is %d" % (len(out), m["max_output"]))
            else:
                ch.send(F_REPLY, fid, data=out)

    def serve(self):
        self.handshake()
        self.sel.register(self.sock, selectors.EVENT_READ, None)
        while True:
            for key, _ in self.sel.select():
                if key.data is not None:
                    self.serve_channel(key.data)
                    continue
                done = self.daemon_message()
                if done is not None:
                    return done

    def daemon_message(self):
        """Serves one message of the daemon's: an exit status at the end."""
        msg, fds = self.recv()
        if msg is None:
            return 1
        kind = msg.get("type")
        if kind == "start":
            self.start(msg, fds)
        elif kind == "call":
            self.call(msg)
        elif kind == "channel":
            self.open_channel(msg, fds)
        elif kind == "channel_close":
            self.close_channel(msg["channel"])
        elif kind == "message":
            if msg.get("msg") == 1:  # ServiceIsTerminated: stop comes next
                self.ending = msg.get("root_cause") or msg.get("cause") or "unknown"
        elif kind == "will_terminate":
            self.ending = self.ending or msg.get("root_cause") or msg.get("cause") or "unknown"
        elif kind == "did_terminate":
            self.result(msg)
        elif kind == "stop":
            for number in list(self.channels):
                self.close_channel(number)  # no call after stop
            for _, fd in self.files:
                os.close(fd)
            self.result(msg)
            return 0
        elif kind == "cancel":
            pass  # calls are answered at once: nothing to cancel
        elif kind == "error":
            print("daemon gave up: %s" % msg.get("text"), file=sys.stderr)
            return 1
        return None


def main():
    fd = int(os.environ["DRVKIT_SOCKET_FD"])
    sock = socket.socket(fileno=fd)
    sys.exit(Driver(sock).serve())


if __name__ == "__main__":
    main()
