"""The catalogue-file path source: reads the lab's paths.json for one AS, reloads on change, refuses bad
entries naming the file and the entry, and keeps the old paths when a reload fails."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from scion_appliance.lab import catalogue
from scion_appliance.lab.lab import _path_info
from scion_appliance.lab.topologies import load as load_topology
from scion_appliance.paths.catalogue_file import CatalogueError, CatalogueFile
from scion_appliance.paths.source import PathSource

A, B = "1-ff00:0:111", "2-ff00:0:211"


def build_doc(seed: int = 1) -> dict[str, Any]:
    topo = load_topology("default")
    rng = random.Random(seed)
    keys = {ia: rng.randbytes(16) for ia in topo.ases}
    hops = {ia: (f"127.0.{n}.1", 30042) for n, ia in enumerate(topo.ases, start=1)}
    return catalogue.build(topo, keys, hops, now=1_700_000_000, rng=rng)


def write(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc))
    tmp.replace(path)  # as the lab writes it: a new inode each time


def test_reads_the_local_part_exactly_as_the_lab_does(tmp_path: Path) -> None:
    doc = build_doc()
    f = tmp_path / "paths.json"
    write(f, doc)
    src = CatalogueFile(f, A)
    assert isinstance(src, PathSource)
    assert src.destinations() == [B]
    # The lab's own reader is the reference for the format.
    assert src.paths(B) == [_path_info(e) for e in doc[A][B]]
    assert len(src.paths(B)) >= 3
    assert src.paths("1-ff00:0:110") == []  # not a destination of the catalogue
    assert CatalogueFile(f, "1-ff00:0:110").destinations() == []  # no part for a core AS


def test_reload_only_when_the_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "paths.json"
    write(f, build_doc(1))
    src = CatalogueFile(f, A)
    assert src.reload_if_changed() is False and src.loads == 1
    write(f, build_doc(2))  # re-minted: new seeds and hop fields, same path ids
    before = {p.id: p.raw for p in src.paths(B)}
    assert src.reload_if_changed() is True and src.loads == 2
    after = {p.id: p.raw for p in src.paths(B)}
    assert before.keys() == after.keys() and before != after
    os.utime(f)  # touched, same content: re-read, nothing replaced
    assert src.reload_if_changed() is False and src.loads == 3


@pytest.mark.parametrize(
    ("mutate", "where", "found_part"),
    [
        (lambda e: e.update(raw="zz"), ".raw", "'zz'"),
        (lambda e: e.update(raw="00ff"), ".raw", "does not parse"),
        (lambda e: e.update(id="abc"), ".id", "'abc'"),
        (lambda e: e.pop("next_hop"), ".next_hop", "nothing"),
        (lambda e: e.update(next_hop=["router", 1]), ".next_hop", "'router'"),
        (lambda e: e.update(mtu=-1), ".mtu", "-1"),
        (lambda e: e["interfaces"].__setitem__(0, ["1-ff00:0:111", 0]), ".interfaces[0]", "0"),
        (lambda e: e["interfaces"].__setitem__(1, ["x", 3]), ".interfaces[1]", "'x'"),
    ],
)
def test_bad_entries_name_file_and_entry_and_keep_old_paths(
    tmp_path: Path, mutate: Any, where: str, found_part: str
) -> None:
    doc = build_doc()
    f = tmp_path / "paths.json"
    write(f, doc)
    src = CatalogueFile(f, A)
    good = src.paths(B)
    mutate(doc[A][B][2])
    write(f, doc)
    with pytest.raises(CatalogueError) as info:
        src.reload_if_changed()
    e = info.value
    assert e.file == str(f)
    assert e.where.startswith(f'["{A}"]["{B}"][2]') and e.where.endswith(where)
    assert found_part in e.found and e.expected
    assert str(e).startswith(f"{f}: {e.where}: expected ")
    assert src.paths(B) == good  # all or nothing


def test_file_level_problems(tmp_path: Path) -> None:
    f = tmp_path / "paths.json"
    with pytest.raises(CatalogueError, match="no such file"):
        CatalogueFile(f, A)
    f.write_text("{not json")
    with pytest.raises(CatalogueError, match="line 1: expected JSON"):
        CatalogueFile(f, A)
    f.write_text("[]")
    with pytest.raises(CatalogueError, match="expected a JSON object"):
        CatalogueFile(f, A)
    f.write_text(json.dumps({A: {B: {}}}))
    with pytest.raises(CatalogueError, match=r'\["2-ff00:0:211"\]: expected an array of paths'):
        CatalogueFile(f, A)
