"""Drives BRAiN's MCP server with the official Python MCP client, as an outside client would.

    drive.py http  URL TOKEN [RUNS]            streamable HTTP at URL (http://host:port/mcp)
    drive.py stdio BRAIN URL TOKEN [RUNS]      `BRAIN mcp` over stdio, relaying to URL

It lists the tools, enqueues an echo mission that takes a moment and waits for it (with a
progress token, so progress notifications must arrive), reads its result and its history
resource, then times RUNS echo missions from `tools/call enqueue_mission` to
`wait_for_mission` returning. Any surprise raises (exit status 1). The last line of stdout is
one JSON object: what the calling test checks further (mission ids, latencies).
"""

import json
import sys
import time

import anyio
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

TOOLS = {
    "enqueue_mission",
    "get_mission",
    "list_missions",
    "cancel_mission",
    "wait_for_mission",
    "list_agents",
    "chat",
}


def structured(result):
    """The tool's answer, or an AssertionError with its error body."""
    assert not result.is_error, f"tool refused: {result.structured_content or result.content}"
    return result.structured_content


def percentile(sorted_ms, fraction):
    index = min(len(sorted_ms) - 1, max(0, round(fraction * (len(sorted_ms) - 1))))
    return sorted_ms[index]


async def drive(client, runs):
    report = {}
    listed = await client.list_tools()
    names = {tool.name for tool in listed.tools}
    assert names == TOOLS, f"tools: {sorted(names)}"
    for tool in listed.tools:
        assert tool.input_schema.get("type") == "object", tool.name

    # An echo mission that takes a moment, followed with progress notifications.
    payload = {"delay_ms": 1500, "said": "hello over MCP"}
    enqueued = structured(
        await client.call_tool(
            "enqueue_mission", {"name": "mcp hello", "agent": "echo", "payload": payload}
        )
    )
    mission_id = enqueued["mission_id"]
    assert enqueued["status"] in ("queued", "running"), enqueued
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    waited = structured(
        await client.call_tool(
            "wait_for_mission",
            {"mission_id": mission_id, "timeout_s": 60},
            progress_callback=on_progress,
        )
    )
    assert waited["finished"] is True, waited
    assert waited["mission"]["status"] == "completed", waited
    assert progress, "no progress notification arrived while the mission ran"
    values = [value for value, _, _ in progress]
    assert values == sorted(values), f"progress went back: {values}"
    report["progress_notifications"] = len(progress)
    report["progress_messages"] = sorted({message for _, _, message in progress if message})

    got = structured(await client.call_tool("get_mission", {"mission_id": mission_id}))
    assert got["result"]["echo"] == payload, got["result"]
    report["mission_id"] = mission_id

    templates = await client.list_resource_templates()
    uris = [template.uri_template for template in templates.resource_templates]
    assert uris == ["brain://missions/{mission_id}/history"], uris
    uri = f"brain://missions/{mission_id}/history"
    history = await client.read_resource(uri)
    body = json.loads(history.contents[0].text)
    kinds = [event["event_type"] for event in body["events"]]
    assert body["complete"] is True, body
    assert kinds[0] == "MissionEnqueued" and kinds[-1] == "MissionCompleted", kinds
    report["history"] = kinds
    report["enqueued_by"] = body["events"][0]["metadata"]["actor"]

    listed_resources = await client.list_resources()
    assert any(resource.uri == uri for resource in listed_resources.resources), "not listed"

    # Bad input gets a clear error naming the field, and changes nothing.
    refused = await client.call_tool("wait_for_mission", {"mission_id": mission_id, "timeout_s": 36000})
    assert refused.is_error, refused
    error = refused.structured_content["error"]
    assert error["field"] == "timeout_s", error
    report["refusal"] = error

    # Latency: tools/call enqueue_mission to wait_for_mission returning, one echo each.
    latencies = []
    for run in range(runs):
        began = time.perf_counter()
        quick = structured(
            await client.call_tool(
                "enqueue_mission", {"name": f"mcp timing {run}", "agent": "echo", "payload": {"n": run}}
            )
        )
        done = structured(
            await client.call_tool("wait_for_mission", {"mission_id": quick["mission_id"]})
        )
        latencies.append((time.perf_counter() - began) * 1000.0)
        assert done["finished"] and done["mission"]["status"] == "completed", done
    if latencies:
        ordered = sorted(latencies)
        report["latency_ms"] = {
            "runs": runs,
            "p50": round(percentile(ordered, 0.50), 1),
            "p99": round(percentile(ordered, 0.99), 1),
        }
        print(f"enqueue_mission to wait_for_mission over {runs} runs: "
              f"p50 {report['latency_ms']['p50']} ms, p99 {report['latency_ms']['p99']} ms",
              file=sys.stderr)
    return report


async def main():
    mode = sys.argv[1]
    if mode == "http":
        url, token = sys.argv[2], sys.argv[3]
        runs = int(sys.argv[4]) if len(sys.argv) > 4 else 0
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {token}"})
        async with http:
            async with Client(streamable_http_client(url, http_client=http)) as client:
                report = await drive(client, runs)
                report["protocol_version"] = client.protocol_version
    elif mode == "stdio":
        brain, url, token = sys.argv[2], sys.argv[3], sys.argv[4]
        runs = int(sys.argv[5]) if len(sys.argv) > 5 else 0
        server = StdioServerParameters(
            command=brain,
            args=["mcp"],
            env={"BRAIN_URL": url, "BRAIN_API_KEY": token, "RUST_LOG": "warn"},
        )
        async with Client(stdio_client(server)) as client:
            report = await drive(client, runs)
            report["protocol_version"] = client.protocol_version
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print(json.dumps(report))


if __name__ == "__main__":
    anyio.run(main)
