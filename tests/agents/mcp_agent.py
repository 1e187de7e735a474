#!/usr/bin/env python3
"""A stand-in for an agent CLI that speaks to Maestro through MCP only, the way Claude Code
would: it reads the `--mcp-config` file it was given, starts the `maestro` server entry's command
with the entry's env (plus the few variables an MCP client hands every server: HOME, LOGNAME,
PATH, SHELL, TERM, USER), then calls session_context, task_claim and task_report through it and
exits 0. Other arguments (`-p PROMPT`, `--model`, `--allowedTools …`) are accepted and
ignored; the ones that matter are printed.

Usage (as `claude`): mcp_agent.py -p PROMPT --mcp-config FILE [other claude flags]"""

import asyncio
import json
import os
import sys

from mcp import Client, StdioServerParameters

CLIENT_PASSES = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")


def option_values(argv: list[str], name: str) -> list[str]:
    """The values after `name` up to the next `--flag` (variadic, as Claude Code reads them)."""
    values: list[str] = []
    for index, arg in enumerate(argv):
        if arg == name:
            for value in argv[index + 1:]:
                if value.startswith("--"):
                    break
                values.append(value)
    return values


async def work(entry: dict) -> None:
    env = {k: os.environ[k] for k in CLIENT_PASSES if k in os.environ}
    env.update(entry.get("env") or {})
    params = StdioServerParameters(command=entry["command"], args=entry.get("args") or [],
                                   env=env)
    async with Client(params) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        print(f"mcp: tools={','.join(tools)}", flush=True)
        context = (await client.call_tool("session_context", {})).structured_content
        print(f"mcp: session={context['session']['id']} role={context['role']} "
              f"tasks={','.join(t['id'] for t in context['tasks'])}", flush=True)
        claimed = await client.call_tool("task_claim", {})
        if claimed.is_error or not claimed.structured_content["claimed"]:
            print(f"mcp: nothing claimed: {claimed.content[0].text}", flush=True)
            sys.exit(3)
        task_id = claimed.structured_content["task"]["id"]
        print(f"mcp: claimed={task_id} token={claimed.structured_content['claim']['token']}",
              flush=True)
        done = await client.call_tool("task_report", {"task_id": task_id, "kind": "completed",
                                                      "message": "done through MCP"})
        if done.is_error:
            print(f"mcp: report refused: {done.content[0].text}", flush=True)
            sys.exit(4)
        print(f"mcp: reported={task_id} status={done.structured_content['status']}",
              flush=True)


def main() -> int:
    argv = sys.argv[1:]
    configs = option_values(argv, "--mcp-config")
    print(f"agent: mcp-config={','.join(configs)} "
          f"allowedTools={','.join(option_values(argv, '--allowedTools'))}", flush=True)
    if len(configs) != 1:
        print("agent: expected one --mcp-config file", flush=True)
        return 2
    with open(configs[0], encoding="utf-8") as fh:
        entry = json.load(fh)["mcpServers"]["maestro"]
    mode = os.stat(configs[0]).st_mode & 0o777
    # The entry, never its values' secrets: names of its env, and where the session points.
    print(f"agent: entry mode={mode:o} command={entry['command']} "
          f"args={' '.join(entry.get('args') or [])} "
          f"env={','.join(sorted(entry.get('env') or {}))} "
          f"session={(entry.get('env') or {}).get('MAESTRO_SESSION_ID')}", flush=True)
    asyncio.run(work(entry))
    print("agent: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
