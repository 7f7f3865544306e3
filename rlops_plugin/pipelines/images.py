"""The container image the components run in (the repo's Dockerfile builds it)."""

from __future__ import annotations

import os

from rlops_plugin._version import __version__

IMAGE_ENV = "RLOPS_COMPONENT_IMAGE"
DEFAULT_IMAGE = f"rlops-plugin:{__version__}"


def component_image() -> str:
    """``RLOPS_COMPONENT_IMAGE`` (at compile time) or ``rlops-plugin:<version>``."""
    return os.environ.get(IMAGE_ENV, DEFAULT_IMAGE)
