"""Trainer: fine-tunes the sentiment checkpoints the consumer loads."""
