"""JSON-file store in the original's data-directory layout (SPEC §5), made crash-safe.

Durability comes from a write-ahead journal (`DATA_DIR/journal`): each request's changes are one
checksummed line, and a batch of concurrent requests costs one `fdatasync` (group commit). The
entity files are then replaced atomically (temp file + rename) so that the directory is always a
readable, up-to-date copy. A checkpoint syncs the file system and empties the journal. Start-up
loads the files, replays the journal and so finishes whatever a crash interrupted.

The journal append is the commit point. What can fail for a reason the disk gives (a missing or
blocked folder, a full disk) is done before it: `prepare_batch` stages the new contents as temp
files beside their targets, so a refused change leaves neither a journal record nor a changed
file. After the commit point only renames and unlinks remain (`apply_batch`); if one of those
fails the change stays committed, is retried at each checkpoint, and the journal is kept until
the files have caught up.

One module per job: syscalls.py (libc calls), spares.py (the spare-file pool and its thread),
loading.py (ownership, layout checks, loading with legacy layouts and quarantine), journal.py
(journal encoding and replay), staging.py (staging and commit), checkpoint.py (checkpoints),
proxy.py (the helper process, from the server's side) and store.py (the store they make)."""

from .journal import decode_journal_line, encode_journal_line
from .spares import SparePool
from .staging import UnsafePathError
from .store import CHECKPOINT_BYTES, FileStore

__all__ = ["CHECKPOINT_BYTES", "FileStore", "SparePool", "UnsafePathError",
           "decode_journal_line", "encode_journal_line"]
