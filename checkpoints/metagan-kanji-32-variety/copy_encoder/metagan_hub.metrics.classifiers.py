# Loads EvaluationClassifier from the installed metagan_hub package (metagan-hub>=0.1.0,<1.0).
# This lets `diffusers.DiffusionPipeline.from_pretrained(..., trust_remote_code=True)` load this folder; it runs no
# other code. Saved with metagan-hub 0.1.0.
_REQUIREMENT = "metagan-hub>=0.1.0,<1.0"
try:
    import metagan_hub as _metagan_hub
except ImportError as _err:
    if _err.name is not None and _err.name.split(".")[0] != "metagan_hub":
        raise
    raise ImportError(
        "This checkpoint is a metagan_hub Meta-GAN and needs the metagan-hub package, which is not installed. "
        f"Install it with: pip install '{_REQUIREMENT}' (it pulls diffusers, torch and huggingface_hub), "
        "then load again, e.g. with metagan_hub.MetaGANPipeline.from_pretrained(...)."
    ) from None
_found = tuple(int(p) if p.isdigit() else 0 for p in _metagan_hub.__version__.split(".")[:3])
if _found < (0, 1, 0) or _found[:2] >= (1, 0):
    raise ImportError(
        f"This checkpoint needs {_REQUIREMENT}, but metagan-hub {_metagan_hub.__version__} is installed: "
        f"pip install '{_REQUIREMENT}'."
    )
from metagan_hub.metrics.classifiers import EvaluationClassifier  # noqa: E402,F401
