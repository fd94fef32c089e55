"""Test-wide settings: napari and Qt write their settings into a temporary folder."""

from __future__ import annotations

import os
import tempfile

# Before napari is imported anywhere: keep the user's real settings and caches untouched.
_TMP = tempfile.mkdtemp(prefix="medvit-tests-")
os.environ.setdefault("XDG_CONFIG_HOME", os.path.join(_TMP, "config"))
os.environ.setdefault("XDG_CACHE_HOME", os.path.join(_TMP, "cache"))
os.environ.setdefault("XDG_DATA_HOME", os.path.join(_TMP, "data"))  # autosaved corrections
os.environ.setdefault("NAPARI_CONFIG", os.path.join(_TMP, "config", "napari", "settings.yaml"))
os.environ.setdefault("TORCH_HOME", os.path.join(_TMP, "torch"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
