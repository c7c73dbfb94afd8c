"""Helpers shared by the tests: tiny seeded models, fake SavedModels, a fresh-process runner."""
