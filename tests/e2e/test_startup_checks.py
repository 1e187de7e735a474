"""Start-up refusals of the real `maestro serve`: a symbolic link below DATA_DIR or SESSION_DIR
(never followed: the start-up stops and the link's target is untouched), a data or session
directory that is a file or cannot be written, a port in use, bad settings. Each stops with
exit code 1 and one line that names what is wrong, never a traceback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from servers import ROOT, free_port


def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAESTRO_")}
    env.update({"PORT": str(free_port()), "HOST": "127.0.0.1", "DATA_DIR": str(tmp / "data"),
                "SESSION_DIR": str(tmp / "sessions"), "SKILLS_DIR": str(tmp / "skills"),
                "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


def _serve(env: dict, prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run `maestro serve`, expecting it to stop by itself (a server that starts is killed
    and the test fails)."""
    cmd = [*(prefix or []), sys.executable, "-m", "maestro", "serve"]
    try:
        return subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=60)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the server started instead of refusing:\n{exc.stderr}") from None


def _refused(proc: subprocess.CompletedProcess, *needles: str, only_line: bool = True) -> str:
    """Exit code 1, no traceback, and one `maestro:` line holding every needle; returns it."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("maestro: ")]
    assert len(lines) == 1, output
    if only_line:
        assert output.strip() == lines[0], output
    for needle in needles:
        assert needle in lines[0], output
    return lines[0]


# ------------------------------------------------------------------ symbolic links
def _target_file(tmp: Path) -> Path:
    target = tmp / "outside" / "precious.txt"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("keep me")
    return target


def _empty_target_dir(tmp: Path) -> Path:
    target = tmp / "outside" / "folder"
    target.mkdir(parents=True)
    return target


def _prepared_data_dir(tmp: Path) -> Path:
    """A data directory a server has used: a project, a task and a session on disk."""
    data = tmp / "data"
    (data / "projects").mkdir(parents=True)
    (data / "tasks" / "proj_1").mkdir(parents=True)
    (data / "sessions").mkdir(parents=True)
    (data / "projects" / "proj_1.json").write_text('{"id": "proj_1", "name": "p"}')
    (data / "tasks" / "proj_1" / "task_1.json").write_text(
        '{"id": "task_1", "projectId": "proj_1", "title": "t"}')
    (data / "sessions" / "sess_1.json").write_text(
        '{"id": "sess_1", "projectId": "proj_1", "taskIds": []}')
    return data


FILE_LINKS = [".maestro.lock", "journal", "journal.old", "projects/proj_2.json",
              "tasks/proj_1/task_2.json", "sessions/sess_2.json", ".spares/1.spare"]
FOLDER_LINKS = ["projects", "tasks", "sessions", ".spares", "quarantine", "tasks/proj_2"]


@pytest.mark.parametrize("name", FILE_LINKS)
def test_a_file_link_in_the_data_directory_stops_the_start_untouched(tmp_path, name):
    data = _prepared_data_dir(tmp_path)
    target = _target_file(tmp_path)
    link = data / name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    line = _refused(_serve(_env(tmp_path)), str(link), "symbolic link")
    assert "DATA_DIR" in line
    assert target.read_text() == "keep me"
    assert link.is_symlink()


@pytest.mark.parametrize("name", FOLDER_LINKS)
def test_a_folder_link_in_the_data_directory_stops_the_start_untouched(tmp_path, name):
    data = _prepared_data_dir(tmp_path)
    target = _empty_target_dir(tmp_path)
    link = data / name
    if link.is_dir():
        shutil.rmtree(link)
    link.symlink_to(target, target_is_directory=True)
    _refused(_serve(_env(tmp_path)), str(link), "symbolic link")
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", ["sess_9", "sess_9/token.sha256", "sess_9/manifest.json"])
def test_a_link_in_the_session_directory_stops_the_start_untouched(tmp_path, name):
    target = _target_file(tmp_path)
    sessions = tmp_path / "sessions"
    link = sessions / name
    link.parent.mkdir(parents=True, exist_ok=True)
    if name == "sess_9":
        target = _empty_target_dir(tmp_path)
    link.symlink_to(target)
    _refused(_serve(_env(tmp_path)), str(link), "symbolic link", "SESSION_DIR")
    if target.is_dir():
        assert list(target.iterdir()) == []
    else:
        assert target.read_text() == "keep me"


def test_data_and_session_directories_may_themselves_be_links(make_server, tmp_path):
    real_data, real_sessions = tmp_path / "disk" / "data", tmp_path / "disk" / "sessions"
    real_data.mkdir(parents=True)
    real_sessions.mkdir(parents=True)
    base = tmp_path / "srv"
    base.mkdir()
    (base / "data").symlink_to(real_data, target_is_directory=True)
    (base / "sessions").symlink_to(real_sessions, target_is_directory=True)
    srv = make_server(tmp=base)
    project = httpx.post(srv.url + "/api/projects", json={"name": "linked"}).json()
    assert (real_data / "projects" / f"{project['id']}.json").is_file()
    srv.restart()
    assert httpx.get(srv.url + f"/api/projects/{project['id']}").json()["name"] == "linked"


# ------------------------------------------------------------------ unusable directories
def test_a_data_directory_that_is_a_file(tmp_path):
    (tmp_path / "data").write_text("not a folder")
    _refused(_serve(_env(tmp_path)), str(tmp_path / "data"), "not a folder")


def test_a_session_directory_that_is_a_file(tmp_path):
    (tmp_path / "sessions").write_text("not a folder")
    _refused(_serve(_env(tmp_path)), str(tmp_path / "sessions"), "SESSION_DIR")


def _read_only(folder: Path) -> list[str] | None:
    """A command prefix under which `folder` cannot be written: its permissions for a normal
    user; for root (who ignores them) a read-only file system mounted over it in a private
    mount namespace. None when neither is possible here."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o500)
        return []
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    probe = subprocess.run([unshare, "-m", "sh", "-c",
                            f"mount -t tmpfs -o ro tmpfs '{folder}'"], capture_output=True)
    if probe.returncode != 0:
        return None
    return [unshare, "-m", "sh", "-c", f"mount -t tmpfs -o ro tmpfs '{folder}' && exec \"$@\"",
            "sh"]


@pytest.mark.parametrize("which", ["data", "sessions"])
def test_an_unwritable_directory(tmp_path, which):
    folder = tmp_path / which
    prefix = _read_only(folder)
    if prefix is None:
        pytest.skip("cannot make a folder unwritable here (root without mount namespaces)")
    try:
        _refused(_serve(_env(tmp_path), prefix), str(folder),
                 "DATA_DIR" if which == "data" else "SESSION_DIR")
    finally:
        folder.chmod(0o700)


def test_a_data_directory_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    _refused(_serve(_env(tmp_path, DATA_DIR=str(tmp_path / "file" / "data"))),
             str(tmp_path / "file" / "data"))


def test_a_port_in_use(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _refused(_serve(_env(tmp_path, PORT=str(port))), f"127.0.0.1:{port}",
                        "in use")
    assert "PORT" in line


def test_a_data_directory_failing_while_loading(tmp_path):
    """Whatever stops the loading of the data itself is one line too (here a journal that
    is a folder)."""
    data = _prepared_data_dir(tmp_path)
    (data / "journal").mkdir()
    _refused(_serve(_env(tmp_path)), "could not start", str(data / "journal"),
             only_line=False)


@pytest.mark.parametrize("name, value, needle", [
    ("PORT", "http", "PORT"),
    ("MAESTRO_HEADER_TIMEOUT", "0", "MAESTRO_HEADER_TIMEOUT"),
    ("MAESTRO_BODY_TIMEOUT", "soon", "MAESTRO_BODY_TIMEOUT"),
    ("MAESTRO_KEEPALIVE_TIMEOUT", "-1", "MAESTRO_KEEPALIVE_TIMEOUT"),
    ("MAESTRO_MAX_CONNECTIONS", "0", "MAESTRO_MAX_CONNECTIONS"),
    ("MAESTRO_MAX_HEADER_BYTES", "100", "MAESTRO_MAX_HEADER_BYTES"),
    ("LOG_LEVEL", "loud", "LOG_LEVEL"),
])
def test_bad_settings(tmp_path, name, value, needle):
    _refused(_serve(_env(tmp_path, **{name: value})), needle)
    assert not (tmp_path / "data").exists()
