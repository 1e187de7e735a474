#!/usr/bin/env python3
"""A stand-in for an LLM agent: reads its session's environment, reports progress and completes
its tasks through the `maestro` CLI, then exits 0.

Usage: worker_agent.py [--sleep SECONDS] [--finish-session] [--exit CODE] [PROMPT_FILE]

--finish-session also reports the session complete (it then ends `completed` whatever the exit
code); --exit ends with CODE instead of 0."""

import argparse
import os
import subprocess
import sys
import time


def maestro(*args: str) -> None:
    result = subprocess.run(["maestro", *args], capture_output=True, text=True, timeout=60,
                            check=False)
    print(f"$ maestro {' '.join(args)} -> {result.returncode}", flush=True)
    if result.returncode != 0:
        print(result.stdout + result.stderr, flush=True)
        sys.exit(10 + result.returncode)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--finish-session", action="store_true")
    parser.add_argument("--exit", type=int, default=0)
    parser.add_argument("prompt_file", nargs="?")
    args = parser.parse_args()
    session_id = os.environ["MAESTRO_SESSION_ID"]
    task_ids = os.environ["MAESTRO_TASK_IDS"].split(",")
    print(f"agent: session={session_id} tasks={','.join(task_ids)} cwd={os.getcwd()}", flush=True)
    print(f"agent: tty={os.isatty(1)} manifest={os.environ.get('MAESTRO_MANIFEST_PATH')}",
          flush=True)
    if args.prompt_file:
        with open(args.prompt_file, encoding="utf-8") as fh:
            print(f"agent: prompt starts with: {fh.readline().strip()}", flush=True)
    maestro("report", "progress", "starting work", "--task", task_ids[0])
    if args.sleep:
        time.sleep(args.sleep)
    for task_id in task_ids:
        maestro("task", "complete", task_id)
    if args.finish_session:
        maestro("report", "complete", "all done")
    print("agent: done", flush=True)
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
