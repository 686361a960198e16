"""Prompt templates, kept apart from the code that fills them."""
