#!/usr/bin/env python3
"""Mission analytics from BRAiN's event stream: an outside subscriber, in Python.

It follows the JetStream stream that mirrors the event log (stream sequence = global
position) with nothing but what the read-only `reader` NATS user may do: read the stream's
info, get a message by its sequence, and subscribe to the live subjects, which serve only to
wake it up. It creates no consumer (the reader may not).

It keeps a checkpoint of its own: the last position it counted together with everything it
counted up to there, in one JSON file replaced atomically after each batch. A restart, even
after SIGKILL, goes on from that position with those totals, so nothing is counted twice or
missed.

Per agent kind (the `agent` of the mission's MissionEnqueued):
  completed      MissionCompleted
  failed         MissionAttemptFailed or MissionLeaseExpired without `retry_at_ms` (the
                 mission failed for good)
  queue_wait_ms  a mission's first MissionStarted `at_ms` minus its MissionEnqueued `at_ms`
  run_ms         MissionCompleted or MissionAttemptFailed `at_ms` minus the mission's latest
                 MissionStarted `at_ms`
  llm            per UTC day of the call's `at_ms`: calls, input and output tokens, cost in
                 USD. MissionLlmCalled counts under its mission's kind, LlmCalled (a call made
                 outside any mission) under "(none)". A call marked `replayed` is skipped: it
                 was spent, and counted, in the run it was copied from.
p50 and p95 are nearest-rank percentiles (what PostgreSQL's percentile_disc answers).

    pip install nats-py==2.16.0
    NATS_URL=nats://reader:<password>@nats:4222 \\
        python3 analytics_subscriber.py --checkpoint analytics.json

The totals are printed on stdout as one line of JSON on SIGUSR1, and at exit (SIGTERM,
SIGINT, or with --exit-when-caught-up once the stream's last event is counted). Every sample,
and every mission's kind, is kept in the checkpoint, which is rewritten whole after each
batch: it grows with the number of missions, and catching up slows as it does. That is fine
for an example; a long log wants a histogram per kind and a store with transactions (SQLite).

Exit codes: 0 done; 2 bad arguments or checkpoint; 3 the stream cannot be followed (no
connection to NATS within 30 s, no such stream, or it no longer holds the events after the
checkpoint); 4 an event it cannot read (an
unknown envelope layout or schema version, a message not at its own position).
"""

import argparse
import asyncio
import datetime
import json
import os
import signal
import sys
import time

import nats
from nats.js.errors import NotFoundError

# Deadline of one NATS request (stream info, one message).
REQUEST_TIMEOUT_S = 5.0
# How long the first connection may take (once connected, the client reconnects without end).
CONNECT_TIMEOUT_S = 30.0
# How often an idle subscriber looks at the stream when no live message woke it up.
IDLE_CHECK_S = 1.0
# Wait after a failed request before trying again.
RETRY_BACKOFF_S = 1.0
# Messages fetched (concurrently) and counted per checkpoint write, at most.
BATCH_MAX = 1_000
CHECKPOINT_FORMAT = 1
ENVELOPE_LAYOUT = 1
# The payload layouts this program reads; any other version of these types stops it.
KNOWN_SCHEMA_VERSIONS = {"MissionStarted": {1, 2}}
READ_TYPES = {
    "MissionEnqueued", "MissionStarted", "MissionCompleted", "MissionAttemptFailed",
    "MissionLeaseExpired", "MissionLlmCalled", "LlmCalled",
}
NO_MISSION = "(none)"
UNKNOWN_KIND = "(unknown)"


class Unreadable(Exception):
    """An event this program cannot read: counting on would give wrong totals."""


class CannotFollow(Exception):
    """NATS, the stream, or the events after the checkpoint cannot be reached."""


# --- The envelope: postcard, decoded by hand (README, "Events on the bus") -----------------

def _varint(data, i):
    value = shift = 0
    while True:
        if i >= len(data) or shift > 133:
            raise Unreadable("envelope: truncated or overlong varint")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7


def _text(data, i):
    length, i = _varint(data, i)
    if i + length > len(data):
        raise Unreadable("envelope: truncated string")
    try:
        return data[i:i + length].decode("utf-8"), i + length
    except UnicodeDecodeError as error:
        raise Unreadable(f"envelope: {error}") from error


def decode_envelope(data):
    """The event in a bus message's body, as a dict."""
    if not data or data[0] != ENVELOPE_LAYOUT:
        raise Unreadable(f"envelope layout {data[0] if data else None} is not known")
    event = {}
    i = 1
    event["global_position"], i = _varint(data, i)
    event["stream_type"], i = _text(data, i)
    event["stream_id"], i = _text(data, i)
    event["version"], i = _varint(data, i)
    if i + 16 > len(data):
        raise Unreadable("envelope: truncated event id")
    event["event_id"] = data[i:i + 16].hex()
    i += 16
    event["event_type"], i = _text(data, i)
    event["schema_version"], i = _varint(data, i)
    payload, i = _text(data, i)
    metadata, i = _text(data, i)
    recorded, i = _varint(data, i)
    try:
        event["payload"] = json.loads(payload)
        event["metadata"] = json.loads(metadata)
    except ValueError as error:
        raise Unreadable(f"envelope at position {event['global_position']}: {error}") from error
    event["recorded_at_unix_ns"] = (recorded >> 1) ^ -(recorded & 1)  # zig-zag
    return event


# --- Counting ---------------------------------------------------------------------------------

def new_state(stream):
    # `missions`: per mission id, its kind and the times still needed for its samples.
    return {"format": CHECKPOINT_FORMAT, "stream": stream, "position": 0,
            "missions": {}, "kinds": {}}


def _kind(state, name):
    return state["kinds"].setdefault(name, {
        "completed": 0, "failed": 0, "queue_wait_ms": [], "run_ms": [], "llm": {}})


def _count_call(state, kind, call, at_ms):
    if call.get("replayed"):
        return
    day = datetime.datetime.fromtimestamp(at_ms / 1000, datetime.timezone.utc).date().isoformat()
    usage = _kind(state, kind)["llm"].setdefault(
        day, {"calls": 0, "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0})
    usage["calls"] += 1
    usage["input_tokens"] += call["input_tokens"]
    usage["output_tokens"] += call["output_tokens"]
    usage["cost_usd"] += call["cost_usd"]


def apply(state, event):
    """Counts one event into `state` (events come in position order, each once)."""
    kind_of_event = event["event_type"]
    if kind_of_event not in READ_TYPES:
        return
    known = KNOWN_SCHEMA_VERSIONS.get(kind_of_event, {1})
    if event["schema_version"] not in known:
        raise Unreadable(f"{kind_of_event} at schema version {event['schema_version']} "
                         f"(position {event['global_position']}) is not known")
    p = event["payload"]
    if kind_of_event == "LlmCalled":
        _count_call(state, NO_MISSION, p["call"], p["at_ms"])
        return
    missions = state["missions"]
    if kind_of_event == "MissionEnqueued":
        missions[event["stream_id"]] = {"kind": p["spec"]["agent"], "enqueued_at_ms": p["at_ms"],
                                        "started_at_ms": None, "waited": False}
        return
    # A mission enqueued before the position this program started from has no known kind.
    mission = missions.setdefault(event["stream_id"], {
        "kind": UNKNOWN_KIND, "enqueued_at_ms": None, "started_at_ms": None, "waited": True})
    totals = _kind(state, mission["kind"])
    if kind_of_event == "MissionStarted":
        if not mission["waited"]:
            totals["queue_wait_ms"].append(p["at_ms"] - mission["enqueued_at_ms"])
            mission["waited"] = True
        mission["started_at_ms"] = p["at_ms"]
    elif kind_of_event == "MissionLlmCalled":
        _count_call(state, mission["kind"], p["call"], p["at_ms"])
    elif kind_of_event in ("MissionCompleted", "MissionAttemptFailed"):
        if mission["started_at_ms"] is not None:
            totals["run_ms"].append(p["at_ms"] - mission["started_at_ms"])
        mission["started_at_ms"] = None
        if kind_of_event == "MissionCompleted":
            totals["completed"] += 1
        elif p.get("retry_at_ms") is None:
            totals["failed"] += 1
    elif kind_of_event == "MissionLeaseExpired":
        mission["started_at_ms"] = None
        if p.get("retry_at_ms") is None:
            totals["failed"] += 1


def _percentiles(samples):
    ordered = sorted(samples)

    def rank(p):  # nearest rank: the smallest sample with at least p of them at or below it
        return ordered[max(0, -(-p * len(ordered) // 100) - 1)] if ordered else None

    return {"count": len(ordered), "p50": rank(50), "p95": rank(95)}


def totals(state):
    kinds = {}
    for name, t in sorted(state["kinds"].items()):
        kinds[name] = {
            "completed": t["completed"], "failed": t["failed"],
            "queue_wait_ms": _percentiles(t["queue_wait_ms"]),
            "run_ms": _percentiles(t["run_ms"]),
            "llm": dict(sorted(t["llm"].items())),
        }
    return {"position": state["position"], "kinds": kinds}


def print_totals(state):
    print(json.dumps(totals(state), sort_keys=True), flush=True)


# --- The checkpoint -----------------------------------------------------------------------------

def load_checkpoint(path, stream):
    try:
        with open(path, encoding="utf-8") as f:
            state = json.load(f)
    except FileNotFoundError:
        return new_state(stream)
    except (OSError, ValueError) as error:
        raise SystemExit(f"checkpoint {path}: cannot be read: {error}") from error
    if state.get("format") != CHECKPOINT_FORMAT or state.get("stream") != stream:
        raise SystemExit(f"checkpoint {path}: format {state.get('format')} of stream "
                         f"{state.get('stream')}, not format {CHECKPOINT_FORMAT} of {stream}")
    return state


def save_checkpoint(path, state):
    """Replaces the checkpoint at once: a reader (or a restart) sees the old or the new."""
    temporary = f"{path}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(state, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


# --- Following the stream ---------------------------------------------------------------------

async def fetch(js, stream, first, last):
    """Events first..last in order, stopping at the first sequence the stream lacks (the
    relay rebuilding it): what is missing is fetched again on the next round."""
    got = await asyncio.gather(*(js.get_msg(stream, seq) for seq in range(first, last + 1)),
                               return_exceptions=True)
    events = []
    for seq, message in zip(range(first, last + 1), got):
        if isinstance(message, NotFoundError):
            break
        if isinstance(message, BaseException):
            raise message
        event = decode_envelope(message.data)
        if event["global_position"] != seq:
            raise Unreadable(f"the message at sequence {seq} holds position "
                             f"{event['global_position']}")
        events.append(event)
    return events


async def pause(stop, seconds, woken=None):
    """Waits `seconds`, less if asked to stop (or woken by a live message)."""
    waits = [asyncio.ensure_future(stop.wait())]
    if woken is not None:
        waits.append(asyncio.ensure_future(woken.wait()))
    _, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    for waiting in pending:
        waiting.cancel()


async def connect(url, stop):
    """A connection that reconnects without end (a follower rides out a NATS restart), or
    None when asked to stop first. The first connection is given CONNECT_TIMEOUT_S."""
    errors = []

    async def noted(error):
        errors[:] = [error]  # the last one, for the message if the first connection fails
        print(f"analytics: nats: {error!r}", file=sys.stderr)

    connecting = asyncio.ensure_future(nats.connect(
        url, connect_timeout=REQUEST_TIMEOUT_S, max_reconnect_attempts=-1,
        name="analytics", error_cb=noted))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([connecting, stopping], timeout=CONNECT_TIMEOUT_S,
                       return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if connecting.done():
        return connecting.result()
    connecting.cancel()
    if stop.is_set():
        return None
    last = f": {errors[-1]!r}" if errors else ""
    raise CannotFollow(f"no connection to NATS within {CONNECT_TIMEOUT_S:.0f} s{last}")


async def follow(args, state, stop):
    nc = await connect(args.url, stop)
    if nc is None:
        return
    try:
        js = nc.jetstream(timeout=REQUEST_TIMEOUT_S)
        try:
            info = await js.stream_info(args.stream)
        except NotFoundError as error:
            raise CannotFollow(f"stream {args.stream} does not exist") from error
        woken = asyncio.Event()

        async def wake(_message):
            woken.set()

        # Live messages only say "there is more"; every event is read by its sequence.
        await nc.subscribe(info.config.subjects[0], cb=wake)
        while not stop.is_set():
            # Cleared before looking, so that a message arriving after the look still wakes.
            woken.clear()
            started = time.monotonic()
            try:
                on_stream = (await js.stream_info(args.stream)).state
                behind = on_stream.last_seq > state["position"]
                if behind and on_stream.first_seq > state["position"] + 1:
                    raise CannotFollow(
                        f"stream {args.stream} starts at {on_stream.first_seq}, after the "
                        f"checkpoint's {state['position']}: read the rest from GET /api/events")
                last = min(on_stream.last_seq, state["position"] + args.batch)
                events = []
                if last > state["position"]:
                    events = await fetch(js, args.stream, state["position"] + 1, last)
            except (CannotFollow, Unreadable):
                raise
            except Exception as error:  # NATS unreachable, a timeout, the stream being rebuilt
                print(f"analytics: {type(error).__name__}: {error}; retrying", file=sys.stderr)
                await pause(stop, RETRY_BACKOFF_S)
                continue
            for event in events:
                try:
                    apply(state, event)
                except (KeyError, TypeError, ValueError) as error:
                    where = f"{event['event_type']} at position {event['global_position']}"
                    raise Unreadable(f"{where}: {type(error).__name__} {error}") from error
            if events:
                state["position"] = events[-1]["global_position"]
                save_checkpoint(args.checkpoint, state)
            if state["position"] >= on_stream.last_seq:
                if args.exit_when_caught_up:
                    return
                await pause(stop, IDLE_CHECK_S, woken)
            elif not events:
                # The next event is not on the stream yet (the relay rebuilding it).
                await pause(stop, IDLE_CHECK_S, woken)
            elif args.max_rate:
                # Going easy on the server while catching up.
                rest = len(events) / args.max_rate - (time.monotonic() - started)
                if rest > 0:
                    await pause(stop, rest)
    finally:
        await nc.close()


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("NATS_URL"),
                        help="nats://reader:<password>@host:4222 (default: $NATS_URL)")
    parser.add_argument("--stream", default="BRAIN_EVENTS",
                        help="the namespace's stream, <NAMESPACE>_EVENTS (default BRAIN_EVENTS)")
    parser.add_argument("--checkpoint", required=True, help="the checkpoint file")
    parser.add_argument("--batch", type=int, default=BATCH_MAX,
                        help=f"events per checkpoint write, 1 to {BATCH_MAX} (default {BATCH_MAX})")
    parser.add_argument("--max-rate", type=float, default=0,
                        help="events per second at most while catching up (default: no limit)")
    parser.add_argument("--exit-when-caught-up", action="store_true",
                        help="print the totals and exit once the stream's last event is counted")
    args = parser.parse_args()
    if not args.url:
        parser.error("no NATS URL: pass --url or set NATS_URL")
    if not 1 <= args.batch <= BATCH_MAX:
        parser.error(f"--batch must be 1 to {BATCH_MAX}")
    if args.max_rate < 0:
        parser.error("--max-rate must not be negative")
    return args


async def main():
    args = parse_args()
    try:
        state = load_checkpoint(args.checkpoint, args.stream)
    except SystemExit as error:
        print(f"analytics: {error}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, print_totals, state)
    try:
        await follow(args, state, stop)
    except CannotFollow as error:
        print(f"analytics: {error}", file=sys.stderr)
        return 3
    except Unreadable as error:
        print(f"analytics: {error}", file=sys.stderr)
        return 4
    print_totals(state)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
