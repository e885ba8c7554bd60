#!/usr/bin/python3
"""Long-lived clients of webapp: WebSocket echo clients (Debian's
python3-websockets) and server-sent-event clients (http.client).

Run with Debian's /usr/bin/python3. The clients run until standard input
reaches its end (or --duration passes); then they stop sending, wait up to
--settle seconds for the echoes still owed, close, and print one JSON
object per client on standard output, then one {"done": ...} line.

WebSocket client: sends "<cid> <seq>" every --interval seconds; on a
close it reconnects (unless --no-reconnect) and resends every message not
yet echoed. A close counts as clean when the server's close frame said
1001 (going away) and the closing handshake completed; anything else
(1006: no close frame) counts as abnormal.

Stubborn client (--stubborn N): a hand-written WebSocket client that
completes the opening handshake and then reads and ignores everything,
close frames included; it reports whether and when the server cut it.

SSE client: GET /events with Last-Event-ID on every reconnect; counts ids
missing or repeated across the whole run.

Once every client of the process is settled (a WebSocket client got its
first echo, a stubborn or slow one the echo of the one message it sends
after the handshake, an SSE client its first event), the process prints
one {"settled": N} line: the server then holds each connection as what
it is (hijacked, streaming), not as a request still being answered.
"""

import argparse
import asyncio
import base64
import http.client
import json
import os
import socket
import sys
import threading
import time

import websockets
import websockets.exceptions


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ws", type=int, default=0, help="WebSocket clients")
    p.add_argument("--sse", type=int, default=0, help="SSE clients")
    p.add_argument("--stubborn", type=int, default=0, help="clients that ignore close frames")
    p.add_argument("--slow", type=int, default=0,
                   help="clients that answer a close frame only after i*--slow-step seconds (i = 1..N)")
    p.add_argument("--slow-step", type=float, default=0.6)
    p.add_argument("--base", type=int, default=0, help="first client id")
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--duration", type=float, default=600)
    p.add_argument("--settle", type=float, default=10)
    p.add_argument("--no-reconnect", action="store_true")
    return p.parse_args()


class Stop:
    def __init__(self):
        self.event = threading.Event()


class Settled:
    """Counts clients settled; prints {"settled": N} when all N are."""

    def __init__(self, total):
        self.total, self.n, self.lock = total, 0, threading.Lock()
        if total == 0:
            print(json.dumps({"settled": 0}), flush=True)

    def one(self):
        with self.lock:
            self.n += 1
            if self.n == self.total:
                print(json.dumps({"settled": self.total}), flush=True)


async def ws_client(args, cid, stop, out, settled):
    url = "ws://%s:%d/ws" % (args.host, args.port)
    seq = 0
    unacked = {}  # seq -> first sent (time)
    st = {"kind": "ws", "cid": cid, "sent": 0, "resent": 0, "echoed": 0, "dup": 0,
          "clean": 0, "abnormal": 0, "abnormal_what": [], "connect_errors": 0,
          "connects": [], "closes": [], "last_echoed": 0}
    while not stop.event.is_set():
        try:
            ws = await websockets.connect(url, open_timeout=15, close_timeout=10,
                                          ping_interval=None, max_queue=None)
        except Exception as e:  # refused, reset, timed out: counted
            st["connect_errors"] += 1
            if len(st["abnormal_what"]) < 5:
                st["abnormal_what"].append("connect: %r" % (e,))
            await asyncio.sleep(0.05)
            continue
        st["connects"].append([time.time(), ws.response_headers.get("X-Webapp-Pid", "")])

        async def receive():
            async for msg in ws:
                c, s = msg.split(" ")
                s = int(s)
                if int(c) != cid:
                    st["dup"] += 1
                elif s in unacked:
                    del unacked[s]
                    if st["echoed"] == 0:
                        settled.one()
                    st["echoed"] += 1
                    st["last_echoed"] = max(st["last_echoed"], s)
                else:
                    st["dup"] += 1

        async def send():
            nonlocal seq
            for s in sorted(unacked):
                await ws.send("%d %d" % (cid, s))
                st["resent"] += 1
            while not stop.event.is_set():
                seq += 1
                unacked[seq] = time.time()
                st["sent"] += 1
                await ws.send("%d %d" % (cid, seq))
                await asyncio.sleep(args.interval)
            # Stopping: wait for the echoes owed, then close (1000).
            deadline = time.time() + args.settle
            while unacked and time.time() < deadline:
                await asyncio.sleep(0.05)
            await ws.close()

        rt = asyncio.ensure_future(receive())
        stt = asyncio.ensure_future(send())
        await asyncio.wait([rt, stt], return_when=asyncio.FIRST_COMPLETED)
        for t in (rt, stt):
            if not t.done():
                try:
                    await asyncio.wait_for(t, timeout=args.settle + 5)
                except Exception:
                    pass
        for t in (rt, stt):
            if t.done() and not t.cancelled() and t.exception() is not None:
                e = t.exception()
                if not isinstance(e, websockets.exceptions.ConnectionClosed):
                    st["abnormal"] += 1
                    st["abnormal_what"].append("error: %r" % (e,))
        await ws.wait_closed()
        rcvd, sent = ws.close_rcvd, ws.close_sent
        now = time.time()
        code = rcvd.code if rcvd is not None else 1006
        st["closes"].append([now, code])
        if stop.event.is_set() and sent is not None and sent.code == 1000 and rcvd is not None:
            pass  # our own close at the end
        elif rcvd is not None and rcvd.code == 1001 and sent is not None:
            st["clean"] += 1
        else:
            st["abnormal"] += 1
            if len(st["abnormal_what"]) < 5:
                st["abnormal_what"].append("close rcvd=%s sent=%s" % (rcvd, sent))
        if args.no_reconnect:
            break
    st["lost"] = len(unacked)
    # Unechoed messages older than an echoed one: the server read past
    # them and dropped them (the server echoes in order).
    st["lost_before_echo"] = len([q for q in unacked if q < st["last_echoed"]])
    out.append(st)


def masked(opcode, payload):
    """A client's frame (FIN set, masked as a client's must be)."""
    mask = os.urandom(4)
    return (bytes([0x80 | opcode, 0x80 | len(payload)]) + mask +
            bytes(c ^ mask[i % 4] for i, c in enumerate(payload)))


async def stubborn_client(args, cid, stop, out, settled, delay=None):
    """Ignores close frames; with delay, answers the first one after delay
    seconds (a close frame 1001 of its own, masked as a client's must be)."""
    st = {"kind": "stubborn" if delay is None else "slow", "cid": cid, "connected": False,
          "close_frames": 0, "cut": False, "cut_at": 0.0, "answered_at": 0.0, "error": ""}
    try:
        reader, writer = await asyncio.open_connection(args.host, args.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(("GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n" % (args.host, args.port, key)).encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        st["connected"] = head.startswith(b"HTTP/1.1 101")
        if st["connected"]:
            # One text message and its echo (0x81, unmasked, short).
            msg = ("%d 1" % cid).encode()
            writer.write(masked(0x1, msg))
            await writer.drain()
            echo = await asyncio.wait_for(reader.readexactly(2 + len(msg)), timeout=15)
            if echo != bytes([0x81, len(msg)]) + msg:
                raise ValueError("echo %r, want %r" % (echo, msg))
            settled.one()
        while True:
            if stop.event.is_set():
                break
            try:
                b = await asyncio.wait_for(reader.read(4096), timeout=0.2)
            except asyncio.TimeoutError:
                continue
            if not b:
                st["cut"] = True
                st["cut_at"] = time.time()
                break
            # A close frame starts with 0x88 (the server sends no other).
            n = b.count(b"\x88")
            if n and st["close_frames"] == 0 and delay is not None:
                await asyncio.sleep(delay)
                writer.write(masked(0x8, bytes([0x03, 0xE9])))  # 1001
                await writer.drain()
                st["answered_at"] = time.time()
            st["close_frames"] += n
        writer.close()
    except Exception as e:
        st["error"] = repr(e)
        st["cut"] = True
        st["cut_at"] = time.time()
    out.append(st)


def sse_client(args, cid, stop, out, lock, settled):
    st = {"kind": "sse", "cid": cid, "events": 0, "missing": 0, "repeated": 0, "streams": 0,
          "errors": 0, "error_what": [], "connects": []}
    last = None
    while not stop.event.is_set():
        conn = http.client.HTTPConnection(args.host, args.port, timeout=15)
        try:
            headers = {"Accept": "text/event-stream"}
            if last is not None:
                headers["Last-Event-ID"] = str(last)
            conn.request("GET", "/events", headers=headers)
            resp = conn.getresponse()
            if resp.status != 200:
                st["errors"] += 1
                st["error_what"].append("status %d" % resp.status)
                resp.read()
                continue
            st["streams"] += 1
            st["connects"].append([time.time(), resp.getheader("X-Webapp-Pid", "")])
            ev_id = None
            while not stop.event.is_set():
                line = resp.readline()
                if not line:
                    break  # the stream ended: reconnect
                line = line.rstrip(b"\r\n")
                if line.startswith(b"id:"):
                    ev_id = int(line[3:].strip())
                elif line == b"" and ev_id is not None:
                    want = (last or 0) + 1
                    if ev_id > want:
                        st["missing"] += ev_id - want
                    elif ev_id < want:
                        st["repeated"] += want - ev_id
                    if last is None or ev_id > last:
                        last = ev_id
                    if st["events"] == 0:
                        settled.one()
                    st["events"] += 1
                    ev_id = None
        except Exception as e:
            st["errors"] += 1
            if len(st["error_what"]) < 5:
                st["error_what"].append(repr(e))
            time.sleep(0.05)
        finally:
            conn.close()
    st["last"] = last or 0
    with lock:
        out.append(st)


async def main_async(args, stop, settled):
    out = []
    tasks = [asyncio.ensure_future(ws_client(args, args.base + i, stop, out, settled)) for i in range(args.ws)]
    tasks += [asyncio.ensure_future(stubborn_client(args, args.base + args.ws + i, stop, out, settled))
              for i in range(args.stubborn)]
    tasks += [asyncio.ensure_future(stubborn_client(args, args.base + args.ws + args.stubborn + i, stop, out,
                                                    settled, delay=(i + 1) * args.slow_step))
              for i in range(args.slow)]
    if tasks:
        await asyncio.gather(*tasks)
    return out


def main():
    args = parse_args()
    stop = Stop()

    def watch_stdin():
        sys.stdin.read()
        stop.event.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    threading.Timer(args.duration, stop.event.set).start()
    print(json.dumps({"ready": True}), flush=True)
    settled = Settled(args.ws + args.stubborn + args.slow + args.sse)
    sse_out, lock = [], threading.Lock()
    threads = [threading.Thread(target=sse_client, args=(args, args.base + 100000 + i, stop, sse_out, lock, settled))
               for i in range(args.sse)]
    for t in threads:
        t.start()
    out = asyncio.run(main_async(args, stop, settled))
    stop.event.wait()
    for t in threads:
        t.join()
    for st in out + sse_out:
        print(json.dumps(st))
    print(json.dumps({"done": len(out) + len(sse_out)}), flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
