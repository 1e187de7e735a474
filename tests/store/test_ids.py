"""Generated ids (SPEC §3.1): `<prefix>_<ms>_<9 base-36 digits>`, unique, every digit equally
likely, ids of one millisecond in the order they were made, and a forked child never hands out
the ids its parent will."""

from __future__ import annotations

import collections
import os
import re
import time

from maestro.ids import make_id


def test_ids_have_the_spec_shape_and_do_not_repeat():
    before = int(time.time() * 1000)
    ids = [make_id("task") for _ in range(100_000)]
    after = int(time.time() * 1000)
    assert len(set(ids)) == len(ids)
    for value in ids[:2000] + ids[-2000:]:
        match = re.fullmatch(r"task_(\d+)_([0-9a-z]{9})", value)
        assert match, value
        assert before <= int(match.group(1)) <= after
    assert make_id("evt", 42).startswith("evt_42_")


def test_every_base36_digit_is_equally_likely():
    # The first id of each millisecond is the random one.
    digits = collections.Counter("".join(make_id("x", ms)[-9:] for ms in range(40_000)))
    assert set(digits) == set("0123456789abcdefghijklmnopqrstuvwxyz")
    expected = 40_000 * 9 / 36  # 10,000 each; a biased mapping puts 0-3 ~14% higher
    assert all(abs(count - expected) < 0.05 * expected for count in digits.values()), digits


def test_a_forked_child_does_not_reuse_the_parents_random_digits():
    make_id("warm")  # the parent holds buffered random digits
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        os.write(write, " ".join(make_id("c") for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 65536):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    child_digits = {i[-9:] for i in child.decode().split()}
    parent_digits = {make_id("p")[-9:] for _ in range(50)}
    assert len(child_digits) == 50 and not child_digits & parent_digits


def test_ids_of_one_millisecond_sort_in_the_order_they_were_made():
    """Lists order by createdAt, then id: tasks created in the same millisecond must still
    come back in creation order, whatever kinds of ids were made in between."""
    ms = int(time.time() * 1000) + 10_000_000  # a millisecond nobody else uses
    made = []
    for i in range(500):
        made.append(make_id("task", ms))
        if i % 7 == 0:
            make_id("evt", ms)
    assert sorted(made) == made and len(set(made)) == len(made)
    # Ids for other milliseconds in between (timeline entries bumped past a task's last
    # update) do not restart the count of this one.
    later = [make_id("task", ms)]
    for i in range(200):
        make_id("evt", ms + 1 + i % 3)
        later.append(make_id("task", ms))
    assert sorted(made + later) == made + later
    # The next millisecond starts from fresh random digits, not from the last id plus one.
    assert make_id("task", ms + 1)[-9:] != _next_digits(made[-1][-9:])


def _next_digits(digits: str) -> str:
    value = int(digits, 36) + 1
    out = ""
    for _ in range(9):
        value, d = divmod(value, 36)
        out = "0123456789abcdefghijklmnopqrstuvwxyz"[d] + out
    return out
