#!/usr/bin/env python3
"""A BRAiN agent in plain Python (standard library only).

It registers, heartbeats every `heartbeat_every_s` seconds from a thread of its own, claims
missions with a long-poll, reports progress while it works (each report extends its lease)
and completes with a result. It follows the protocol in the README:

    POST /api/agents/register             -> agent_id
    POST /api/agents/heartbeat            (every 10 s; the answer may ask for a restart)
    POST /api/agents/{id}/claim?wait_s=20 -> 200 mission + lease_token, or 204
    POST /api/missions/{id}/progress      {lease_token, note, lease_s}
    POST /api/missions/{id}/complete      {lease_token, result}
    POST /api/missions/{id}/fail          {lease_token, error, retryable}

It authenticates with an API key (`BRAIN_API_KEY` or `--key`): an `agent` key, made with
`brain keys create --role agent --kind echo --name py-agents --owner me`, may register itself,
heartbeat, claim and report for the kinds it names, and nothing else.

A report answered 409 `stale_lease` means the mission is no longer ours (our lease expired,
or the supervisor gave it to another agent): drop it and claim again.

The "work" is a stand-in: it waits `payload.work_s` seconds (default 1), reporting progress
every second, and answers with the prompt reversed.

    BRAIN_URL=http://127.0.0.1:8000 BRAIN_API_KEY=brn_... \\
        python3 examples/python_agent.py --name py-1 --kind echo
"""

import argparse
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request


class Brain:
    def __init__(self, url, key):
        self.url = url.rstrip("/")
        self.key = key

    def post(self, path, body=None, timeout=40):
        data = json.dumps(body if body is not None else {}).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method="POST",
            headers={"content-type": "application/json", "authorization": f"Bearer {self.key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                text = response.read().decode()
                return response.status, (json.loads(text) if text else None)
        except urllib.error.HTTPError as error:
            text = error.read().decode()
            return error.code, (json.loads(text) if text else None)


def log(*parts):
    print(*parts, flush=True)


def heartbeats(brain, agent_id, state, stop):
    """Sends a heartbeat every `heartbeat_every_s`; reacts to stop and restart requests."""
    every = 10
    while not stop.is_set():
        body = {"agent_id": agent_id, "status": "busy" if state["running"] else "idle",
                "load": 1.0 if state["running"] else 0.0, "running": list(state["running"])}
        if state.pop("restarted", False):
            body["restarted"] = True
        try:
            status, answer = brain.post("/api/agents/heartbeat", body, timeout=10)
            if status == 200:
                every = answer.get("heartbeat_every_s", every)
                state["active"] = answer["state"] == "active"
                if answer.get("restart_requested"):
                    # A real agent would reload its model or configuration here.
                    log("restart requested: restarting")
                    state["restarted"] = True
            else:
                log("heartbeat refused:", status, answer)
        except OSError as error:
            log("heartbeat failed:", error)
        stop.wait(state.get("heartbeat_every_s") or every)


def work(brain, mission, state):
    mission_id, token = mission["mission_id"], mission["lease_token"]
    payload = mission.get("payload") or {}
    work_s = float(payload.get("work_s", 1))
    state["running"].add(mission_id)
    try:
        started = time.monotonic()
        while time.monotonic() - started < work_s:
            time.sleep(min(1.0, work_s))
            status, answer = brain.post(
                f"/api/missions/{mission_id}/progress",
                {"lease_token": token, "note": f"{time.monotonic() - started:.0f}s in", "lease_s": 30},
            )
            if status == 409:
                log("lost the mission:", answer["error"]["message"])
                return
        prompt = str(payload.get("prompt", mission["name"]))
        result = {"answer": prompt[::-1], "by": mission.get("agent_name")}
        status, answer = brain.post(
            f"/api/missions/{mission_id}/complete", {"lease_token": token, "result": result}
        )
        log("completed" if status == 200 else f"completion refused ({status})", mission_id)
    except Exception as error:  # noqa: BLE001 - any failure of the work is the attempt's
        brain.post(f"/api/missions/{mission_id}/fail",
                   {"lease_token": token, "error": str(error), "retryable": True})
    finally:
        state["running"].discard(mission_id)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("BRAIN_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--key", default=os.environ.get("BRAIN_API_KEY"),
                        help="the API key (default: $BRAIN_API_KEY)")
    parser.add_argument("--name", default=f"python-{os.getpid()}")
    parser.add_argument("--kind", default="echo")
    parser.add_argument("--owner", default="examples")
    parser.add_argument("--heartbeat-every-s", type=float, default=None,
                        help="override the server's advice (for tests)")
    parser.add_argument("--max-missions", type=int, default=0, help="stop after N (0: never)")
    args = parser.parse_args()

    if not args.key:
        parser.error("an API key is needed: --key or BRAIN_API_KEY")
    brain = Brain(args.url, args.key)
    status, agent = brain.post("/api/agents/register", {
        "name": args.name, "kind": args.kind, "owner": args.owner, "version": "1.0",
        "capabilities": ["reverse"], "labels": {"language": "python"},
    })
    if status not in (200, 201):
        log("cannot register:", status, agent)
        return 1
    agent_id = agent["agent_id"]
    log("registered", agent_id)

    state = {"running": set(), "active": True, "heartbeat_every_s": args.heartbeat_every_s}
    stop = threading.Event()
    threading.Thread(target=heartbeats, args=(brain, agent_id, state, stop), daemon=True).start()
    done = 0
    try:
        while args.max_missions == 0 or done < args.max_missions:
            if not state["active"]:
                time.sleep(1)
                continue
            status, mission = brain.post(f"/api/agents/{agent_id}/claim?wait_s=20")
            if status == 204:
                continue
            if status != 200:
                log("claim refused:", status, mission)
                time.sleep(1)
                continue
            log("claimed", mission["mission_id"], "attempt", mission["attempt"])
            mission["agent_name"] = args.name
            work(brain, mission, state)
            done += 1
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
    return 0


if __name__ == "__main__":
    sys.exit(main())
