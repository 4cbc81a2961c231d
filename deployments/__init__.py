"""Ray Serve deployment classes. Thin: the logic lives in the pure packages."""
