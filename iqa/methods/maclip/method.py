"""MA-CLIP as the registry describes it (no torch import: the scorer is built by `build`)."""

from __future__ import annotations

from iqa.methods.registry import Method, Part
from iqa.methods.results import ScoreResult
from iqa.names import MA_CLIP

# The keys of `ScoreResult.extras` a MA-CLIP result carries: the number of views, and means over
# them of c, m, the fusion weights and the fused score (before it is clipped to [0, 1]).
VIEWS, CONSISTENCY, MAGNITUDE, W_C, W_M, FUSED = "views", "c", "m", "w_c", "w_m", "fused"


def maclip_parts(result: ScoreResult) -> list[Part]:
    """p of each prompt pair (mean over the views), the magnitude cue and the two fusion weights."""
    extras, views = result.extras, int(result.extras.get(VIEWS, 0))
    parts = [
        Part(
            f"{MA_CLIP}: {pair.positive} / {pair.negative}",
            pair.p,
            detail=(
                f"<b>{pair.positive}</b> vs <b>{pair.negative}</b>, mean over {views} views<br>"
                f"p = sigmoid(t·(s_pos − s_neg)) = {pair.p:.3f}<br>"
                f"s_pos = {pair.s_pos:.4f}, s_neg = {pair.s_neg:.4f}, weight = {pair.weight:g}"
            ),
        )
        for pair in result.pairs
    ]
    c, m = extras.get(CONSISTENCY, float("nan")), extras.get(MAGNITUDE, float("nan"))
    return [
        *parts,
        Part(
            f"{MA_CLIP}: magnitude cue m",
            m,
            detail=(
                f"m = mean over dimensions of Box-Cox(|x| / σ), λ = 0.5, x the image feature before "
                f"normalisation: {m:.3f} (mean over {views} views; the pairs' c = {c:.3f})"
            ),
        ),
        Part(
            f"{MA_CLIP}: weight of the pairs w_c",
            extras.get(W_C, float("nan")),
            detail="w_c = softmax(1 + d, 0.6 − d)[0] with d = c − m, mean over the views",
        ),
        Part(
            f"{MA_CLIP}: weight of the magnitude w_m",
            extras.get(W_M, float("nan")),
            detail=f"w_m = 1 − w_c; each view scores w_c·c + w_m·m, the score {result.score:.3f} is their mean",
        ),
    ]


ABOUT = r"""### MA-CLIP
Training-free quality from CLIP's prompt pairs and the magnitude of its image features (Liao et al.,
*Beyond Cosine Similarity: Magnitude-Aware CLIP for No-Reference Image Quality Assessment*, AAAI 2026,
[arXiv 2511.09948](https://arxiv.org/abs/2511.09948); pyiqa's `maclip`). The photo (at its own
resolution, as CLIP-IQA gets it) is cut into the 224 x 224 windows every 128 px that fit, plus the whole
photo resized to 224 x 224; for each view *v*, with *x* its image feature before normalisation:

$$c_v = \text{CLIP-IQA}(v) = \tfrac{1}{P}\sum_j \sigma\big(t\,(s_{+,j} - s_{-,j})\big), \qquad
m_v = \frac{1}{D}\sum_{k=1}^{D} \frac{\big(|x_k|/(\sigma_{|x|} + \epsilon) + 1\big)^{\lambda} - 1}{\lambda}$$

(Box-Cox with λ = 0.5; σ the standard deviation of |x| over the dimensions), fused with adaptive weights

$$[w_c, w_m] = \operatorname{softmax}\big(1 + d,\ 0.6 - d\big),\quad d = c_v - m_v, \qquad
q = \frac{1}{V}\sum_v \big(w_c\, c_v + w_m\, m_v\big).$$

What matters: the **prompt pairs** (the same table as CLIP-IQA: an edit re-scores MA-CLIP from cached view
features), the **backbone** (OpenAI RN50 in the paper), and the photo's size (`--max-side`: a 1024 x 768
photo has 35 windows + the whole; larger photos are downsized to it first). A photo smaller than 224 px
on a side has no window and is scored on the whole-photo view only (pyiqa refuses it). The magnitude cue
varies little between photos, so scores cluster; compare photos by rank.
"""

MA_CLIP_METHOD = Method(
    name=MA_CLIP,
    option="maclip",
    column="ma_clip",
    colour="#f4a261",
    follows_prompts=True,
    build="iqa.methods.maclip.scorer:build",
    arguments=("pairs", "temperature"),
    parts=maclip_parts,
    about=ABOUT,
    own_features=True,  # its views' features: `iqa.clip.views.ViewStore`, derived from the shared store
)
