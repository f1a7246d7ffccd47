"""What to score: a folder (recursive), a list file, or a Parquet/CSV column of paths, on any filesystem."""

from __future__ import annotations

import functools
import io
import posixpath
from typing import Callable, Iterable

import pyarrow as pa
import pyarrow.fs as pafs

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
TABLE_EXTENSIONS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}


class InputError(Exception):
    """The source cannot be listed or read; the message says what to change."""


Unstrip = Callable[[str], str]


@functools.lru_cache(maxsize=32)
def _filesystem(scheme: str, host: str) -> tuple[pafs.FileSystem, Callable[[str], str], Unstrip]:
    """(filesystem for ``scheme://host``, location -> path in it, path -> location): pyarrow's own filesystem
    where it has one for the scheme, else fsspec's. Cached, as workers open many files on one filesystem."""
    probe = f"{scheme}://{host}/probe"
    try:
        fs, path = pafs.FileSystem.from_uri(probe)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
        try:
            import fsspec

            spec_fs, _ = fsspec.core.url_to_fs(probe)
        except (ImportError, ValueError) as exc:
            raise InputError(f"No filesystem for {scheme}:// ({exc}); install the fsspec package for it "
                             "(s3fs, gcsfs, adlfs, ...) or give a local path.") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(spec_fs)), spec_fs._strip_protocol, spec_fs.unstrip_protocol
    if path.startswith("/"):  # hdfs://host:port/path
        return fs, lambda loc: "/" + loc.split("://", 1)[1].partition("/")[2], lambda p: f"{scheme}://{host}{p}"
    return fs, lambda loc: loc.split("://", 1)[1], lambda p: f"{scheme}://{p}"  # s3://bucket/key, gs://...


def resolve(location: str) -> tuple[pafs.FileSystem, str, Unstrip]:
    """(filesystem, path inside it, path -> location) for a path or URI.

    Plain paths and ``file://`` URIs are local and absolute; ``s3://bucket/key`` and the like go through the
    scheme's filesystem."""
    if "://" not in location:
        return pafs.LocalFileSystem(), posixpath.abspath(location), str
    scheme, rest = location.split("://", 1)
    if scheme == "file":
        return pafs.LocalFileSystem(), posixpath.abspath("/" + rest.lstrip("/")), str
    fs, strip, unstrip = _filesystem(scheme, rest.partition("/")[0])
    return fs, strip(location).rstrip("/") or "/", unstrip


def read_bytes(location: str) -> bytes:
    """The whole file at a path or URI."""
    fs, path, _ = resolve(location)
    with fs.open_input_stream(path) as stream:
        return stream.read()


def _relative_to(base_dir: str, entry: str) -> str:
    """A list entry as a location: URIs and absolute paths as given, relative paths under ``base_dir``."""
    if "://" in entry or entry.startswith("/"):
        return entry
    if "://" in base_dir:
        return f"{base_dir}/{entry}"
    return posixpath.normpath(posixpath.join(base_dir, entry))


def _folder(fs: pafs.FileSystem, path: str, unstrip: Unstrip, extensions: Iterable[str]) -> list[str]:
    wanted = {"." + e.lower().lstrip(".") for e in extensions}
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    found = [i.path for i in infos if i.type == pafs.FileType.File
             and posixpath.splitext(i.base_name)[1].lower() in wanted and not i.base_name.startswith(".")]
    return [unstrip(p) for p in sorted(found)]


def _table(data: bytes, kind: str, column: str, location: str) -> list[str]:
    import pyarrow.csv
    import pyarrow.parquet

    table = pyarrow.parquet.read_table(io.BytesIO(data)) if kind == "parquet" else pyarrow.csv.read_csv(io.BytesIO(data))
    if column not in table.column_names:
        raise InputError(f"{location} has no column {column!r}; its columns are {table.column_names}. "
                         "Name the one holding the paths with --column.")
    return [str(v) for v in table.column(column).to_pylist() if v is not None and str(v).strip()]


def list_inputs(source: str, column: str = "path", extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[str]:
    """Every image location named by ``source``, in a stable order and each once.

    A folder is listed recursively (files with one of ``extensions``, hidden files skipped); a ``.parquet``
    or ``.csv`` file gives its ``column``; any other file is a list, one path per line (``#`` starts a comment).
    Relative paths in lists and tables are relative to the file that names them."""
    fs, path, unstrip = resolve(source)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.Directory:
        found = _folder(fs, path, unstrip, extensions)
    elif info.type == pafs.FileType.File:
        with fs.open_input_stream(path) as stream:
            data = stream.read()
        base = unstrip(posixpath.dirname(path))
        kind = TABLE_EXTENSIONS.get(posixpath.splitext(path)[1].lower())
        if kind:
            entries = _table(data, kind, column, source)
        else:
            lines = (line.strip() for line in data.decode("utf-8", errors="replace").splitlines())
            entries = [line for line in lines if line and not line.startswith("#")]
        found = [_relative_to(base, e) for e in entries]
    else:
        raise InputError(f"{source} does not exist; give a folder, a list file, or a .parquet/.csv of paths.")
    return list(dict.fromkeys(found))
