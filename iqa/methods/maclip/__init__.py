"""MA-CLIP: CLIP-IQA's prompt pairs on overlapping windows and the whole photo, fused with a magnitude cue."""
