"""Few-shot generation quality metrics."""
