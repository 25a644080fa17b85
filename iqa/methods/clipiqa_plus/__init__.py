"""CLIP-IQA+: CLIP-IQA's RN50 with a CoOp-learned prompt pair (registered in `iqa.methods.builtin`)."""
