"""Request handling of each public capability; ``service.py`` composes them into the BentoML gateway."""
