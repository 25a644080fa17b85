"""Labelled photo sets: published layouts, synthetic distortions and the agreement metrics (SRCC, PLCC, KRCC)."""
