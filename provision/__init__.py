"""provision: provision and deploy LLMs from YAML manifests, and prove each deployment works.

``provision.connect(manifest, deployment)`` gives a :class:`~provision.client.Client`; it is
imported on first use, so the CLI's start-up does not pay for it.
"""

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Client", "__version__", "connect"]

if TYPE_CHECKING:
    from .client import Client, connect


def __getattr__(name: str) -> Any:
    if name in ("connect", "Client"):
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'provision' has no attribute {name!r}")
