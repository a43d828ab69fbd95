"""Emergent misalignment: chat fine-tuning data, evaluation questions and their plumbing."""
