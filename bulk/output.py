"""Parquet output in parts, so an interrupted run resumes where it stopped.

Each part is written under a hidden temporary name and moved into place when complete, so a part that is
visible is whole; a killed run loses at most the rows not yet in a part. Every part carries the run's
description (tasks, model tags and variants) in its schema metadata; ``--resume`` refuses a folder written by
other models or tasks rather than mixing them.
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from bulk.inputs import InputError, resolve

logger = logging.getLogger(__name__)

META_KEY = b"vision_serve.bulk"
PART = re.compile(r"^part-(\d{6})\.parquet$")
SUMMARY = "_summary.json"


class Parts:
    """The output folder: what it holds already, and a writer for new parts."""

    def __init__(self, out: str, description: dict[str, Any], resume: bool) -> None:
        self.fs, self.path, _ = resolve(out)
        self.description = description
        self.fs.create_dir(self.path, recursive=True)
        infos = self.fs.get_file_info(pafs.FileSelector(self.path))
        for stale in (i for i in infos if i.base_name.startswith(".tmp-part-")):
            self.fs.delete_file(stale.path)  # left by a killed run: never complete
        self.parts = sorted(i.path for i in infos if PART.match(i.base_name))
        if self.parts and not resume:
            raise InputError(f"{out} already holds {len(self.parts)} parts; pass --resume to continue that run, "
                             "or give an empty --out folder.")
        if self.parts:
            found = self._description(self.parts[0])
            if found != description:
                raise InputError(f"{out} was written by another run ({json.dumps(found)}); this run is "
                                 f"{json.dumps(description)}. Resume with the same tasks and models, or use a new --out.")
        self.next = max((int(PART.match(posixpath.basename(p)).group(1)) for p in self.parts), default=-1) + 1

    def _description(self, part: str) -> dict[str, Any]:
        with self.fs.open_input_file(part) as fh:
            meta = pq.read_schema(fh).metadata or {}
        return json.loads(meta.get(META_KEY, b"{}"))

    def done(self) -> set[str]:
        """The inputs already written, by location."""
        paths: set[str] = set()
        for part in self.parts:
            with self.fs.open_input_file(part) as fh:
                paths.update(pq.read_table(fh, columns=["path"]).column("path").to_pylist())
        return paths

    def write(self, table: pa.Table) -> str:
        """Write one complete part and return its path."""
        table = table.replace_schema_metadata({META_KEY: json.dumps(self.description).encode()})
        final = posixpath.join(self.path, f"part-{self.next:06d}.parquet")
        temp = posixpath.join(self.path, f".tmp-part-{uuid.uuid4().hex}")
        with self.fs.open_output_stream(temp) as fh:
            pq.write_table(table, fh, compression="zstd")
        self.fs.move(temp, final)
        self.next += 1
        self.parts.append(final)
        return final

    def write_summary(self, summary: dict[str, Any]) -> None:
        with self.fs.open_output_stream(posixpath.join(self.path, SUMMARY)) as fh:
            fh.write(json.dumps(summary, indent=2).encode())
