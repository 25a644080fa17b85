"""Photos: reading them safely, decoding to model pixels, resampling, sizes and file signatures (no model)."""
