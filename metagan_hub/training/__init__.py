"""Training building blocks: losses, DiffAugment, few-shot task sampling and meta-learning outer loops."""
