"""Fused optimizers: SGD, AdamW, LARS and LAMB as multi-tensor kernels (CPU and CUDA).

    from classy_fast.optim import FusedSGD
    opt = FusedSGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True, max_grad_norm=1.0)
    scaler.scale(loss).backward(); scaler.step(opt); scaler.update()   # unscale + clip + step fused

Each step is one kernel launch per param group (plus one norm pass when clipping, and the norm
passes LARS/LAMB need), reads lr / step counts / the GradScaler's scale on the device (no host
sync, CUDA-graph capturable), and matches torch.optim.SGD / AdamW. Without the compiled extension
the same classes run plain-PyTorch reference steps (classy_fast.optim.reference). Details:
docs/optim.md.
"""

from classy_fast.optim import _fake
from classy_fast.optim.adamw import FusedAdamW
from classy_fast.optim.base import FusedOptimizer
from classy_fast.optim.builders import FUSED_OPTIMIZERS, build_fused_optimizer, fused_optimizers_available
from classy_fast.optim.lamb import FusedLAMB
from classy_fast.optim.lars import FusedLARS
from classy_fast.optim.sgd import FusedSGD

_fake.register_fake_kernels()

__all__ = [
    "FUSED_OPTIMIZERS",
    "FusedAdamW",
    "FusedLAMB",
    "FusedLARS",
    "FusedOptimizer",
    "FusedSGD",
    "build_fused_optimizer",
    "fused_optimizers_available",
]
