"""Engine ``transformers``: the model runs in the process that talks to it.

There is no server: ``apply`` only records where the model is; the client
(:mod:`provision.client.transformers`) loads it. A model folder is either what
``save_pretrained`` writes or a single GGUF file::

    <model_dir>/config.json, *.safetensors, tokenizer*     loaded as is
    <model_dir>/<name>.gguf (and no config.json)          loaded with gguf_file= (needs the
                                                          `gguf` and `accelerate` packages)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..errors import DeploymentError
from ..manifest import TransformersDeployment
from ..plan import Action, Change
from .base import DeployContext


def find_weights(model_dir: Path) -> str | None:
    """The GGUF file name to load, or None for a ``save_pretrained`` folder.

    Raises DeploymentError when ``model_dir`` is not a model folder.
    """
    if not model_dir.is_dir():
        raise DeploymentError(
            f"model folder {model_dir} does not exist", hint="run `provision apply` to download the model"
        )
    if (model_dir / "config.json").is_file():
        return None
    ggufs = sorted(p.name for p in model_dir.glob("*.gguf"))
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        raise DeploymentError(
            f"{model_dir} holds several GGUF files ({', '.join(ggufs)}); transformers loads one",
            hint="narrow the model's include: to one .gguf file",
        )
    raise DeploymentError(
        f"{model_dir} is not a model folder: it has neither config.json nor a .gguf file",
        hint="point the deployment at a model saved with save_pretrained, or a single GGUF",
    )


class TransformersBackend:
    """``engine: transformers``: nothing runs between smoke tests; the model loads in-process."""

    engine: ClassVar[str] = "transformers"

    def observe(self, name: str, spec: TransformersDeployment, ctx: DeployContext) -> str | None:
        """Why the model folder is not loadable yet, or None when it looks like a model."""
        model_dir = ctx.model_dirs.get(spec.model)
        if model_dir is None:
            return f"no folder known for model {spec.model!r}"
        try:
            find_weights(Path(model_dir))
        except DeploymentError as exc:
            return exc.message
        return None

    def plan(self, name: str, spec: TransformersDeployment, observed: str | None, ctx: DeployContext) -> Action:
        reason = "runs in-process at smoke-test time"
        if observed is None:
            return Action("deployment", name, Change.NOOP, reason)
        # Nothing for apply to do (the model's download is the model's action), but status
        # must not call a deployment that cannot load "ok".
        return Action("deployment", name, Change.NOOP, f"{reason} (for now: {observed})", details={"state": "missing"})

    def apply(self, action: Action, spec: TransformersDeployment, ctx: DeployContext) -> dict[str, Any]:
        model_dir = ctx.model_dirs.get(spec.model)
        return {
            "engine": self.engine,
            "model": spec.model,
            "model_dir": str(model_dir) if model_dir else None,
            "dtype": spec.dtype,
            "device": spec.device,
        }

    def remove(self, name: str, record: Mapping[str, Any], ctx: DeployContext) -> None:
        return None  # nothing was created
