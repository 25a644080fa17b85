"""Prompt design and filter calibration on labelled sets: keep/reject labels, pair search, weights."""
