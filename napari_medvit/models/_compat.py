"""Process-level workarounds needed before the model libraries are imported."""

from __future__ import annotations

import os
import sys


def keep_triton_out_without_cuda() -> None:
    """Stop torch from importing Triton on machines without CUDA.

    torchvision imports ``torch._dynamo``, which probes for the ``triton`` package. Triton's
    bundled LLVM crashes the process (segmentation fault) when it is loaded after Mesa's OpenGL
    driver, which napari's canvas has already loaded on Linux with Mesa (llvmpipe under Xvfb,
    Intel/AMD drivers). Triton only serves ``torch.compile`` on GPUs, which napari-medvit does
    not use, so without CUDA we mark it unavailable (``import triton`` then raises ImportError,
    which torch handles). ``MEDVIT_ALLOW_TRITON=1`` disables this.
    """
    if "triton" in sys.modules or os.environ.get("MEDVIT_ALLOW_TRITON") == "1":
        return
    import torch

    if not torch.cuda.is_available():
        sys.modules["triton"] = None  # type: ignore[assignment]
