"""Data sources, schemas, cleaning and joins: raw files in, prepared tables out."""
