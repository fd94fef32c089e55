"""Detection on one 2D image (SMCA-DETR): every query's box, best class and score, and the spatial priors.

The frame goes through the one input pipeline at the model's input size; boxes come back as
(y0, x0, y1, x1) pixels of the image. Scores are the sigmoid (focal-loss) scores of the real classes
(the no-object column dropped). SMCA's priors (log G of every decoder layer, head and query on the
stride-32 grid) become the ``prior`` overlay; boxes above ``score_threshold`` are shown.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from napari_medvit.inference.prediction import PRIOR, Overlay, Prediction, boxes_overlay
from napari_medvit.inference.runners import Runner, Steps
from napari_medvit.io.meta import ImageMeta
from napari_medvit.transforms.prepare import prepare_frames, unit_frames


class DetectRunner(Runner):
    def run(self, image: Any, meta: ImageMeta | None, tabular: Any = None) -> Steps:
        t0 = time.perf_counter()
        image = np.asarray(image)
        rgb = meta.rgb if meta is not None else (image.ndim == 3 and image.shape[-1] in (3, 4))
        spatial = image.shape[:-1] if rgb else image.shape
        if len(spatial) != 2:
            raise ValueError(f"{self.config.name} detects in single 2D images; got an image of shape {image.shape}")
        yield self.progress(0, 1, "preparing image", t0)
        p = self.predictor
        frames = prepare_frames(unit_frames(image, rgb)[None], p.pre, self.config.in_chans, rgb=rgb, size=p.resize,
                                device=p.device)
        yield self.progress(0, 1, f"running {self.name}", t0)
        with torch.inference_mode(), self.autocast():
            out, _ = self.config.adapter.forward(p.model, frames.x)
        yield self.progress(1, 1, "post-processing", t0)
        return self._prediction(out, (int(spatial[0]), int(spatial[1])), meta, t0)

    def _prediction(self, out: dict[str, Any], spatial: tuple[int, int], meta: ImageMeta | None,
                    t0: float) -> Prediction:
        names = self.config.class_names
        k = len(names) or out["pred_logits"].shape[-1] - 1
        probs = torch.sigmoid(out["pred_logits"][0, :, :k].float())  # focal-loss scores, no-object column dropped
        scores, labels = probs.max(dim=-1)
        cx, cy, bw, bh = out["pred_boxes"][0].float().unbind(-1)
        h, w = spatial
        boxes = torch.stack([(cy - bh / 2) * h, (cx - bw / 2) * w, (cy + bh / 2) * h, (cx + bw / 2) * w], dim=-1)
        boxes_np, scores_np, labels_np = boxes.cpu().numpy(), scores.cpu().numpy(), labels.cpu().numpy()
        overlays = [boxes_overlay(boxes_np, scores_np, labels_np, self.predictor.pre.score_threshold)]
        if out.get("log_gaussians"):
            log_g = torch.stack([g[0].float() for g in out["log_gaussians"]]).cpu().numpy()
            overlays.append(Overlay(PRIOR, "Gaussian prior", log_g, attrs={"image_shape": spatial},
                                    description="SMCA's spatial prior G of the chosen query (decoder layer, head)"))
        extras: dict[str, np.ndarray] = {"image_shape": np.array(spatial)}
        if "reference" in out:
            extras["reference"] = out["reference"][0].float().cpu().numpy()  # normalised (cx, cy)
        return Prediction(task="detect", model_name=self.config.name, labels=labels_np, probabilities=scores_np,
                          boxes=boxes_np, class_names=names, overlays=overlays, extras=extras, meta=meta,
                          provenance=self.provenance(t0))
