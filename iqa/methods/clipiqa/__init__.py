"""CLIP-IQA: prompt pairs scored on CLIP features, and its quality map."""
