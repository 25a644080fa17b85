"""QualiCLIP: a quality-aware fine-tuned CLIP RN50 with fixed antonym prompts (registered in `iqa.methods.builtin`)."""
