"""Converter passes: one per file, each ``(input model, options, out path) -> out path``.

A pass knows how to transform a model; it knows nothing about devices.
"""
