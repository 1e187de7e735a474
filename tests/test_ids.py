"""Generated ids (SPEC §3.1): `<prefix>_<ms>_<9 base-36 digits>`, unique, every digit equally
likely, and a forked child never hands out the ids its parent will."""

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
    digits = collections.Counter("".join(make_id("x")[-9:] for _ in range(40_000)))
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
