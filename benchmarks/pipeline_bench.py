"""Benchmark of the streaming pipeline on 12 MP JPEGs, every ratio measured side by side in one run.

1. Peak memory of `python -m iqa score` (test backbone) on 100 and on 1,000 photos: the main
   process (RSS), and the whole process tree (decoding workers included; PSS), sampled from /proc.
2. Decoding + preprocessing throughput, from file to normalised pixels: the path `score` took when
   issue 11 was filed (full decode, a hash of the decoded pixels, resize and normalise in one
   process), its decode + resize alone, and the pipeline's worker (JPEG draft, the hash of the
   file's bytes, uint8) followed by the normalisation; per core and with a pool; on the default
   set and on a grainy one (per-pixel noise, about 4 MB a file, made in `<photos-dir>-grain`).
3. The cached re-run: `score` on the 1,000 photos in a new process with one prompt pair edited,
   against the first run (which filled the disk cache).
4. Draft against full decoding on the bundled photos at camera size (8x: 3072 px): pixels and scores;
   and `iqa.photos.resample` (torch's uint8 bicubic) against Pillow's bicubic, which it replaced.
5. `channels_last` for RN50 on the CPU.
6. The local-Ray overhead: `score --engine ray` against the local engine on the same 12 MP photos
   (both from the command line, test backbone, no disk cache), Ray started and stopped by the run.

The photo set is made once (`benchmarks.photoset`) in `--photos-dir` and reused by later runs.

    python -m benchmarks.pipeline_bench --photos-dir /tmp/iqa12mp [--count 1000] [--only memory,decode,...]
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image

from benchmarks.photoset import ensure_photos

if TYPE_CHECKING:
    from iqa.clip.preprocess import Preprocessor
    from iqa.photos.decode import ResizePlan

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("memory", "decode", "draft", "resample", "channels_last", "ray")


def _tree(root: int) -> list[int]:
    """`root` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _proc_mib(path: str, field: str) -> float:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mib(pid: int) -> float:
    return _proc_mib(f"/proc/{pid}/status", "VmRSS:")


def _pss_mib(pid: int) -> float:
    """Proportional set size: pages shared by several processes (the decoding workers share the
    fork server's torch) count once across them, where a sum of RSS would count them in each."""
    return _proc_mib(f"/proc/{pid}/smaps_rollup", "Pss:")


def run_measured(command: list[str]) -> tuple[float, float, float, str]:
    """(wall s, peak RSS of the main process MiB, peak PSS of the process tree MiB, stderr's last line)."""
    with tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        main_peak = tree_peak = 0.0
        while process.poll() is None:
            pids = _tree(process.pid)
            main_peak = max(main_peak, _rss_mib(process.pid))
            tree_peak = max(tree_peak, sum(_pss_mib(pid) for pid in pids))
            time.sleep(0.1)
        wall = time.perf_counter() - start
        err.seek(0)
        lines = err.read().strip().splitlines()
    if process.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}): {lines[-3:]}")
    return wall, main_peak, tree_peak, lines[-1] if lines else ""


def score_command(target: str, *options: str) -> list[str]:
    return [sys.executable, "-m", "iqa", "score", target, "--backbone", "test-tiny-rn", *options]


def memory_and_cache(photos_dir: Path, count: int) -> list[str]:
    """Peak memory at 100 and `count` photos (fresh caches), then the re-run with one pair edited."""
    lines = ["## memory and the cached re-run (`python -m iqa score`, test-tiny-rn, default workers)"]
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        small = str(photos_dir / "photo-000[0-9][0-9].jpg")  # the first 100
        print("(running: 100 photos)", flush=True)
        wall_100, main_100, tree_100, summary_100 = run_measured(
            score_command(small, "--cache-dir", str(work_dir / "cache100"), "--out", str(work_dir / "r100.csv"))
        )
        print(
            f"100 photos: {wall_100:.1f} s, main {main_100:.0f} MiB, all {tree_100:.0f} MiB; {summary_100}", flush=True
        )
        cache = str(work_dir / "cache")
        wall_n, main_n, tree_n, summary_n = run_measured(
            score_command(str(photos_dir), "--cache-dir", cache, "--out", str(work_dir / "first.csv"))
        )
        print(f"{count} photos: {wall_n:.1f} s, main {main_n:.0f} MiB, all {tree_n:.0f} MiB; {summary_n}", flush=True)
        edited = work_dir / "pairs.csv"
        edited.write_text(
            "positive,negative\nGood image,bad image\nSharp image,blurry image\nsharp edges,blurry edges\n"
            "High resolution image,low resolution image\nA clean photo,a noisy photo\n"
        )
        wall_re, main_re, tree_re, summary_re = run_measured(
            score_command(str(photos_dir), "--cache-dir", cache, "--pairs", str(edited))
        )
    lines += [
        "| photos | wall s | peak RSS main MiB | peak PSS all processes MiB | summary |",
        "|---|---|---|---|---|",
        f"| 100 | {wall_100:.1f} | {main_100:.0f} | {tree_100:.0f} | {summary_100} |",
        f"| {count} | {wall_n:.1f} | {main_n:.0f} | {tree_n:.0f} | {summary_n} |",
        f"| {count}, one pair edited, cached | {wall_re:.1f} | {main_re:.0f} | {tree_re:.0f} | {summary_re} |",
        f"peak main {count} vs 100: {main_n / main_100:.3f}x (target <= 1.15x, < 1536 MiB); "
        f"all processes {tree_n / tree_100:.3f}x",
        f"cached re-run with one pair edited: {wall_n / wall_re:.1f}x faster than the first run (target >= 20x)",
    ]
    return lines


def _plan_and_preprocessor(mode: str) -> tuple[ResizePlan, Preprocessor]:
    from iqa.clip.preprocess import Preprocessor
    from iqa.photos.decode import ResizePlan

    if mode == "native":
        return ResizePlan("native", max_side=1024), Preprocessor(native_resolution=True, max_side=1024)
    return ResizePlan("shortest", 224), Preprocessor(native_resolution=False, image_size=224)


def _pillow_resize(image: Image.Image, mode: str) -> Image.Image:
    """The resize before the pipeline: Pillow's bicubic, to the native size or shortest side + crop."""
    from iqa.photos.sizes import center_crop_box, native_target_size, shortest_side_size

    if mode == "native":
        return image.resize(native_target_size(image.size, 1024), Image.Resampling.BICUBIC)
    resized = image.resize(shortest_side_size(image.size, 224), Image.Resampling.BICUBIC)
    return resized.crop(center_crop_box(resized.size, 224))


def filed_decode(path: Path, mode: str) -> tuple[int, ...]:
    """What `score` did per photo when issue 11 was filed: full decode, EXIF, RGB (open_photo), the
    feature cache's key hashed from the decoded pixels, then resize and normalise on the CPU."""
    import numpy as np
    import torch

    from iqa.photos.photo import image_digest, open_photo

    photo = open_photo(path)
    image_digest(photo.image)
    array = np.asarray(_pillow_resize(photo.image, mode), dtype=np.float32) / 255.0
    pixels = torch.from_numpy(array).permute(2, 0, 1)
    preprocessor = _plan_and_preprocessor(mode)[1]
    mean, std = torch.tensor(preprocessor.mean).view(3, 1, 1), torch.tensor(preprocessor.std).view(3, 1, 1)
    return tuple(((pixels - mean) / std).shape)


def old_decode(path: Path, mode: str) -> tuple[int, ...]:
    """Only the decode and resize of the filed path (no pixel hash, no normalisation): a stricter baseline."""
    import numpy as np

    from iqa.photos.photo import open_photo

    return np.asarray(_pillow_resize(open_photo(path).image, mode)).shape


def new_decode(path: Path, mode: str) -> tuple[int, ...]:
    """The pipeline's worker (bytes hashed, JPEG draft, exact resize, uint8), then the normalisation
    the encoding process does on its device, here on the CPU."""
    import torch

    from iqa.photos.decode import DecodeOptions, decode_file

    plan, preprocessor = _plan_and_preprocessor(mode)
    pixels = decode_file(path, path.name, DecodeOptions((plan,), draft=True)).pixels[0]
    assert pixels is not None
    return tuple(preprocessor.normalize(torch.from_numpy(pixels)[None]).shape)


def decode_throughput(sets: dict[str, list[Path]], workers: int) -> list[str]:
    """Images per second from JPEG file to normalised pixels: the filed path, its decode + resize
    alone, and the pipeline's; per core (one process) and in a pool of `workers` processes."""
    import torch

    torch.set_num_threads(1)  # per core: the normalisation must not borrow the other cores
    lines = [
        f"## decoding + preprocessing of 12 MP JPEGs ({max(len(p) for p in sets.values())} photos a set; images/s)",
        "| photos | target | as filed, 1 process | decode + resize only, 1 process | new (draft), 1 process "
        f"| per-core ratio vs filed | vs decode + resize | as filed, {workers} processes "
        f"| new, {workers} processes | new: {workers} vs 1 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    modes = (("native", "RN50 native, max side 1024"), ("vit", "ViT 224 (shortest side + crop)"))
    for (set_name, paths), (mode, label) in itertools.product(sets.items(), modes):
        megabytes = sum(path.stat().st_size for path in paths) / len(paths) / 1e6
        rates = {}
        for name, fn in (("filed", filed_decode), ("old", old_decode), ("new", new_decode)):
            fn(paths[0], mode)  # imports (open_clip's takes seconds) stay out of the timing
            start = time.perf_counter()
            for path in paths:
                fn(path, mode)
            rates[(name, 1)] = len(paths) / (time.perf_counter() - start)
            if name == "old":
                continue
            with ProcessPoolExecutor(workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
                list(pool.map(fn, paths[:workers], [mode] * workers))  # start the workers first
                start = time.perf_counter()
                list(pool.map(fn, paths, [mode] * len(paths)))
                rates[(name, workers)] = len(paths) / (time.perf_counter() - start)
        lines.append(
            f"| {set_name}, {megabytes:.1f} MB a file | {label} "
            f"| {rates[('filed', 1)]:.1f} | {rates[('old', 1)]:.1f} | {rates[('new', 1)]:.1f} "
            f"| {rates[('new', 1)] / rates[('filed', 1)]:.2f}x | {rates[('new', 1)] / rates[('old', 1)]:.2f}x "
            f"| {rates[('filed', workers)]:.1f} | {rates[('new', workers)]:.1f} "
            f"| {rates[('new', workers)] / rates[('new', 1)]:.2f}x |"
        )
    return lines


def draft_vs_full(backbones: tuple[str, ...]) -> list[str]:
    """How much draft decoding changes inputs and scores, on the bundled photos upscaled 4x as JPEGs."""
    import numpy as np
    from PIL import Image

    from iqa.clip.backbones import load_backbone
    from iqa.clip.features import FeatureStore
    from iqa.engine.pipeline import Pipeline, PipelineOptions
    from iqa.methods.clipiqa.scorer import CLIPIQA
    from iqa.methods.prompts import PRESETS
    from iqa.photos.decode import DecodeOptions, decode_file

    lines = [
        "## draft vs full decoding: 16 of the bundled photos at 8x (3072x2048 and 3072x3072 JPEGs, quality 92)",
        "| backbone | input | mean abs pixel diff (grey levels) | max abs score diff | mean abs score diff |",
        "|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        for source in sorted((ROOT / "examples").glob("*.jpg"))[::4]:
            with Image.open(source) as image:
                big = image.convert("RGB").resize((image.width * 8, image.height * 8), Image.Resampling.BICUBIC)
            paths.append(Path(folder) / source.name)
            big.save(paths[-1], quality=92)
        for name in backbones:
            backbone = load_backbone(name, pretrained=None)
            scorer = CLIPIQA(FeatureStore(backbone, batch_size=8), PRESETS["pyiqa"])
            plan = scorer.preprocessor.resize_plan()
            diffs = []
            for path in paths:
                full = decode_file(path, path.name, DecodeOptions((plan,), draft=False)).pixels[0]
                drafted = decode_file(path, path.name, DecodeOptions((plan,), draft=True)).pixels[0]
                assert full is not None and drafted is not None
                diffs.append(float(np.abs(full.astype(int) - drafted.astype(int)).mean()))
            scores = {}
            for draft in (False, True):
                pipeline = Pipeline([scorer], PipelineOptions(draft=draft, cache=None))
                scores[draft] = {p.name: p.results[0].score for batch in pipeline.run(paths) for p in batch}
            delta = [abs(scores[True][n] - scores[False][n]) for n in scores[False]]
            lines.append(
                f"| {name} | {scorer.store.preprocessor.key.split('|')[0]} | {np.mean(diffs):.2f} "
                f"| {max(delta):.1e} | {np.mean(delta):.1e} |"
            )
    return lines


def resample_vs_pillow(backbones: tuple[str, ...]) -> list[str]:
    """How much `iqa.photos.resample` (torch's uint8 bicubic) changes RN50's native input and scores against
    Pillow's bicubic, which native resolution used before: the bundled photos at 8x, to 1024 px."""
    import numpy as np

    from iqa.clip.backbones import load_backbone
    from iqa.clip.features import FeatureStore
    from iqa.methods.clipiqa.scorer import CLIPIQA
    from iqa.methods.prompts import PRESETS
    from iqa.photos.photo import Photo
    from iqa.photos.resample import resize_image
    from iqa.photos.sizes import native_target_size

    lines = [
        "## iqa.photos.resample against Pillow's bicubic: 16 of the bundled photos at 8x, downsized to a 1024 px side",
        "| backbone | pixels that differ | max abs pixel diff (grey levels) | max abs score diff "
        "| mean abs score diff |",
        "|---|---|---|---|---|",
    ]
    pairs = []
    for source in sorted((ROOT / "examples").glob("*.jpg"))[::4]:
        with Image.open(source) as image:
            big = image.convert("RGB").resize((image.width * 8, image.height * 8), Image.Resampling.BICUBIC)
        target = native_target_size(big.size, 1024)
        pairs.append((big.resize(target, Image.Resampling.BICUBIC), resize_image(big, target)))
    diffs = [np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)) for a, b in pairs]
    share = sum(int((d > 0).sum()) for d in diffs) / sum(d.size for d in diffs)
    for name in backbones:
        scorer = CLIPIQA(FeatureStore(load_backbone(name, pretrained=None), batch_size=8), PRESETS["pyiqa"])
        pillow = scorer.score([Photo(f"p{i}", a) for i, (a, _) in enumerate(pairs)])
        torch_resized = scorer.score([Photo(f"t{i}", b) for i, (_, b) in enumerate(pairs)])
        delta = [abs(x.score - y.score) for x, y in zip(pillow, torch_resized)]
        lines.append(
            f"| {name} | {share:.2%} | {max(int(d.max()) for d in diffs)} | {max(delta):.1e} | {np.mean(delta):.1e} |"
        )
    return lines


def channels_last(repeats: int = 3) -> list[str]:
    """RN50 (random weights) on the CPU, fp32: contiguous vs channels_last, inputs 224x224 and 448x336."""
    import torch

    from iqa.clip.backbones import load_backbone

    backbone = load_backbone("RN50-quickgelu", pretrained=None, device="cpu")
    lines = [
        "## RN50 on the CPU: channels_last (batch 8, fp32, best of 3)",
        "| input | contiguous s | channels_last s | ratio |",
    ]
    lines.append("|---|---|---|---|")
    for h, w in ((224, 224), (336, 448)):
        pixels = torch.randn(8, 3, h, w)
        times = {}
        for layout in ("contiguous", "channels_last"):
            fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
            backbone.model.visual.to(memory_format=fmt)
            batch = pixels.contiguous(memory_format=fmt)
            best = float("inf")
            with torch.no_grad():
                backbone.encode_image(batch)
                for _ in range(repeats):
                    start = time.perf_counter()
                    backbone.encode_image(batch)
                    best = min(best, time.perf_counter() - start)
            times[layout] = best
        backbone.model.visual.to(memory_format=torch.contiguous_format)
        ratio = times["contiguous"] / times["channels_last"]
        lines.append(f"| {w}x{h} | {times['contiguous']:.3f} | {times['channels_last']:.3f} | {ratio:.2f}x |")
    return lines


def ray_overhead(paths: list[Path]) -> list[str]:
    """`score --engine ray` (a local Ray, started and stopped) against the local engine, both in a new process."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for path in paths:
            os.link(path, folder / path.name)
        common = [sys.executable, "-m", "iqa", "score", str(folder), "--backbone", "test-tiny-rn", "--no-cache"]
        runs = {
            "local engine": [*common, "--out", str(Path(tmp) / "local.csv")],
            "Ray (local, 2 CPUs)": [*common, "--engine", "ray", "--out", str(Path(tmp) / "ray")],
        }
        seconds = {}
        for label, command in runs.items():
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
            seconds[label] = time.perf_counter() - start
    local = seconds["local engine"]
    lines = [f"## local-Ray overhead: {len(paths)} 12 MP JPEGs, `iqa score` in a new process each"]
    lines += [f"{label:<22}{t:8.1f} s {t / local:6.2f}x" for label, t in seconds.items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos-dir", type=Path, default=Path(tempfile.gettempdir()) / "iqa-12mp-photos")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--decode-photos", type=int, default=40)
    parser.add_argument("--ray-photos", type=int, default=48)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated: {', '.join(SECTIONS)}")
    args = parser.parse_args()
    only = set(args.only.split(","))
    started = time.perf_counter()
    paths = ensure_photos(args.photos_dir, args.count)
    load = os.getloadavg()
    print(f"# pipeline benchmark: {os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(
        f"# photo set: {len(paths)} 12 MP JPEGs in {args.photos_dir} (ready in {time.perf_counter() - started:.0f} s)"
    )
    sections: list[Callable[[], list[str]]] = []
    if "decode" in only:
        grain_dir = args.photos_dir.with_name(args.photos_dir.name + "-grain")
        grainy = ensure_photos(grain_dir, args.decode_photos, grain=True)
        smooth = paths[: args.decode_photos]
        sections.append(lambda: decode_throughput({"default set": smooth, "grainy set": grainy}, args.workers))
    if "memory" in only:
        sections.append(lambda: memory_and_cache(args.photos_dir, args.count))
    if "draft" in only:
        sections.append(
            lambda: draft_vs_full(("test-tiny-rn", "test-tiny-vit", "RN50-quickgelu", "ViT-B-16-quickgelu"))
        )
    if "resample" in only:
        sections.append(lambda: resample_vs_pillow(("test-tiny-rn", "RN50-quickgelu")))
    if "channels_last" in only:
        sections.append(channels_last)
    if "ray" in only:
        sections.append(lambda: ray_overhead(paths[: args.ray_photos]))
    for section in sections:
        print("\n".join(section()), end="\n\n", flush=True)
    load = os.getloadavg()
    print(f"# done in {time.perf_counter() - started:.0f} s; load average now {load[0]:.1f}")


if __name__ == "__main__":
    main()
