"""Class-structured image data sources (kanjivg glyphs, system fonts, image folders, HF datasets, digits)."""
