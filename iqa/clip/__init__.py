"""CLIP: backbones (and the tiny test ones), devices, preprocessing, the text tower, the feature store and the
CoOp prompt learner shared by the methods that learn prompts."""
