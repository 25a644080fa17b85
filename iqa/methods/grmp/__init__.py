"""GRMP-IQA: learned quality prompts on CLIP (the "paper" and "seed" variants).

The model (`model`), its scorer (`scorer`), training (`train`, `meta`), checkpoints and the official import.
"""
