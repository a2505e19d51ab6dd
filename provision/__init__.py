"""provision: provision and deploy LLMs from YAML manifests, and prove each deployment works."""

__version__ = "0.1.0"
