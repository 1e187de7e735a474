#!/usr/bin/env python3
"""A stand-in for an agent that changes code: in its working folder (its session's worktree) it
writes the file named by AGENT_FILE (text: AGENT_TEXT, else a line naming its session), commits
it with git unless AGENT_COMMIT=0, writes AGENT_UNCOMMITTED (a file it leaves uncommitted) when
set, reports through the `maestro` CLI, then waits until the file named by AGENT_HOLD exists
(when set; at most 120 s) and exits with AGENT_EXIT (default 0). SIGTERM ends it with 0."""

import os
import signal
import subprocess
import sys
import time


def sh(*args: str) -> str:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    print(f"$ {' '.join(args)} -> {done.returncode}", flush=True)
    if done.returncode != 0:
        print(done.stdout + done.stderr, flush=True)
        sys.exit(20)
    return done.stdout.strip()


def write(path: str, text: str) -> None:
    folder = os.path.dirname(path)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    session = os.environ["MAESTRO_SESSION_ID"]
    target = os.environ["AGENT_FILE"]
    print(f"agent: session={session} cwd={os.getcwd()} "
          f"branch={sh('git', 'rev-parse', '--abbrev-ref', 'HEAD')}", flush=True)
    write(target, os.environ.get("AGENT_TEXT") or f"written by {session}\n")
    if os.environ.get("AGENT_COMMIT", "1") != "0":
        sh("git", "add", "--", target)
        sh("git", "commit", "--quiet", "-m", f"{session}: {target}")
    extra = os.environ.get("AGENT_UNCOMMITTED")
    if extra:
        write(extra, f"unfinished work of {session}\n")
    task = os.environ["MAESTRO_TASK_IDS"].split(",")[0]
    sh("maestro", "report", "progress", f"wrote {target}", "--task", task)
    print("agent: work written", flush=True)
    hold = os.environ.get("AGENT_HOLD")
    deadline = time.monotonic() + 120
    while hold and not os.path.exists(hold) and time.monotonic() < deadline:
        time.sleep(0.05)
    print("agent: done", flush=True)
    return int(os.environ.get("AGENT_EXIT", "0"))


if __name__ == "__main__":
    sys.exit(main())
