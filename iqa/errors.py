"""The one base of every error a user can fix, and the generic ones.

`IQAError` marks bad input (a photo, a prompt file, a checkpoint, an option): the command line
prints its message on one line and exits 2 (3 for `BackboneUnavailable` and `Unavailable`), the
app shows it. Any other exception is a bug and surfaces with its traceback. The specific classes
live beside the code that raises them and also derive from the built-in error they always were
(`ValueError`, `RuntimeError`, `FileNotFoundError`, `ConnectionError`), so existing `except
ValueError` handlers keep working:

    IQAError
    ├── UsageError                        bad options on the command line
    ├── InputError (ValueError)           a value given to the library is out of range or unusable
    ├── PromptError (ValueError)          iqa.methods.prompts
    ├── PhotoError (ValueError)           iqa.photos.photo
    ├── ScoringError (ValueError)         iqa.methods.clipiqa.scorer: a non-finite score
    ├── DatasetLayoutError (FileNotFoundError), DatasetFormatError (ValueError)   iqa.labels.datasets
    ├── BackboneUnavailable (RuntimeError)                                      iqa.clip.backbones
    ├── Unavailable (ConnectionError): RayConnectionError, RayStalled         iqa.engine.ray_engine
    ├── CheckpointMismatch (ValueError) ── BadCheckpoint                        iqa.clip.backbones
    ├── CheckpointError (ValueError), OfficialCheckpointError (ValueError)      iqa.methods.grmp
    └── StateFileError (ValueError)                                             iqa.methods.grmp.state_file

`OutputError` (an `OSError`, not an `IQAError`: the command line exits 4) is a write that failed: a
photo copy or a results file.
"""

from __future__ import annotations


class IQAError(Exception):
    """Bad input that the user can fix; the message says what is wrong and, where it can, how."""


class UsageError(IQAError):
    """Options that cannot work together or lack something (a command-line mistake)."""


class InputError(IQAError, ValueError):
    """A value given to the library that it cannot use (a setting out of range, too few images, ...)."""


class Unavailable(IQAError, ConnectionError):
    """Something the run needs cannot be reached or stopped answering (a Ray cluster): exit 3."""


class OutputError(OSError):
    """Output (a photo copy, a results file) could not be written; the message names the file and why."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()
