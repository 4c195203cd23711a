from .discriminator_metagan import MetaGANDiscriminator, MetaGANDiscriminatorOutput
from .generator_metagan import MetaGANGenerator, MetaGANGeneratorOutput

__all__ = ["MetaGANDiscriminator", "MetaGANDiscriminatorOutput", "MetaGANGenerator", "MetaGANGeneratorOutput"]
