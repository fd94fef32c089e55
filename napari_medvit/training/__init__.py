"""Training: export folders, the fine-tuning tasks (losses, data, metrics) and the fine-tuning loop.

Training modules import torchvision at their top; Triton is kept out first (see
:func:`napari_medvit.models._compat.keep_triton_out_without_cuda`), since a fine-tuning run started
from the viewer imports them after napari's canvas has loaded Mesa's OpenGL driver.
"""

from napari_medvit.models._compat import keep_triton_out_without_cuda

keep_triton_out_without_cuda()
