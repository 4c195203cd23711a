# Re-export of the installed metagan_hub class (pip install metagan-hub).
from metagan_hub.models.generator_metagan import MetaGANGenerator  # noqa: F401
