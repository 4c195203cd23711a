# Loads the Meta-GAN pipeline class from the installed `metagan_hub` package (pip install metagan-hub).
# This lets `diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` load this folder.
from metagan_hub.pipelines.pipeline_metagan import MetaGANPipeline  # noqa: F401
