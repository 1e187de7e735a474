"""The small process that runs one agent for the launcher: `python -m maestro.spawn.wrapper`.

It starts the agent on a fresh pseudo-terminal (its own session and process group), copies
everything the agent prints to `<dir>/output.log` (and to its own terminal when it has one, as in
a tmux window, passing keystrokes back so a person can talk to the agent), and when the agent
ends records how in `<dir>/exit.json`. The files outlive the server, so a restarted server can
still learn how an agent it launched ended.

Files in <dir>: process.json (pids, written once the agent runs), output.log, exit.json."""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import pty
import select
import signal
import struct
import sys
import termios
import time
import tty
from pathlib import Path

from ..config import terminal_type

DRAIN_SECONDS = 0.5
DEFAULT_ROWS, DEFAULT_COLS = 50, 200
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1,
              signal.SIGUSR2)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def process_start_time(pid: int) -> int | None:
    """Start time of `pid` in clock ticks since boot (Linux), to tell a live process from a
    later one that reused its pid; None where /proc is not available."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"SIG{number}"


def _window_size(fd: int) -> bytes | None:
    try:
        return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
    except OSError:
        return None


def _set_window_size(fd: int, size: bytes) -> None:
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, size)
    except OSError:
        pass


class Relay:
    """Runs one agent on a pty and follows it to the end."""

    def __init__(self, folder: Path, cwd: str, command: list[str], env: dict[str, str]):
        self.folder = folder
        self.cwd = cwd
        self.command = command
        self.env = env
        self.child_pid = 0
        self.master = -1
        self.pending_signals: list[int] = []
        self.interactive = os.isatty(0) and os.isatty(1)
        self.stdout_ok = self.interactive

    # -- signals: whatever reaches the wrapper goes to the agent's process group
    def _on_signal(self, number, _frame) -> None:
        if self.child_pid:
            try:
                os.killpg(self.child_pid, number)
            except OSError:
                pass
        else:
            self.pending_signals.append(number)

    def _on_winch(self, _number, _frame) -> None:
        size = _window_size(0)
        if size is not None and self.master >= 0:
            _set_window_size(self.master, size)

    def run(self) -> int:
        for number in _FORWARDED:
            signal.signal(number, self._on_signal)
        with open(self.folder / "output.log", "ab", buffering=0) as log:
            pid, master = pty.fork()
            if pid == 0:  # the agent
                try:
                    os.chdir(self.cwd)
                    os.execvpe(self.command[0], self.command, self.env)
                except OSError as exc:
                    os.write(2, f"maestro: cannot start {self.command[0]}: "
                                f"{exc.strerror or exc}\r\n".encode())
                os._exit(127)
            self.child_pid, self.master = pid, master
            size = _window_size(0) if self.interactive else None
            _set_window_size(master, size or struct.pack("HHHH", DEFAULT_ROWS, DEFAULT_COLS,
                                                         0, 0))
            saved_tty = None
            if self.interactive:  # keystrokes go to the agent as they are typed
                signal.signal(signal.SIGWINCH, self._on_winch)
                try:
                    saved_tty = termios.tcgetattr(0)
                    tty.setraw(0)
                except termios.error:
                    saved_tty = None
            try:
                write_json_atomic(self.folder / "process.json", {
                    "wrapperPid": os.getpid(), "wrapperStart": process_start_time(os.getpid()),
                    "agentPid": pid, "agentPgid": pid, "agentStart": process_start_time(pid),
                    "startedAt": now_ms()})
                for number in self.pending_signals:
                    self._on_signal(number, None)
                return self._relay(log)
            finally:
                if saved_tty is not None:
                    try:
                        termios.tcsetattr(0, termios.TCSAFLUSH, saved_tty)
                    except termios.error:
                        pass

    def _copy_out(self, log, data: bytes) -> None:
        log.write(data)
        if self.stdout_ok:
            try:
                os.write(1, data)
            except OSError:  # the window was closed: keep logging
                self.stdout_ok = False

    def _relay(self, log) -> int:
        inputs = [self.master] + ([0] if self.interactive else [])
        status = None
        master_open = True
        while status is None:
            try:
                ready, _, _ = select.select(inputs, [], [], 0.2 if master_open else 0.02)
            except InterruptedError:
                ready = []
            if self.master in ready:
                data = self._read_master()
                if data:
                    self._copy_out(log, data)
                else:
                    master_open = False
                    inputs = [fd for fd in inputs if fd != self.master]
            if 0 in ready:
                try:
                    data = os.read(0, 4096)
                except OSError:
                    data = b""
                if data:
                    try:
                        os.write(self.master, data)
                    except OSError:
                        pass
                else:
                    inputs = [fd for fd in inputs if fd != 0]
            status = self._reap()
        self._drain(log, master_open)
        try:  # the agent's session is over: nothing it started may linger
            os.killpg(self.child_pid, signal.SIGKILL)
        except OSError:
            pass
        os.close(self.master)
        return status

    def _read_master(self) -> bytes:
        try:
            return os.read(self.master, 65536)
        except OSError as exc:
            if exc.errno in (errno.EIO, errno.EBADF):
                return b""
            raise

    def _reap(self) -> int | None:
        try:
            pid, status = os.waitpid(self.child_pid, os.WNOHANG)
        except ChildProcessError:
            return 0
        return status if pid else None

    def _drain(self, log, master_open: bool) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        while master_open and time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if not ready:
                break
            data = self._read_master()
            if not data:
                break
            self._copy_out(log, data)


def _describe_status(status: int) -> dict:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        return {"exitCode": None, "signal": _signal_name(number), "signalNumber": number}
    return {"exitCode": os.waitstatus_to_exitcode(status), "signal": None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maestro.spawn.wrapper")
    parser.add_argument("--dir", required=True, help="the session's folder in SESSION_DIR")
    parser.add_argument("--cwd", required=True)
    parser.add_argument("--env-file", help="JSON object: the agent's whole environment; read, "
                        "then removed")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    folder = Path(args.dir)
    env = dict(os.environ)
    if args.env_file:
        try:
            with open(args.env_file, encoding="utf-8") as fh:
                env = {str(k): str(v) for k, v in json.load(fh).items() if v is not None}
        finally:
            try:
                os.unlink(args.env_file)  # it may hold a token: gone as soon as it is read
            except OSError:
                pass
    if not command:
        print("maestro wrapper: no command given", file=sys.stderr)
        return 2
    # The agent's terminal: the window's own type under tmux, a capable default otherwise.
    term = terminal_type()
    env["TERM"] = term if os.isatty(1) and term else env.get("TERM") or "xterm-256color"
    started = now_ms()
    try:
        status = Relay(folder, args.cwd, command, env).run()
        outcome = _describe_status(status)
    except Exception as exc:  # noqa: BLE001 - record why, so the session does not wait
        outcome = {"exitCode": None, "signal": None, "error": f"{type(exc).__name__}: {exc}"}
    outcome.update({"startedAt": started, "finishedAt": now_ms()})
    write_json_atomic(folder / "exit.json", outcome)
    return 0


if __name__ == "__main__":
    sys.exit(main())
