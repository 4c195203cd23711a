"""Hub helpers: model-card rendering and repository shims."""
