"""A git worktree per spawned session, and a reviewed way back (diff, merge, clean-up).

- `git`: the git command line, run as a child process (never through a shell) with timeouts;
- `naming`: branch and folder names of new worktrees;
- `options`: `isolation` and `baseRef` of spawn requests and projects, the workspace records;
- `overlap`: which files two live worktrees both change;
- `records`: the Service's mutation that writes `session.workspace`;
- `manager`: creating, reviewing, merging and removing worktrees, serialised per repository
  and run in threads so the event loop never waits for git;
- `scanner`: the periodic overlap watch;
- `routes`: the HTTP routes, their OpenAPI entries and the start-up wiring;
- `prompt`: what an agent's prompt says about its worktree."""
