"""Loaders for the public image-quality datasets, in the layouts they are published in.

Every loader takes the dataset's root folder (as unpacked from the official download) and returns
a list of :class:`LabelledImage` with absolute image paths and the dataset's own subjective score,
always oriented so that higher is better. Scores are not rescaled; :data:`SCORE_RANGES` gives each
dataset's nominal range and :func:`normalize_scores` maps scores to [0, 1] for training.

A missing labels file, image folder or image raises :class:`DatasetLayoutError`, which names what
is missing and shows the expected layout (:data:`LAYOUTS`).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iqa.errors import InputError, IQAError
from iqa.labels.keep import parse_label
from iqa.photos.photo import SUPPORTED_EXTENSIONS


@dataclass
class LabelledImage:
    """One image with its quality score (higher is better).

    ``ref`` names the pristine source image of a synthetically distorted image, ``distortion``
    its distortion type (e.g. ``"kadid10k:03"``, ``"gaussian_blur"``) and ``level`` its strength
    (1 = mildest); all three are ``None`` for authentically distorted photos. ``keep`` is its
    keep/reject label (True: keep) where the set has one (`iqa.labels.keep`).
    """

    path: Path
    score: float
    ref: str | None = None
    distortion: str | None = None
    level: int | None = None
    keep: bool | None = None


class DatasetLayoutError(IQAError, FileNotFoundError):
    """A dataset folder lacks a file or folder that its published layout has."""


class DatasetFormatError(IQAError, ValueError):
    """A labels file exists but its content is not what the dataset publishes."""


DATASETS = ("koniq10k", "livec", "spaq", "kadid10k", "tid2013", "csv", "folders")

# Nominal (min, max) of each dataset's published score, higher is better.
SCORE_RANGES: dict[str, tuple[float, float]] = {
    "koniq10k": (1.0, 5.0),
    "livec": (0.0, 100.0),
    "spaq": (0.0, 100.0),
    "kadid10k": (1.0, 5.0),
    "tid2013": (0.0, 9.0),
    "folders": (0.0, 1.0),
}

KONIQ_LABELS = "koniq10k_scores_and_distributions.csv"
KONIQ_RESOLUTIONS = ("1024x768", "512x384")
LIVEC_NAMES = Path("Data") / "AllImages_release.mat"
LIVEC_MOS = Path("Data") / "AllMOS_release.mat"
LIVEC_TRAINING_IMAGES = 7
SPAQ_LABELS = "MOS and Image attribute scores.xlsx"
KADID_LABELS = "dmos.csv"
TID_LABELS = "mos_with_names.txt"

LAYOUTS: dict[str, str] = {
    "koniq10k": (
        "koniq10k/\n"
        f"  {KONIQ_LABELS}   (columns image_name, MOS, ...)\n"
        "  1024x768/*.jpg   (or 512x384/*.jpg, the half-size release)"
    ),
    "livec": (
        "ChallengeDB_release/\n"
        "  Data/AllImages_release.mat   (cell array of image names)\n"
        "  Data/AllMOS_release.mat      (MOS, 1 x N)\n"
        "  Images/*.bmp|*.JPG           (the first 7 listed images in Images/trainingImages/)"
    ),
    "spaq": (
        f"SPAQ/\n  {SPAQ_LABELS}   (or Annotations/{SPAQ_LABELS}; columns 'Image name', 'MOS')\n  TestImage/*.jpg"
    ),
    "kadid10k": (
        "kadid10k/\n"
        f"  {KADID_LABELS}   (columns dist_img, ref_img, dmos, var)\n"
        "  images/I01_01_01.png ...   (reference, type and level in the name)"
    ),
    "tid2013": (
        "tid2013/\n"
        f"  {TID_LABELS}   (one 'MOS name' pair per line)\n"
        "  distorted_images/i01_01_1.bmp ...   (reference, type and level in the name)"
    ),
    "csv": (
        "any folder/\n"
        "  labels.csv   (header with at least 'path' and 'score'; optional ref, distortion, level,\n"
        "                label (keep/reject, good/bad or 1/0); paths relative to the CSV's folder)"
    ),
    "folders": ("any folder/\n  good/   photos to keep (score 1)\n  bad/    photos to reject (score 0)"),
}

KADID10K_DISTORTIONS: dict[str, str] = {
    "01": "gaussian blur", "02": "lens blur", "03": "motion blur", "04": "color diffusion",
    "05": "color shift", "06": "color quantization", "07": "color saturation 1",
    "08": "color saturation 2", "09": "JPEG2000", "10": "JPEG", "11": "white noise",
    "12": "white noise in color component", "13": "impulse noise", "14": "multiplicative noise",
    "15": "denoise", "16": "brighten", "17": "darken", "18": "mean shift", "19": "jitter",
    "20": "non-eccentricity patch", "21": "pixelate", "22": "quantization", "23": "color block",
    "24": "high sharpen", "25": "contrast change",
}  # fmt: skip

TID2013_DISTORTIONS: dict[str, str] = {
    "01": "additive gaussian noise", "02": "additive noise in color components",
    "03": "spatially correlated noise", "04": "masked noise", "05": "high frequency noise",
    "06": "impulse noise", "07": "quantization noise", "08": "gaussian blur",
    "09": "image denoising", "10": "JPEG compression", "11": "JPEG2000 compression",
    "12": "JPEG transmission errors", "13": "JPEG2000 transmission errors",
    "14": "non eccentricity pattern noise", "15": "local block-wise distortions",
    "16": "mean shift", "17": "contrast change", "18": "change of color saturation",
    "19": "multiplicative gaussian noise", "20": "comfort noise",
    "21": "lossy compression of noisy images", "22": "color quantization with dither",
    "23": "chromatic aberrations", "24": "sparse sampling and reconstruction",
}  # fmt: skip

_KADID_NAME = re.compile(r"^(I\d+)_(\d\d)_(\d\d)\.\w+$", re.IGNORECASE)
_TID_NAME = re.compile(r"^(i\d+)_(\d\d)_(\d)\.\w+$", re.IGNORECASE)


def _missing(kind: str, what: str | Path, root: Path) -> DatasetLayoutError:
    return DatasetLayoutError(f"{kind}: {what} not found under {root}. Expected layout:\n{LAYOUTS[kind]}")


def _require(kind: str, root: Path, relative: Path | str, folder: bool = False) -> Path:
    path = root / relative
    if not (path.is_dir() if folder else path.is_file()):
        raise _missing(kind, relative, root)
    return path


def _check_images(kind: str, items: list[LabelledImage], labels: Path) -> list[LabelledImage]:
    missing = [item.path for item in items if not item.path.is_file()]
    if missing:
        examples = ", ".join(str(p) for p in missing[:3])
        raise DatasetLayoutError(
            f"{kind}: {len(missing)} of {len(items)} images listed in {labels.name} are missing, "
            f"e.g. {examples}. Expected layout:\n{LAYOUTS[kind]}"
        )
    return items


def _case_insensitive_lookup(folder: Path) -> Callable[[str], Path]:
    """Resolve names regardless of case: some TID2013 copies store files as ``I25_...`` or
    ``.BMP`` while the names file says ``i25_...bmp``. Unknown names give the literal path."""
    by_lower = {p.name.lower(): p for p in folder.iterdir()}
    return lambda name: by_lower.get(name.lower(), folder / name)


def _read_csv_rows(kind: str, path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        absent = [c for c in required if c not in columns]
        if absent:
            raise DatasetFormatError(f"{kind}: {path} lacks column(s) {absent}; it has {columns}")
        return [{k.strip(): (v or "").strip() for k, v in row.items() if k} for row in reader]


def _to_float(kind: str, path: Path, line: int, value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        raise DatasetFormatError(f"{kind}: {path} row {line}: score {value!r} is not a number") from None
    if not math.isfinite(score):
        raise DatasetFormatError(f"{kind}: {path} row {line}: score {value!r} is not a finite number")
    return score


def load_koniq10k(root: str | Path, resolution: str | None = None, score_column: str = "MOS") -> list[LabelledImage]:
    """KonIQ-10k: MOS on 1-5 (``score_column="MOS_zscore"`` gives the 0-100 z-score MOS).

    ``resolution`` picks the image folder, ``"1024x768"`` (the original release) or
    ``"512x384"`` (the half-size release most public code, pyiqa included, trains on); by default
    the first of those two that exists.
    """
    root = Path(root)
    labels = _require("koniq10k", root, KONIQ_LABELS)
    if resolution is None:
        folders = [r for r in KONIQ_RESOLUTIONS if (root / r).is_dir()]
        if not folders:
            raise _missing("koniq10k", " or ".join(f"{r}/" for r in KONIQ_RESOLUTIONS), root)
        resolution = folders[0]
    elif resolution not in KONIQ_RESOLUTIONS:
        raise InputError(f"koniq10k: resolution must be one of {KONIQ_RESOLUTIONS}, got {resolution!r}")
    images = _require("koniq10k", root, resolution, folder=True)
    rows = _read_csv_rows("koniq10k", labels, ["image_name", score_column])
    items = [
        LabelledImage(images / row["image_name"], _to_float("koniq10k", labels, i + 2, row[score_column]))
        for i, row in enumerate(rows)
    ]
    return _check_images("koniq10k", items, labels)


def _mat_strings(cell: np.ndarray) -> list[str]:
    """Flatten a MATLAB cell array of strings as read by scipy.io.loadmat (N x 1 or 1 x N
    object array whose entries are 1-element string arrays)."""
    names = []
    for entry in np.asarray(cell, dtype=object).ravel():
        while isinstance(entry, np.ndarray):
            entry = entry.ravel()[0]
        names.append(str(entry).strip())
    return names


def load_livec(root: str | Path, drop_training: bool = True) -> list[LabelledImage]:
    """LIVE In the Wild Image Quality Challenge (LIVEC / CLIVE): MOS on 0-100.

    The first 7 entries of the .mat files are the study's training images (stored in
    ``Images/trainingImages/``); published results drop them, leaving 1162 images, and so does
    this loader unless ``drop_training=False``.
    """
    root = Path(root)
    names_file = _require("livec", root, LIVEC_NAMES)
    mos_file = _require("livec", root, LIVEC_MOS)
    images = _require("livec", root, "Images", folder=True)
    try:
        from scipy.io import loadmat  # here, not at the top: only LIVE Challenge needs it

        names = _mat_strings(loadmat(names_file)["AllImages_release"])
        mos = np.asarray(loadmat(mos_file)["AllMOS_release"], dtype=np.float64).ravel()
    except KeyError as missing_key:
        raise DatasetFormatError(f"livec: variable {missing_key} not found in {root / 'Data'}") from None
    if len(names) != len(mos):
        raise DatasetFormatError(
            f"livec: {LIVEC_NAMES} lists {len(names)} images but {LIVEC_MOS} has {len(mos)} scores"
        )
    items = []
    for index, (name, score) in enumerate(zip(names, mos)):
        is_training = index < LIVEC_TRAINING_IMAGES
        if is_training and drop_training:
            continue
        path = images / name
        if is_training and not path.is_file():
            path = images / "trainingImages" / name
        items.append(LabelledImage(path, float(score)))
    return _check_images("livec", items, names_file)


def _read_xlsx_rows(path: Path) -> tuple[list[str], list[tuple]]:
    from openpyxl import load_workbook  # here, not at the top: only SPAQ needs it

    workbook = load_workbook(path, read_only=True, data_only=True)
    try:
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()
    if not rows:
        return [], []
    header = [str(c).strip() if c is not None else "" for c in rows[0]]
    return header, rows[1:]


def load_spaq(root: str | Path) -> list[LabelledImage]:
    """SPAQ (smartphone photos): MOS on 0-100, images in ``TestImage/``.

    The spreadsheet is looked for in the root and in ``Annotations/`` (where the release puts
    it). Note that the photos are full smartphone resolution; common practice resizes them
    (e.g. shorter side 512) before scoring.
    """
    root = Path(root)
    candidates = [root / SPAQ_LABELS, root / "Annotations" / SPAQ_LABELS]
    labels = next((p for p in candidates if p.is_file()), None)
    if labels is None:
        raise _missing("spaq", SPAQ_LABELS, root)
    images = _require("spaq", root, "TestImage", folder=True)
    header, rows = _read_xlsx_rows(labels)
    absent = [c for c in ("Image name", "MOS") if c not in header]
    if absent:
        raise DatasetFormatError(f"spaq: {labels} lacks column(s) {absent}; it has {header}")
    name_col, mos_col = header.index("Image name"), header.index("MOS")
    items = []
    for line, row in enumerate(rows, start=2):
        if row[name_col] is None:
            continue
        score = _to_float("spaq", labels, line, str(row[mos_col]))
        items.append(LabelledImage(images / str(row[name_col]).strip(), score))
    return _check_images("spaq", items, labels)


def load_kadid10k(root: str | Path) -> list[LabelledImage]:
    """KADID-10k: 81 references x 25 distortion types x 5 levels, score ``dmos`` on 1-5.

    Despite its name the ``dmos`` column is higher-is-better. Distortion type and level come from
    names like ``I01_03_02.png`` (reference I01, type 03, level 2); ``distortion`` is stored as
    ``"kadid10k:03"`` so that types never merge with TID2013's (see
    :data:`KADID10K_DISTORTIONS` for the type names).
    """
    root = Path(root)
    labels = _require("kadid10k", root, KADID_LABELS)
    images = _require("kadid10k", root, "images", folder=True)
    rows = _read_csv_rows("kadid10k", labels, ["dist_img", "ref_img", "dmos"])
    items = []
    for line, row in enumerate(rows, start=2):
        match = _KADID_NAME.match(row["dist_img"])
        if match is None:
            raise DatasetFormatError(
                f"kadid10k: {labels} row {line}: {row['dist_img']!r} is not named like I01_01_01.png"
            )
        ref, code, level = match.groups()
        items.append(
            LabelledImage(
                images / row["dist_img"],
                _to_float("kadid10k", labels, line, row["dmos"]),
                ref=Path(row["ref_img"]).stem or ref,
                distortion=f"kadid10k:{code}",
                level=int(level),
            )
        )
    return _check_images("kadid10k", items, labels)


def load_tid2013(root: str | Path) -> list[LabelledImage]:
    """TID2013: 25 references x 24 distortion types x 5 levels, MOS on 0-9.

    Names like ``i01_08_3.bmp`` give reference I01, type 08, level 3. The names file and the
    folder disagree on case in some copies (``i25`` vs ``I25``, ``.bmp`` vs ``.BMP``), so names
    are matched case-insensitively. Levels are in increasing order of distortion, except for
    types 16 (mean shift) and 17 (contrast change), whose levels alternate in direction.
    ``distortion`` is stored as ``"tid2013:08"``.
    """
    root = Path(root)
    labels = _require("tid2013", root, TID_LABELS)
    images = _require("tid2013", root, "distorted_images", folder=True)
    resolve = _case_insensitive_lookup(images)
    items = []
    with open(labels, encoding="utf-8") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            parts = text.split()
            match = _TID_NAME.match(parts[-1]) if len(parts) == 2 else None
            if match is None:
                raise DatasetFormatError(
                    f"tid2013: {labels} line {line}: expected 'MOS i01_01_1.bmp', got {text.strip()!r}"
                )
            ref, code, level = match.groups()
            items.append(
                LabelledImage(
                    resolve(parts[1]),
                    _to_float("tid2013", labels, line, parts[0]),
                    ref=ref.upper(),
                    distortion=f"tid2013:{code}",
                    level=int(level),
                )
            )
    return _check_images("tid2013", items, labels)


def _optional(value: str | None) -> str | None:
    return value if value else None


def load_csv(path: str | Path) -> list[LabelledImage]:
    """A plain CSV with a header: ``path,score`` plus optional ``ref``, ``distortion``, ``level``.

    Relative paths are resolved against the CSV's folder and refused where they lead out of it
    (absolute paths are taken as they are); a photo listed twice and a score that is not a finite
    number are refused too, by row. A folder argument reads
    its ``labels.csv`` (the file :func:`iqa.labels.distortions.make_distorted_set` writes).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "labels.csv"
    if not path.is_file():
        raise DatasetLayoutError(f"csv: labels file {path} not found. Expected layout:\n{LAYOUTS['csv']}")
    rows = _read_csv_rows("csv", path, ["path", "score"])
    items = []
    first_row: dict[Path, int] = {}
    for line, row in enumerate(rows, start=2):
        image = _inside(path, line, row["path"])
        if image in first_row:
            raise DatasetFormatError(f"csv: {path} row {line}: {row['path']} is listed twice (row {first_row[image]})")
        first_row[image] = line
        level = _optional(row.get("level"))
        try:
            parsed_level = int(level) if level is not None else None
        except ValueError:
            raise DatasetFormatError(f"csv: {path} row {line}: level {level!r} is not an integer") from None
        items.append(
            LabelledImage(
                image.resolve(),
                _to_float("csv", path, line, row["score"]),
                ref=_optional(row.get("ref")),
                distortion=_optional(row.get("distortion")),
                level=parsed_level,
                keep=_label("csv", path, line, row.get("label", "")),
            )
        )
    return _check_images("csv", items, path)


def _label(kind: str, path: Path, line: int, value: str) -> bool | None:
    try:
        return parse_label(value)
    except InputError as err:
        raise DatasetFormatError(f"{kind}: {path} row {line}: {err}") from None


def load_folders(root: str | Path) -> list[LabelledImage]:
    """Photos sorted into ``good/`` (keep, score 1) and ``bad/`` (reject, score 0), by file name."""
    root = Path(root)
    items = []
    for folder, keep in (("good", True), ("bad", False)):
        found = _require("folders", root, folder, folder=True)
        files = sorted(p for p in found.iterdir() if p.is_file() and p.suffix.lower() in SUPPORTED_EXTENSIONS)
        items += [LabelledImage(p.resolve(), float(keep), keep=keep) for p in files]
    return items


def _inside(labels: Path, line: int, name: str) -> Path:
    """A listed photo's path: an absolute one as it is (`iqa.labels.distortions.write_labels` writes photos
    outside the folder so), a relative one under the labels file's folder, refused where it leads
    out of it (`..`): no labels file this project writes holds one."""
    folder = Path(os.path.normpath(labels.parent.absolute()))
    image = Path(os.path.normpath(folder / name))
    if not name or (not Path(name).is_absolute() and (not image.is_relative_to(folder) or image == folder)):
        raise DatasetFormatError(f"csv: {labels} row {line}: path {name!r} leads out of the set's folder {folder}")
    return image


_LOADERS: dict[str, Callable[..., list[LabelledImage]]] = {
    "koniq10k": load_koniq10k,
    "livec": load_livec,
    "spaq": load_spaq,
    "kadid10k": load_kadid10k,
    "tid2013": load_tid2013,
    "csv": load_csv,
    "folders": load_folders,
}


def load_dataset(kind: str, root: str | Path, **options) -> list[LabelledImage]:
    """Load dataset ``kind`` (one of :data:`DATASETS`) from ``root``; ``options`` go to its loader."""
    key = kind.lower().replace("-", "").replace("_", "")
    if key not in _LOADERS:
        raise InputError(f"unknown dataset {kind!r}; known: {', '.join(DATASETS)}")
    return _LOADERS[key](root, **options)


def normalize_scores(scores: Iterable[float], low: float | None = None, high: float | None = None) -> np.ndarray:
    """Min-max scale scores to [0, 1].

    ``low``/``high`` default to the scores' own min and max; pass a dataset's range (e.g. from
    :data:`SCORE_RANGES`, or the full training set's) to scale a subset consistently.
    """
    values = np.asarray(list(scores), dtype=np.float64)
    if values.size == 0:
        raise InputError("normalize_scores needs at least one score")
    if not np.all(np.isfinite(values)):
        raise InputError("normalize_scores: scores contain NaN or infinite values")
    low = float(values.min()) if low is None else float(low)
    high = float(values.max()) if high is None else float(high)
    if high <= low:
        raise InputError(f"normalize_scores: empty score range [{low}, {high}] (all scores equal?)")
    return (values - low) / (high - low)


def split_indices(
    n: int,
    train_fraction: float = 0.8,
    seed: int = 0,
    groups: Sequence[str | None] | None = None,
) -> tuple[list[int], list[int]]:
    """Random train/test split of ``range(n)``, reproducible from ``seed``.

    With ``groups`` (e.g. each image's ``ref``), whole groups go to one side, so that the
    distorted versions of one reference never appear in both parts, the usual protocol for
    TID2013 and KADID-10k; ``train_fraction`` then applies to the number of groups.
    """
    if not 0.0 < train_fraction < 1.0:
        raise InputError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
    rng = np.random.default_rng(seed)
    if groups is None:
        units: list[list[int]] = [[i] for i in range(n)]
    else:
        if len(groups) != n:
            raise InputError(f"groups has {len(groups)} entries for n={n}")
        by_group: dict[str | None, list[int]] = {}
        for index, group in enumerate(groups):
            by_group.setdefault(group, []).append(index)
        units = list(by_group.values())
    if len(units) < 2:
        raise InputError(f"need at least 2 {'groups' if groups is not None else 'items'} to split, got {len(units)}")
    order = rng.permutation(len(units))
    n_train = min(max(int(round(train_fraction * len(units))), 1), len(units) - 1)
    train = sorted(i for u in order[:n_train] for i in units[u])
    test = sorted(i for u in order[n_train:] for i in units[u])
    return train, test
