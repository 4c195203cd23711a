# Re-export of the installed metagan_hub class (pip install metagan-hub).
from metagan_hub.models.discriminator_metagan import MetaGANDiscriminator  # noqa: F401
