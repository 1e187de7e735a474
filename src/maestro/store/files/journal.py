"""The journal: its line encoding (one checksummed JSON line per record) and its replay at
start-up (every complete record applied to the loaded state and to the files)."""

from __future__ import annotations

import logging
import os
import secrets
import zlib

from ... import jsonio
from ..base import KINDS, LoadResult, Op, apply_delta
from .syscalls import fsync_path, unlink, write_all

log = logging.getLogger("maestro.store")

JOURNAL_NAME = "journal"
# The journal being checkpointed in the background while new records go to a fresh `journal`.
OLD_JOURNAL_NAME = "journal.old"
TMP_SUFFIX = ".tmp"


def latest(records: list[list[Op]]) -> dict[tuple[str, str], Op]:
    """The last op per entity over `records`, in the order of those last ops."""
    last: dict[tuple[str, str], Op] = {}
    for record in records:
        for op in record:
            last.pop((op.kind, op.id), None)
            last[(op.kind, op.id)] = op
    return last


def encode_journal_line(record: list[Op]) -> bytes:
    """One record as its checksummed journal line."""
    parts = []
    for op in record:
        head = b'{"k":"' + op.kind.encode() + b'","id":' + jsonio.dumps(op.id) \
            + b',"p":' + jsonio.dumps(op.project_id)
        if op.delta is not None:  # the entity's previous version + this change
            parts.append(head + b',"d":' + jsonio.dumps(op.delta) + b"}")
            continue
        value = b"null" if op.value is None else (op.encoded or jsonio.dumps(op.value))
        parts.append(head + b',"v":' + value + (b',"n":1}' if op.new else b"}"))
    body = b"[" + b",".join(parts) + b"]"
    return b"%08x " % zlib.crc32(body) + body + b"\n"


def decode_journal_line(line: bytes) -> list[Op] | None:
    """The ops of one journal line as the server sends it (with its newline)."""
    return _decode_line(line[:-1]) if line.endswith(b"\n") else None


def _decode_line(line: bytes) -> list[Op] | None:
    """The ops of one journal line, or None for a line that is torn, corrupt or malformed."""
    if len(line) < 10 or line[8:9] != b" ":
        return None
    body = line[9:]
    try:
        if int(line[:8], 16) != zlib.crc32(body):
            return None
        record = jsonio.loads(body)
    except ValueError:
        return None
    if not isinstance(record, list):
        return None
    ops = []
    for item in record:
        if not isinstance(item, dict) or item.get("k") not in KINDS \
                or not isinstance(item.get("id"), str):
            return None
        value, project_id, delta = item.get("v"), item.get("p"), item.get("d")
        if (value is not None and not isinstance(value, dict)) \
                or (project_id is not None and not isinstance(project_id, str)):
            return None
        if delta is not None:
            if value is not None or not _is_delta(delta):
                return None
            ops.append(Op(item["k"], item["id"], None, None, project_id, delta=delta))
            continue
        ops.append(Op(item["k"], item["id"], value, None, project_id, item.get("n") == 1))
    return ops


def _is_delta(delta) -> bool:
    """A well-formed `"d"` of a journal op: {"set": {...}, "push": {field: [index, [...]]}}."""
    if not isinstance(delta, dict) or set(delta) - {"set", "push"}:
        return False
    if not isinstance(delta.get("set", {}), dict):
        return False
    pushed = delta.get("push", {})
    if not isinstance(pushed, dict):
        return False
    for entry in pushed.values():
        if not (isinstance(entry, list) and len(entry) == 2 and type(entry[0]) is int
                and entry[0] >= 0 and isinstance(entry[1], list)):
            return False
    return True


class JournalReplay:
    """Part of FileStore: replaying the journal at start-up."""

    def _replay_journal(self, state: dict[str, dict], result: LoadResult) -> None:
        """Apply every complete record of the journal to `state` and to the files, then open
        the journal for appending."""
        valid: list[bytes] = []
        records: list[list[Op]] = []
        bad_records = bad_bytes = orphans = 0
        raw = b""
        # A journal whose background checkpoint a crash interrupted comes first.
        for path in (self.old_journal_path, self.journal_path):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raw = b""
            pos = 0
            while pos < len(raw):
                nl = raw.find(b"\n", pos)
                end = len(raw) if nl < 0 else nl + 1
                line = raw[pos:end]
                pos = end
                ops = _decode_line(line[:-1]) if nl >= 0 else None
                if ops is None:
                    bad_records += 1
                    bad_bytes += len(line)
                    continue
                valid.append(line)
                records.append(ops)
                for op in ops:
                    if op.delta is not None:
                        base = state[op.kind].get(op.id)
                        if base is None:
                            orphans += 1
                            continue
                        apply_delta(base, op.delta)  # in place: nothing else holds it yet
                    elif op.value is None:
                        state[op.kind].pop(op.id, None)
                    else:
                        state[op.kind][op.id] = op.value
        if self.old_journal_path.exists():
            # Its records are in memory and written to the files below; from here on they
            # live in `journal` until the next checkpoint.
            self._rewrite_journal(b"".join(valid))
            unlink(self.old_journal_path)
            raw = b"".join(valid)
        if bad_records:
            # Expected only as a torn tail: a write a crash interrupted, never acknowledged.
            result.notes.append(f"journal: ignored {bad_records} incomplete or corrupt "
                                f"record(s) ({bad_bytes} bytes)")
            log.warning("journal: ignored %d incomplete or corrupt record(s) (%d bytes); such "
                        "a record was never acknowledged", bad_records, bad_bytes)
        if orphans:
            # Never expected: a delta is journaled only after its entity's file or whole
            # value, both kept until the delta reaches a file.
            result.notes.append(f"journal: skipped {orphans} change(s) to entities that "
                                "were not found")
            log.error("journal: skipped %d change(s) to entities that were not found", orphans)
        if valid:
            log.info("journal: replaying %d record(s) left by an unclean shutdown", len(valid))
            result.notes.append(f"journal: replayed {len(valid)} record(s)")
            for (kind, eid), op in latest(records).items():
                if op.delta is not None:  # the file gets the value the deltas built
                    value = state[kind].get(eid)
                    if value is None:
                        continue
                    op = Op(kind, eid, value, None, op.project_id)
                self._write_now(op)
        if bad_records and self._unapplied:
            # This journal outlives the start-up: keep only its valid records, so that new
            # records are never appended behind garbage.
            self._rewrite_journal(b"".join(valid))
        existed = bool(raw) or self.journal_path.exists()
        self._journal_fd = os.open(self.journal_path,
                                   os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        if not existed:
            self._dirty_dirs.add(self.root)  # the journal's own directory entry
        self._journal_bytes = os.fstat(self._journal_fd).st_size

    def _rewrite_journal(self, data: bytes) -> None:
        tmp = self.root / f".{JOURNAL_NAME}.{secrets.token_hex(4)}{TMP_SUFFIX}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.journal_path)
        fsync_path(self.root, directory=True)

