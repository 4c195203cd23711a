from .pipeline_metagan import MetaGANPipeline

__all__ = ["MetaGANPipeline"]
