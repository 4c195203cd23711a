"""metagan_hub: few-shot image generation with meta-learned GANs as Hugging Face diffusers pipelines.

Importing this package registers the Meta-GAN model and pipeline classes so that diffusers can resolve the
``[module, class]`` entries written into ``model_index.json`` of saved checkpoints.
"""

__version__ = "0.1.0"

from .models.discriminator_metagan import MetaGANDiscriminator, MetaGANDiscriminatorOutput
from .models.generator_metagan import MetaGANGenerator, MetaGANGeneratorOutput
from .pipelines.pipeline_metagan import MetaGANPipeline

__all__ = [
    "MetaGANDiscriminator",
    "MetaGANDiscriminatorOutput",
    "MetaGANGenerator",
    "MetaGANGeneratorOutput",
    "MetaGANPipeline",
    "__version__",
]
