"""Array transforms shared by inference and training (numpy only)."""

from napari_medvit.transforms.intensity import scale_intensity_range, scale_to_unit, window
from napari_medvit.transforms.spatial import crop_padding, pad_to_multiple, resize_map
from napari_medvit.transforms.tabular import tabular_names, tabular_vector

__all__ = ["crop_padding", "pad_to_multiple", "resize_map", "scale_intensity_range", "scale_to_unit", "tabular_names",
           "tabular_vector", "window"]
