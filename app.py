"""Gradio app: find low-quality photos with CLIP-IQA and GRMP-IQA (Hugging Face Spaces entry point).

The app lives in `iqa/app/`; `python app.py --help` lists its settings.
"""

try:  # ZeroGPU on Hugging Face Spaces patches torch, so it is imported first
    import spaces  # noqa: F401
except ImportError:
    pass

import sys

from iqa.app.demo import main

if __name__ == "__main__":
    sys.exit(main())
