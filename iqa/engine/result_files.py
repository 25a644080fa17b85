"""Result files written while a run goes on, and read back to resume it: CSV, JSON Lines, Parquet.

One row per photo: its name (the path as given: the identifier a re-run skips), path, the content
hash of the file, a `score[METHOD]` column per method, `p[METHOD: positive / negative]` per prompt
pair, and the notes. CSV and JSON Lines are appended and flushed batch by batch; a row is one line,
so a run killed mid-write leaves at most a truncated last line, which the next run cuts off before
appending. Parquet cannot be appended to, and a file killed before its footer is unreadable: the
rows go to a JSON Lines journal next to it (`NAME.parquet.partial.jsonl`) and become Parquet row
groups (with the rows of an existing complete file) when the run ends.

A file is trusted only for what it provably is: what its scores depend on (`Pipeline.settings`:
method, prompt pairs and weights, temperature, backbone and weights, preprocessing) is recorded
in `NAME.settings.json` before its first row, and a re-run with other settings is refused, as is
any row read back that is not what this module writes.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from iqa.engine.pipeline import PhotoScores
from iqa.errors import OutputError, UsageError

FORMATS = ("csv", "jsonl", "parquet")
SETTINGS_SUFFIX = ".settings.json"
_PLAIN_COLUMNS = ("name", "path", "digest", "notes")
_MAX_RESCORES = 1000
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


class ResultFileError(UsageError):
    """An existing --out file that cannot be resumed: other settings, no record of them, or rows that
    this command did not write (or that were damaged). The message names the file and the way out;
    `reason` is the message without the way out."""

    def __init__(self, reason: str):
        super().__init__(f"{reason}; it cannot be resumed: choose another --out, or --rescore to score into a new file")
        self.reason = reason


def settings_path(path: Path) -> Path:
    """The sidecar that records what a result file's scores depend on (`Pipeline.settings`)."""
    return path.with_name(path.name + SETTINGS_SUFFIX)


def _refused(where: str, what: str) -> ResultFileError:
    return ResultFileError(f"{where}: {what}")


class ResultFile:
    """Appends rows to `path` batch by batch; `done` maps the names already there to (scores by method, notes).

    `settings` (from `Pipeline.settings`) are recorded beside the file (`settings_path`) before its
    first row; an existing file is resumed only when its record holds the same settings, and only
    with rows that are what this class writes (a name, a finite score in [0, 1] per method, known
    columns); else `ResultFileError` refuses it by name. `resume` chooses a new file instead.
    """

    def __init__(self, path: Path, settings: dict):
        self.path = path
        self.format = output_format(path)
        self.journal = path.with_name(path.name + ".partial.jsonl") if self.format == "parquet" else path
        self.settings = settings
        self.labels = [str(scorer["label"]) for scorer in settings["scorers"]]
        self.done: dict[str, tuple[dict[str, float], str]] = {}
        self._columns: list[str] | None = None
        self._parquet_columns: list[str] | None = None
        self._cut_at: int | None = None  # where a last line truncated mid-write starts
        self._stream: IO[str] | None = None
        try:
            if self._has_rows():
                self._check_settings()
                self._read_rows()
        except OSError as err:
            raise _refused(str(err.filename or path), f"cannot be read ({err.strerror or err})") from err

    @classmethod
    def resume(cls, path: Path, settings: dict, rescore: bool = False) -> tuple[ResultFile, str | None]:
        """`path` resumed; with `rescore`, where it cannot be, the first `NAME-N.EXT` that is new or can be
        (a re-run resumes it), and a line saying so."""
        try:
            return cls(path, settings), None
        except ResultFileError as err:
            if not rescore:
                raise
            refusal = err.reason
        for number in range(1, _MAX_RESCORES + 1):
            candidate = path.with_name(f"{path.stem}-{number}{path.suffix}")
            try:
                return cls(candidate, settings), f"{refusal}; scoring into {candidate} instead (--rescore)"
            except ResultFileError:
                continue
        raise UsageError(f"{path}: no free name for --rescore up to {path.stem}-{_MAX_RESCORES}{path.suffix}")

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
            self.done[str(row["name"])] = (_scores(row, self.labels), str(row["notes"]))

    def close(self) -> None:
        """Finish the file (Parquet: journal and earlier rows into row groups, then the journal goes)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        if self.format == "parquet" and self.journal.exists():
            _journal_to_parquet(self.journal, self.path)

    def _has_rows(self) -> bool:
        for path in {self.path, self.journal}:
            if path.exists() and not path.is_file():
                raise ResultFileError(f"{path}: not a file (a folder?)")
        if self.format == "parquet" and self.path.exists():
            return True
        return self.journal.exists() and self.journal.stat().st_size > 0

    def _check_settings(self) -> None:
        """Refuse a file whose recorded settings are missing, unreadable or not this run's."""
        sidecar = settings_path(self.path)
        try:
            recorded = json.loads(sidecar.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _refused(str(self.path), f"no record of the settings it was scored with ({sidecar.name})") from None
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
            raise _refused(str(sidecar), f"not a readable settings record ({err})") from None
        difference = settings_difference(recorded, self.settings)
        if difference:
            raise _refused(str(self.path), f"scored with other settings: {difference}")

    def _read_rows(self) -> None:
        if self.format == "parquet" and self.path.exists():
            self._read_parquet()
        if not self.journal.exists():
            return
        with self.journal.open("rb") as stream:
            if self.format == "csv":
                self._read_csv(stream)
            else:
                for number, line in self._lines(stream):
                    where = f"{self.journal} line {number}"
                    try:
                        row = json.loads(line)
                    except (ValueError, RecursionError):
                        raise _refused(where, "not a JSON row") from None
                    self._add(row, where)
                    if self._columns is None:
                        self._columns = list(row)
        if self._cut_at is not None:  # only once every complete row is known to be good
            with self.journal.open("rb+") as stream:
                stream.truncate(self._cut_at)

    def _read_csv(self, stream: IO[bytes]) -> None:
        try:
            reader = csv.DictReader(text for _, text in self._lines(stream))
            header = list(reader.fieldnames or [])
            self._check_columns(header, f"{self.journal} line 1")
            self._columns = header or None
            for row in reader:
                self._add(row, f"{self.journal} line {reader.line_num}")
        except csv.Error as err:
            raise _refused(str(self.journal), f"not a CSV file of results ({err})") from None

    def _lines(self, stream: IO[bytes]) -> Iterator[tuple[int, str]]:
        """(number, text) of each complete line; a last line without its newline (a run killed while
        writing it) is left out, and cut off once the rest is read."""
        offset = 0
        for number, raw in enumerate(stream, 1):
            if not raw.endswith(b"\n"):
                self._cut_at = offset
                return
            offset += len(raw)
            yield number, raw.decode("utf-8", "surrogateescape")  # as written: names that are not UTF-8 too

    def _check_columns(self, columns: list[str], where: str) -> None:
        unknown = [column for column in columns if not self._known(column)]
        if unknown:
            raise _refused(where, f"a column this run does not write ({_short(unknown[0])})")

    def _known(self, column: str) -> bool:
        if column in _PLAIN_COLUMNS:
            return True
        return any(column == f"score[{label}]" or column.startswith(f"p[{label}: ") for label in self.labels)

    def _add(self, row: object, where: str) -> None:
        """Take a row read back, or refuse the file: a name, a finite score in [0, 1] per method, known columns."""
        if not isinstance(row, dict):
            raise _refused(where, "not a row of results")
        name = row.get("name")
        if not isinstance(name, str) or not name:
            raise _refused(where, "no photo name")
        if name in self.done:
            raise _refused(where, f"{name} is there twice")
        self._check_columns(list(row), where)
        scores = {}
        for label in self.labels:
            value = row.get(f"score[{label}]")
            score = _score(value)
            if score is None:
                raise _refused(where, f"score[{label}] is {value!r}, not a score between 0 and 1")
            scores[label] = score
        notes = row.get("notes") or ""
        if not isinstance(notes, str):
            raise _refused(where, f"notes are {notes!r}, not text")
        self.done[name] = (scores, notes)

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
            if not self._has_rows():  # the record goes first: rows are never there without it
                _write_atomically(settings_path(self.path), json.dumps(self.settings, ensure_ascii=False, indent=1))
            # a file name that is not UTF-8 (a str with surrogate escapes) is written as its own bytes
            self._stream = self.journal.open("a", encoding="utf-8", errors="surrogateescape", newline="")
        except OSError as err:
            raise OutputError(err.errno or 0, f"could not write {self.journal}: {err.strerror or err}") from err
        self._columns = columns
        if fresh and self.format == "csv":
            csv.writer(self._stream).writerow(columns)
        return self._stream

    def _read_parquet(self) -> None:
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(self.path)
            self._parquet_columns = table.schema_arrow.names
            self._check_columns(self._parquet_columns, str(self.path))
            wanted = ["name", "notes", *(c for c in self._parquet_columns if c.startswith("score["))]
            number = 0
            for batch in table.iter_batches(columns=wanted):
                for row in batch.to_pylist():
                    number += 1
                    self._add(row, f"{self.path} row {number}")
        except ResultFileError:
            raise
        except Exception as err:  # pyarrow raises its own ArrowInvalid for a damaged file
            raise _refused(str(self.path), f"not a readable Parquet file ({err})") from err


def settings_difference(recorded: object, current: dict) -> str:
    """What differs between a recorded and the current `Pipeline.settings`, in words; "" if nothing."""
    if not isinstance(recorded, dict) or not isinstance(recorded.get("scorers"), list):
        return "its settings record is not one this command writes"
    before, now = recorded["scorers"], current["scorers"]
    labels = [s.get("label") if isinstance(s, dict) else None for s in before]
    if labels != [s["label"] for s in now]:
        return f"methods {_short(labels)} in the file, {_short([s['label'] for s in now])} now"
    for old, new in zip(before, now):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return f"{new['label']} {key}: {_short(old.get(key))} in the file, {_short(new.get(key))} now"
    return ""


def _short(value: object, limit: int = 80) -> str:
    text = json.dumps(value)  # ASCII: a refusal of a binary file prints on any terminal
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _score(value: object) -> float | None:
    """A score cell as a float when it is a finite number in [0, 1]; else None."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        score = float(value)
    except ValueError:
        return None
    return score if math.isfinite(score) and 0.0 <= score <= 1.0 else None


def _scores(row: dict, labels: list[str]) -> dict[str, float]:
    return {label: float(row[f"score[{label}]"]) for label in labels if f"score[{label}]" in row}


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.iqa-partial")
    with partial.open("w", encoding="utf-8") as stream:
        stream.write(text + "\n")
        stream.flush()
        os.fsync(stream.fileno())
    partial.replace(path)


def _csv_value(value: str | float) -> str:
    return f"{value:.6f}" if isinstance(value, float) else value


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
    except UnicodeEncodeError:
        raise OutputError(
            errno.EILSEQ,
            f"could not write {path}: a photo's file name is not UTF-8, which Parquet cannot hold; the rows are "
            f"kept in {journal.name} (use --out NAME.csv or .jsonl for such names)",
        ) from None
    finally:
        if writer is not None:
            writer.close()


def _journal_batches(journal: Path) -> Iterator:
    import pyarrow as pa

    rows: list[dict] = []
    with journal.open(encoding="utf-8", errors="surrogateescape") as stream:
        for line in stream:
            rows.append(json.loads(line))
            if len(rows) == _ROW_GROUP:
                yield pa.Table.from_pylist(rows)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows)
