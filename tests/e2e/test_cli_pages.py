"""`maestro task list` on a big project: it fetches the list a page at a time and follows the
server's cursors to the end, and `--limit` / `--cursor` show one page at a time."""

from __future__ import annotations

import re

from test_cli_helpers import new_task

pytest_plugins = ["test_cli_helpers"]


def test_task_list_follows_cursors_and_limit_shows_one_page(cli, rest, project):
    pid = project["id"]
    for i in range(2100):  # more than two of the CLI's pages
        new_task(rest, pid, title=f"task {i}", priority=("low", "high")[i % 2])
    whole = rest.get("/api/tasks", params={"projectId": pid}).json()
    env = {"MAESTRO_PROJECT_ID": pid}

    listed, first, bad = cli.many((("task", "list", "--json"), {"env": env}),
                                  (("task", "list", "--limit", "7", "--json"), {"env": env}),
                                  (("task", "list", "--limit", "7", "--cursor", "nonsense"),
                                   {"env": env}))
    assert [t["id"] for t in listed.data] == [t["id"] for t in whole]
    assert listed.data == whole

    assert [t["id"] for t in first.data] == [t["id"] for t in whole[:7]]
    cursor = re.search(r"--cursor (\S+)", first.stderr).group(1)
    second = cli("task", "list", "--limit", "7", "--cursor", cursor, "--priority", "high",
                 "--json", env=env)
    assert [t["id"] for t in second.data] == [t["id"] for t in whole[7:14]
                                              if t["priority"] == "high"]
    assert bad.code == 1 and "cursor" in bad.stderr

    at_1000 = rest.get("/api/tasks", params={"projectId": pid, "limit": "1000"})
    at_2000 = rest.get("/api/tasks", params={"projectId": pid, "limit": "1000",
                                             "cursor": at_1000.headers["x-next-cursor"]})
    last = cli("task", "list", "--limit", "1000", "--cursor", at_2000.headers["x-next-cursor"],
               "--json", env=env)
    assert [t["id"] for t in last.data] == [t["id"] for t in whole[2000:]]
    assert "--cursor" not in last.stderr
