"""classy_fast: a fast, hackable image-classification trainer for PyTorch.

    python -m classy_fast.train            # the embedded default run
    python -m classy_fast.info             # what was built (extension, CUDA kernels, DALI)

Library use: ``classy_fast.task.ClassificationTask`` (the orchestrator), ``classy_fast.ops`` (fused
kernels with reference fallbacks), ``classy_fast.registry`` (add your own models, losses, ...).
"""

__version__ = "0.1.0"
