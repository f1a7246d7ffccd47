"""Shared, model-free pieces of the vision service: settings, errors, image handling, model store."""
