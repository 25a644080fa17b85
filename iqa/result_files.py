"""Result files written while a run goes on, and read back to resume it: CSV, JSON Lines, Parquet.

One row per photo: its name (the path as given: the identifier a re-run skips), path, the content
hash of the file, a `score[METHOD]` column per method, `p[METHOD: positive / negative]` per prompt
pair, and the notes. CSV and JSON Lines are appended and flushed batch by batch; a row is one line,
so a run killed mid-write leaves at most a truncated last line, which the next run cuts off before
appending. Parquet cannot be appended to, and a file killed before its footer is unreadable: the
rows go to a JSON Lines journal next to it (`NAME.parquet.partial.jsonl`) and become Parquet row
groups (with the rows of an existing complete file) when the run ends.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .errors import UsageError
from .filtering import OutputError
from .pipeline import PhotoScores

FORMATS = ("csv", "jsonl", "parquet")
_ROW_GROUP = 10_000


def output_format(path: Path) -> str:
    """The format a result file's extension names; UsageError for another."""
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"{path}: --out must end in .csv, .jsonl or .parquet")
    if suffix == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError(f"{path}: writing Parquet needs pyarrow (pip install pyarrow)") from None
    return suffix


def photo_row(photo: PhotoScores) -> dict[str, str | float]:
    """A photo's results as one flat row."""
    row: dict[str, str | float] = {"name": photo.name, "path": photo.path, "digest": photo.digest}
    for result in photo.results:
        row[f"score[{result.label}]"] = result.score
        for pair in result.pairs:
            row[f"p[{result.label}: {pair.positive} / {pair.negative}]"] = pair.p
    notes = dict.fromkeys(note for result in photo.results for note in result.notes)
    row["notes"] = "; ".join(notes)
    return row


def score_columns(row: dict) -> dict[str, float]:
    """The `score[METHOD]` values of a row, keyed by method label."""
    return {key[6:-1]: float(value) for key, value in row.items() if key.startswith("score[") and value != ""}


class ResultFile:
    """Appends rows to `path` batch by batch; `done` maps the names already there to (scores by method, notes)."""

    def __init__(self, path: Path):
        self.path = path
        self.format = output_format(path)
        self.journal = path.with_name(path.name + ".partial.jsonl") if self.format == "parquet" else path
        self.done: dict[str, tuple[dict[str, float], str]] = {}
        self._columns: list[str] | None = None
        self._parquet_columns: list[str] | None = None
        for row in self._existing_rows():
            self.done[str(row["name"])] = (score_columns(row), str(row.get("notes") or ""))
        self._stream: IO[str] | None = None

    def write(self, photos: list[PhotoScores]) -> None:
        """Append a batch's rows and flush them to disk."""
        rows = [photo_row(p) for p in photos if p.name not in self.done]
        if not rows:
            return
        stream = self._open(list(rows[0]))
        try:
            if self.format == "csv":
                writer = csv.writer(stream)
                for row in rows:
                    writer.writerow([_csv_value(row.get(c, "")) for c in self._columns or []])
            else:
                for row in rows:
                    stream.write(json.dumps(row, ensure_ascii=False) + "\n")
            stream.flush()
            os.fsync(stream.fileno())
        except OSError as err:
            raise OutputError(err.errno or 0, f"could not write {self.journal}: {err.strerror or err}") from err
        for row in rows:
            self.done[str(row["name"])] = (score_columns(row), str(row["notes"]))

    def close(self) -> None:
        """Finish the file (Parquet: journal and earlier rows into row groups, then the journal goes)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self.format == "parquet" and self.journal.exists():
            _journal_to_parquet(self.journal, self.path)

    def _open(self, columns: list[str]) -> IO[str]:
        if self._stream is not None:
            return self._stream
        known = self._columns or self._parquet_columns
        if known is not None and known != columns:
            raise UsageError(
                f"{self.path} holds results with other columns (another method or prompt pairs); "
                "write to another --out or remove it"
            )
        fresh = not self.journal.exists() or self.journal.stat().st_size == 0
        try:
            self._stream = self.journal.open("a", encoding="utf-8", newline="")
        except OSError as err:
            raise OutputError(err.errno or 0, f"could not write {self.journal}: {err.strerror or err}") from err
        self._columns = columns
        if fresh and self.format == "csv":
            csv.writer(self._stream).writerow(columns)
        return self._stream

    def _existing_rows(self) -> Iterator[dict]:
        """Rows of an earlier run, after cutting a truncated last line off the appended file."""
        if self.format == "parquet" and self.path.exists():
            yield from self._parquet_rows()
        if not self.journal.exists():
            return
        _cut_partial_line(self.journal)
        with self.journal.open(encoding="utf-8", newline="") as stream:
            if self.format == "csv":
                reader = csv.DictReader(stream)
                self._columns = list(reader.fieldnames or []) or None
                yield from reader
            else:
                for line in stream:
                    row = json.loads(line)
                    if self._columns is None:
                        self._columns = list(row)
                    yield row

    def _parquet_rows(self) -> Iterator[dict]:
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(self.path)
        except Exception as err:  # pyarrow raises its own ArrowInvalid for a damaged file
            raise UsageError(
                f"{self.path}: not a readable Parquet file ({err}); remove it or choose another --out"
            ) from err
        self._parquet_columns = table.schema_arrow.names
        score_names = ["name", "notes", *(c for c in table.schema_arrow.names if c.startswith("score["))]
        for batch in table.iter_batches(columns=score_names):
            yield from batch.to_pylist()


def _csv_value(value: str | float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else value


def _cut_partial_line(path: Path) -> None:
    """Cut off a last line without its newline: what a run killed mid-write leaves."""
    with path.open("rb+") as stream:
        size = stream.seek(0, io.SEEK_END)
        if size == 0:
            return
        stream.seek(size - 1)
        if stream.read(1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - 65536)
            stream.seek(start)
            chunk = stream.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                stream.truncate(start + cut + 1)
                return
            end = start
        stream.truncate(0)


def _journal_to_parquet(journal: Path, path: Path) -> None:
    """Rows of an existing complete Parquet file, then the journal's, into `path` (atomically)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    partial = path.with_name(f".{path.name}.iqa-partial")
    writer = None
    try:
        sources: list = []
        if path.exists():
            sources.append(pq.ParquetFile(path).iter_batches(batch_size=_ROW_GROUP))
        sources.append(_journal_batches(journal))
        for batches in sources:
            for batch in batches:
                table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
                if writer is None:
                    writer = pq.ParquetWriter(partial, table.schema)
                writer.write_table(table.cast(writer.schema))
        if writer is not None:
            writer.close()
            writer = None
            partial.replace(path)
        journal.unlink()
    except OSError as err:
        raise OutputError(err.errno or 0, f"could not write {path}: {err.strerror or err}") from err
    finally:
        if writer is not None:
            writer.close()


def _journal_batches(journal: Path) -> Iterator:
    import pyarrow as pa

    rows: list[dict] = []
    with journal.open(encoding="utf-8") as stream:
        for line in stream:
            rows.append(json.loads(line))
            if len(rows) == _ROW_GROUP:
                yield pa.Table.from_pylist(rows)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows)
