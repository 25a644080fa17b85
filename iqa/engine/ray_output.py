"""The Ray engine's Parquet destination: parts written by the driver as results arrive, read back to resume.

The driver, not Ray's workers, writes the files: each part is written under a hidden name
(`.part-...parquet.tmp`, which Parquet readers skip) and then renamed, so a job stopped at any
point leaves only complete files. A re-run into the same destination reads the `path` column
of the parts already there and scores only the other files; rows of two runs never cover the
same file. Local folders and object-store URIs alike go through pyarrow's file systems. Nothing
here imports Ray.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from iqa.errors import UsageError

# A part is written once this many rows wait, or this many seconds after the last one.
PART_ROWS = 1024
PART_SECONDS = 30.0


def is_uri(location: str) -> bool:
    return "://" in location


def absolute(location: str) -> str:
    """Local locations as absolute paths: Ray's workers do not share the driver's directory."""
    return location if is_uri(location) else str(Path(location).expanduser().absolute())


def open_destination(dest: str) -> tuple[pafs.FileSystem, str]:
    """The file system and folder of `dest`; a `dest` that is a file is refused."""
    try:
        filesystem, root = pafs.FileSystem.from_uri(absolute(dest))
        info = filesystem.get_file_info(root)
    except (OSError, ValueError) as err:
        raise UsageError(f"{dest}: cannot be used as the output ({err})") from err
    if info.type == pafs.FileType.File:
        raise UsageError(f"{dest}: is a file; --out needs a folder (or object-store prefix) for Parquet files")
    return filesystem, root


def done_paths(dest: str) -> tuple[set[str], list[str] | None]:
    """The `path` of every row already in `dest`'s parts, and their column names (None: no parts).

    A destination holding anything but this engine's parts is refused: its rows cannot be trusted
    to say which files are done."""
    filesystem, root = open_destination(dest)
    if filesystem.get_file_info(root).type == pafs.FileType.NotFound:
        return set(), None
    files = [
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(root))
        if info.type == pafs.FileType.File and not info.base_name.startswith((".", "_"))
    ]
    if not files:
        return set(), None
    try:
        dataset = pds.dataset(files, filesystem=filesystem, format="parquet")
        paths = dataset.to_table(columns=["path"]).column("path").to_pylist()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise UsageError(
            f"{dest}: holds files that are not this engine's Parquet ({' '.join(str(err).split())}); "
            "choose a new folder, or the folder of an earlier --engine ray run to finish it"
        ) from err
    return set(paths), dataset.schema.names


class PartWriter:
    """Parquet parts into a destination folder, each complete or absent (see the module's note)."""

    def __init__(self, dest: str, columns: list[str] | None = None):
        self.dest = dest
        self.filesystem, self.root = open_destination(dest)
        self.filesystem.create_dir(self.root, recursive=True)
        self.columns = columns  # those of the parts already there: a resumed run must match them
        self.run = uuid.uuid4().hex[:8]
        self.parts = 0
        self.pending: list[pa.Table] = []
        self.flushed_at = time.monotonic()

    def add(self, table: pa.Table) -> None:
        """Queue `table`'s rows; a part is written when enough rows or time have gathered."""
        if self.columns is None:
            self.columns = table.schema.names
        elif table.schema.names != self.columns:
            raise UsageError(
                f"{self.dest}: its rows have other columns than this run's (other --pairs or --method?); "
                "finish it with the options of its first run, or choose a new folder"
            )
        self.pending.append(table)
        waiting = sum(t.num_rows for t in self.pending)
        if waiting >= PART_ROWS or time.monotonic() - self.flushed_at >= PART_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the queued rows as one part: under a hidden name first, then renamed."""
        self.flushed_at = time.monotonic()
        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        name = f"part-{self.run}-{self.parts:05d}.parquet"
        hidden = f"{self.root}/.{name}.tmp"
        with self.filesystem.open_output_stream(hidden) as stream:
            pq.write_table(table, stream)
        self.filesystem.move(hidden, f"{self.root}/{name}")
        self.parts += 1
        self.pending = []
