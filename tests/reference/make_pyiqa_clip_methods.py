"""Record what pyiqa 0.1.16 computes for `clipiqa`, `clipiqa+`, `maclip` and `qualiclip` on seeded
random weights, so that a parity test of this repository can compare its own implementations with
these numbers (issue 18). The output is `pyiqa_clip_methods.json` beside this file.

Run it once, OUTSIDE this repository's environment, in a virtual environment of its own that holds
pyiqa (it is not a dependency of this project and none of its code is copied here; this file only
imports it and calls it):

    python3 -m venv /work/pyiqa-venv
    /work/pyiqa-venv/bin/pip install --no-deps pyiqa==0.1.16
    /work/pyiqa-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 openai-clip ftfy regex tqdm \
        pyyaml opencv-python-headless requests huggingface_hub open_clip_torch==3.3.0 scikit-image
    /work/pyiqa-venv/bin/pip install 'setuptools<70'   # openai-clip imports pkg_resources
    /work/pyiqa-venv/bin/python tests/reference/make_pyiqa_clip_methods.py [--weights-dir DIR]

It runs on the CPU in fp32 (a few minutes on 2 cores). No network access is needed: pyiqa's
downloads are redirected to files this script writes into `--weights-dir` (default
/tmp/pyiqa-ref-weights, keep it out of git):

- `RN50.pt`: the "OpenAI RN50" every method loads first (`rn50_state(SEED_RN50)`), in OpenAI's
  key layout (= open_clip's `RN50-quickgelu` key layout, 489 tensors), saved as a TorchScript
  archive like OpenAI's file (pyiqa's `load` cannot read a plain state-dict file: see `holder_tree`).
- `CLIP-IQA+_learned_prompts-603f3273.pth`: the CoOp context in the release's layout, a bare
  tensor (not a dict) of shape (16, 512) in fp16 (`clipiqa_plus_ctx(SEED_CTX)`). The released
  file is 17,144 bytes, which is what a bare fp16 (16, 512) tensor saved by torch.save takes.
- `QualiCLIP.pth`: the "fine-tuned" RN50 (`rn50_state(SEED_QUALICLIP)`) under `clip_model.<key>`,
  plus `prompts_features`: the L2-normalised text features of QualiCLIP's 14 prompts, encoded by
  that same fine-tuned text tower (pyiqa's own `encode_text`, fp32, CPU).

The functions `rn50_state`, `clipiqa_plus_ctx`, `checksum` and `input_photos` need only torch,
open_clip, numpy, Pillow and scikit-image, so this repository's own environment can import them
(without pyiqa) to rebuild the same weights and inputs and compare checksums with the JSON.

What it records per method and photo: the score pyiqa returns, and the intermediates our
breakdown shows, read from pyiqa's own modules by forward hooks (never recomputed by a copy of
its code): per pair the cosines s_pos, s_neg and p; for MA-CLIP per view (the patches in
`nn.Unfold` order, then the whole photo resized to 224) the CLIP-IQA score c, the per-pair p, the
magnitude cue m and the fusion weights w_c, w_m, from pyiqa's `box_cox` and `fusion` methods.

MA-CLIP hard-codes CUDA (`load(backbone, 'cuda')`, `.cuda()`, `.to('cuda')`). This harness runs
its computation on the CPU: while MA-CLIP is built and called, `Tensor.cuda` is the identity,
`Tensor.to('cuda')` stays on the CPU, and its `load(..., 'cuda')` is answered by pyiqa's own
`load(..., 'cpu')`, which leaves the model in fp32. Note that on a real GPU pyiqa would NOT call
`.float()` (its loader does that for 'cpu' only), so there MA-CLIP runs with fp16 conv/linear
weights and activations. The fp32 numbers are the parity target; `maclip_fp16_cpu` records, for
information, the same computation with pyiqa's fp16 weight conversion applied, run on the CPU
(not bit-identical to CUDA's fp16 kernels, but it shows the size of the fp16 effect), for the
native-size photos only (fp16 convolutions are slow on a CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import platform
import sys
import urllib.parse
from pathlib import Path

import numpy as np
import torch

SEED_RN50 = 18_001  # the "OpenAI RN50" (CLIP-IQA, CLIP-IQA+, MA-CLIP; QualiCLIP loads it first)
SEED_CTX = 18_002  # CLIP-IQA+'s learned context
SEED_QUALICLIP = 18_003  # QualiCLIP's fine-tuned RN50
LOGIT_SCALE = math.log(100.0)
OPEN_CLIP_CONFIG = "RN50-quickgelu"  # its state-dict keys and shapes are OpenAI's, 1:1

PHOTOS = ("astronaut", "chelsea", "coffee")  # skimage.data, licences in examples/LICENSES.md
SIZES = ("native", (1024, 768), (300, 200))  # (width, height); PIL bicubic resize of the uint8 RGB array

QUALICLIP_PROMPTS = (
    "Good photo.", "Bad photo.",
    "Sharp image.", "Blurry image.",
    "Sharp edges.", "Blurry edges.",
    "High-resolution image.", "Low-resolution image.",
    "Noise-free image.", "Noisy image.",
    "High-quality image.", "Low-quality image.",
    "Good picture.", "Bad picture.",
)  # fmt: skip


# --------------------------------------------------------------------------------------------
# The recipe: importable without pyiqa (this repository's environment rebuilds the same tensors)
# --------------------------------------------------------------------------------------------


def rn50_shapes() -> dict[str, tuple[torch.Size, torch.dtype]]:
    """Key -> (shape, dtype) of open_clip's RN50-quickgelu, built on the meta device (no values)."""
    import open_clip

    with torch.device("meta"):
        model = open_clip.model.CLIP(**open_clip.get_model_config(OPEN_CLIP_CONFIG))
    return {k: (v.shape, v.dtype) for k, v in model.state_dict().items()}


def rn50_state(seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of an RN50 CLIP filled with seeded noise scaled like trained weights.

    Not open_clip's own initialisation: that one zeroes the last BN scale of every residual
    block and sets the logit scale to ln(1/0.07), which makes scores degenerate. Convolutions get
    He scaling: with plain 1/sqrt(fan-in) the features of different photos had cosine ~0.999
    (scores within 0.005 of each other); with He scaling ~0.93-0.96. Keys are visited
    in sorted order with one CPU generator; all values are rounded through fp16 so that pyiqa's
    loader (which casts conv/linear weights to fp16 before loading) keeps them exactly.
    """
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, (shape, dtype) in sorted(rn50_shapes().items()):
        if name.endswith("num_batches_tracked"):
            state[name] = torch.zeros(shape, dtype=dtype)
            continue
        if name == "logit_scale":
            state[name] = torch.tensor(LOGIT_SCALE)
            continue
        noise = torch.randn(shape, generator=generator)
        if name.endswith("running_var"):
            value = 0.5 + noise.abs()
        elif name.endswith("running_mean"):
            value = 0.1 * noise
        elif len(shape) == 1 and name.endswith("weight"):  # BatchNorm / LayerNorm scales
            value = 1.0 + 0.1 * noise
        elif len(shape) <= 1:  # biases
            value = 0.05 * noise
        elif len(shape) == 4:  # convolutions (all before a ReLU or a residual sum): He scaling
            value = noise * math.sqrt(2.0 / math.prod(shape[1:]))
        else:  # linear / embeddings / projections: fan-in scaling
            value = noise / math.sqrt(math.prod(shape[1:]))
        state[name] = value.half().float()
    return state


def clipiqa_plus_ctx(seed: int) -> torch.Tensor:
    """CLIP-IQA+'s context in the release's layout: a bare fp16 tensor (16 ctx tokens, 512)."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(16, 512, generator=generator) / math.sqrt(512)).half()


def checksum(tensors: dict[str, torch.Tensor]) -> dict:
    """sum, sum of squares (float64) and sha256 of the float32 little-endian bytes, keys sorted."""
    digest, total, squares = hashlib.sha256(), 0.0, 0.0
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu()
        if not tensor.is_floating_point():
            continue
        values = tensor.float().contiguous()
        digest.update(name.encode())
        digest.update(values.numpy().astype("<f4").tobytes())
        total += values.double().sum().item()
        squares += values.double().square().sum().item()
    return {"sum": total, "sum_sq": squares, "sha256": digest.hexdigest(), "tensors": len(tensors)}


def input_photos() -> list[dict]:
    """The inputs: name, size, the uint8 HxWx3 RGB array and its sha256."""
    from PIL import Image
    from skimage import data

    out = []
    for photo in PHOTOS:
        array = getattr(data, photo)()
        for size in SIZES:
            if size == "native":
                pixels = array
            else:
                pixels = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BICUBIC))
            pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
            out.append(
                {
                    "photo": photo,
                    "resize": "native" if size == "native" else f"{size[0]}x{size[1]}",
                    "width": pixels.shape[1],
                    "height": pixels.shape[0],
                    "pixels": pixels,
                    "sha256_uint8_hwc": hashlib.sha256(pixels.tobytes()).hexdigest(),
                }
            )
    return out


def to_input_tensor(pixels: np.ndarray) -> torch.Tensor:
    """What pyiqa's `create_metric(...)(tensor)` takes: float32 (1, 3, H, W), RGB, in [0, 1]."""
    return torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0).float() / 255.0


# --------------------------------------------------------------------------------------------
# The reference run: needs pyiqa 0.1.16
# --------------------------------------------------------------------------------------------


def floats(tensor: torch.Tensor) -> list:
    return tensor.detach().double().cpu().tolist()


@contextlib.contextmanager
def patched(obj, name, value):
    original = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield original
    finally:
        setattr(obj, name, original)


@contextlib.contextmanager
def offline_weights(weights_dir: Path):
    """pyiqa's downloads answered by the seeded files (same code paths after the download)."""
    from pyiqa.archs import clip_model, clipiqa_arch, qualiclip_arch

    def download(url, root):  # OpenAI's RN50.pt: the file path, then pyiqa's own loading
        assert url.endswith("/RN50.pt"), url
        return str(weights_dir / "RN50.pt")

    def from_url(url, *args, **kwargs):
        path = weights_dir / urllib.parse.unquote(url.rsplit("/", 1)[-1])
        assert path.exists(), url
        return str(path)

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(clip_model, "_download", download))
        stack.enter_context(patched(clipiqa_arch, "load_file_from_url", from_url))
        stack.enter_context(patched(qualiclip_arch, "load_file_from_url", from_url))
        yield


@contextlib.contextmanager
def cuda_on_cpu(fp16: bool = False):
    """MA-CLIP's hard-coded CUDA calls kept on the CPU (see the module docstring)."""
    from pyiqa.archs import clip_model, maclip_arch

    original_load = maclip_arch.load
    original_to = torch.Tensor.to

    def load(name, device="cpu", *args, **kwargs):
        model = original_load(name, "cpu", *args, **kwargs)  # pyiqa's own loader, fp32
        if fp16:
            clip_model.convert_weights(model)  # what the 'cuda' path leaves: fp16 conv/linear weights
        return model

    def to(self, *args, **kwargs):
        args = tuple("cpu" if (isinstance(a, str) and a.startswith("cuda")) else a for a in args)
        if isinstance(kwargs.get("device"), str) and kwargs["device"].startswith("cuda"):
            kwargs["device"] = "cpu"
        return original_to(self, *args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(maclip_arch, "load", load))
        stack.enter_context(patched(torch.Tensor, "cuda", lambda self, *a, **k: self))
        stack.enter_context(patched(torch.Tensor, "to", to))
        yield


class Holder(torch.nn.Module):
    """A node of a TorchScript archive that only holds tensors under their state-dict names."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def holder_tree(state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """Modules nested by the dotted key names, so that `state_dict()` gives back `state` exactly.

    OpenAI's RN50.pt is a TorchScript archive, and pyiqa's `load` only works on one: for a plain
    state dict it falls back to `torch.load` on the same file object after the failed
    `torch.jit.load` moved its position (EOFError with torch 2.14).
    """
    root = Holder()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if part not in node._modules:
                node.add_module(part, Holder())
            node = node._modules[part]
        if value.is_floating_point():
            node.register_parameter(leaf, torch.nn.Parameter(value.clone(), requires_grad=False))
        else:
            node.register_buffer(leaf, value.clone())
    return root


def write_weights(weights_dir: Path) -> dict:
    """The three seeded files in pyiqa's expected layouts; returns their recipe and checksums."""
    from pyiqa.archs.clip_model import build_model

    weights_dir.mkdir(parents=True, exist_ok=True)
    base = rn50_state(SEED_RN50)
    torch.jit.save(torch.jit.script(holder_tree(base)), weights_dir / "RN50.pt")
    ctx = clipiqa_plus_ctx(SEED_CTX)
    torch.save(ctx, weights_dir / "CLIP-IQA+_learned_prompts-603f3273.pth")

    tuned = rn50_state(SEED_QUALICLIP)
    model = build_model({k: v.clone() for k, v in tuned.items()}).float().eval()
    model.load_state_dict(tuned)  # build_model rounds through fp16; the values already are fp16-exact
    tokens = __import__("clip").tokenize(list(QUALICLIP_PROMPTS))
    with torch.no_grad():
        text = model.encode_text(tokens)
    prompts_features = text / text.norm(dim=-1, keepdim=True)
    qualiclip = {f"clip_model.{k}": v for k, v in tuned.items()}
    qualiclip["prompts_features"] = prompts_features
    torch.save(qualiclip, weights_dir / "QualiCLIP.pth")

    return {
        "rn50": {"seed": SEED_RN50, "checksum": checksum(base)},
        "clipiqa_plus_ctx": {
            "seed": SEED_CTX,
            "shape": list(ctx.shape),
            "dtype": "float16",
            "file_bytes": (weights_dir / "CLIP-IQA+_learned_prompts-603f3273.pth").stat().st_size,
            "checksum": checksum({"ctx": ctx}),
        },
        "qualiclip_rn50": {"seed": SEED_QUALICLIP, "checksum": checksum(tuned)},
        "qualiclip_prompts_features": {
            "shape": list(prompts_features.shape),
            "values": floats(prompts_features),
            "checksum": checksum({"prompts_features": prompts_features}),
        },
    }


class Capture:
    """Keeps the last output of a module (a forward hook)."""

    def __init__(self, module):
        self.output = None
        self.handle = module.register_forward_hook(self.hook)

    def hook(self, module, inputs, output):
        self.output = output

    def close(self):
        self.handle.remove()


def pairs_breakdown(logits: torch.Tensor, logit_scale: float, temperature: float = 1.0) -> list[dict]:
    """Per pair, from the (1, 2K) logits pyiqa computed: cosines and p = softmax(logits/T)[pos]."""
    pairs = logits.reshape(-1, 2)
    p = (pairs / temperature).softmax(dim=-1)[:, 0]
    return [
        {"s_pos": floats(pair[0] / logit_scale), "s_neg": floats(pair[1] / logit_scale), "p": floats(q)}
        for pair, q in zip(pairs, p)
    ]


def run_clip_methods(inputs: list[dict]) -> dict:
    import pyiqa

    results = {}
    for name in ("clipiqa", "clipiqa+", "qualiclip"):
        metric = pyiqa.create_metric(name, device="cpu")
        clip = metric.net.clip_model[0]
        scale = clip.logit_scale.exp().item()
        temperature = float(getattr(metric.net, "temperature", 1.0))
        capture = Capture(clip)
        rows = []
        for item in inputs:
            score = metric(to_input_tensor(item["pixels"]))
            logits = capture.output[0][0]
            rows.append(
                {
                    "photo": item["photo"],
                    "resize": item["resize"],
                    "score": floats(score.reshape(())),
                    "pairs": pairs_breakdown(logits, scale, temperature),
                }
            )
            print(name, item["photo"], item["resize"], rows[-1]["score"], flush=True)
        capture.close()
        results[name] = {"logit_scale_exp": scale, "temperature": temperature, "rows": rows}
    return results


def run_maclip(inputs: list[dict], fp16: bool) -> dict:
    import pyiqa

    with cuda_on_cpu(fp16=fp16):
        metric = pyiqa.create_metric("maclip", device="cpu")
        net = metric.net
        scale = net.clip_model.logit_scale.exp().item()
        capture = Capture(net.clip_model)
        rows = []
        for item in inputs:
            row = {"photo": item["photo"], "resize": item["resize"]}
            try:
                score = metric(to_input_tensor(item["pixels"]))
            except Exception as error:  # noqa: BLE001 - recorded: what pyiqa does with this photo
                row["error"] = f"{type(error).__name__}: {error}"
                rows.append(row)
                print("maclip", item["photo"], item["resize"], row["error"][:120], flush=True)
                continue
            logits, _, features = capture.output
            probs = logits.float().reshape(logits.shape[0], -1, 2).softmax(dim=-1)[..., 0]
            c = probs.mean(dim=1)
            m = net.box_cox(features.abs(), lam=0.5).mean(dim=-1)
            fused, w_c, w_m = net.fusion(c, m)
            views = logits.shape[0]
            row.update(
                {
                    "score": floats(score.reshape(())),
                    "patches": views - 1,
                    "patch_grid_rows_cols": [
                        (item["height"] - 224) // 128 + 1 if item["height"] >= 224 else 0,
                        (item["width"] - 224) // 128 + 1 if item["width"] >= 224 else 0,
                    ],
                    "views": [
                        {
                            "view": "whole_224" if v == views - 1 else f"patch_{v}",
                            "c": floats(c[v]),
                            "m": floats(m[v]),
                            "w_c": floats(w_c[v]),
                            "w_m": floats(w_m[v]),
                            "fused": floats(fused[v]),
                            "feature_norm": floats(features[v].float().norm()),
                            "pairs": pairs_breakdown(logits[v].float(), scale),
                        }
                        for v in range(views)
                    ],
                    "mean_of_views_check": floats(fused.mean()),
                }
            )
            rows.append(row)
            print(
                "maclip" + ("_fp16" if fp16 else ""), item["photo"], item["resize"], row["score"], views - 1, flush=True
            )
        capture.close()
    return {"logit_scale_exp": scale, "rows": rows}


def loaded_state_check() -> dict:
    """The state dicts pyiqa's models hold equal the seeded ones exactly (no rounding on load)."""
    import pyiqa

    base, tuned = rn50_state(SEED_RN50), rn50_state(SEED_QUALICLIP)
    out = {}
    for name, expected in (("clipiqa+", base), ("qualiclip", tuned)):
        held = pyiqa.create_metric(name, device="cpu").net.clip_model[0].state_dict()
        out[name] = max((held[k].float() - v.float()).abs().max().item() for k, v in expected.items())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", type=Path, default=Path("/tmp/pyiqa-ref-weights"))
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("pyiqa_clip_methods.json"))
    args = parser.parse_args()

    import open_clip
    import PIL
    import pyiqa
    import skimage

    torch.set_num_threads(2)
    weights = write_weights(args.weights_dir)
    inputs = input_photos()
    with offline_weights(args.weights_dir), torch.no_grad():
        max_load_diff = loaded_state_check()
        clip_methods = run_clip_methods(inputs)
        maclip = run_maclip(inputs, fp16=False)
        maclip_fp16 = run_maclip([i for i in inputs if i["resize"] == "native"], fp16=True)  # slow on CPU

    record = {
        "what": "pyiqa 0.1.16 outputs on seeded random weights; see README.md and the harness docstring",
        "harness": "tests/reference/make_pyiqa_clip_methods.py",
        "environment": {
            "pyiqa": pyiqa.__version__,
            "torch": torch.__version__,
            "open_clip": open_clip.__version__,
            "pillow": PIL.__version__,
            "scikit_image": skimage.__version__,
            "numpy": np.__version__,
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "device": "cpu, fp32, torch.set_num_threads(2)",
        },
        "recipe": {
            "open_clip_config": OPEN_CLIP_CONFIG,
            "rn50_state": "rn50_state(seed) in the harness: open_clip RN50-quickgelu keys (meta device) in sorted "
            "order, one torch.Generator().manual_seed(seed) on the CPU; per key: num_batches_tracked = 0 (no draw); "
            "logit_scale = ln(100) (no draw); else noise = randn(shape): running_var 0.5 + |noise|, running_mean "
            "0.1*noise, 1-D *weight 1 + 0.1*noise, other 1-D 0.05*noise, 4-D noise * sqrt(2 / prod(shape[1:])), "
            "else noise / sqrt(prod(shape[1:])); "
            "every value rounded through fp16 (.half().float()).",
            "clipiqa_plus_ctx": "clipiqa_plus_ctx(seed): (randn(16, 512, generator) / sqrt(512)).half(), saved by "
            "torch.save as a bare tensor (the release's layout; pyiqa assigns it to PromptLearner.ctx.data)",
            "qualiclip_file": "{'clip_model.' + key: rn50_state(SEED_QUALICLIP)[key]} plus 'prompts_features' = "
            "L2-normalised encode_text of the 14 prompts by that model (fp32, CPU, pyiqa's CLIP)",
            "pyiqa_held_state_max_abs_diff": max_load_diff,
        },
        "weights": weights,
        "inputs": {
            "source": "skimage.data.<photo>() uint8 RGB; resized with PIL Image.resize((width, height), "
            "Image.Resampling.BICUBIC) where resize != native",
            "tensor": "torch.from_numpy(hwc).permute(2, 0, 1).unsqueeze(0).float() / 255: float32 (1, 3, H, W), "
            "RGB, [0, 1], batch of one, passed as pyiqa.create_metric(name, device='cpu')(tensor)",
            "photos": [{k: v for k, v in item.items() if k != "pixels"} for item in inputs],
        },
        "outputs": {
            "clipiqa": clip_methods["clipiqa"],
            "clipiqa+": clip_methods["clipiqa+"],
            "qualiclip": clip_methods["qualiclip"],
            "maclip": maclip,
            "maclip_fp16_cpu": maclip_fp16,
        },
    }
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
