"""GPU requests: a deployment's ``gpus:`` (:func:`parse_gpu_request`), and GPUs you may not have,
a built-in table and ``--gpu NAME[xN]`` / ``--vram SIZE[xN]`` targets (:func:`parse_target`).

``check-hardware --gpu L4x2`` judges a manifest against two L4s instead of this machine: the
target becomes an :class:`~provision.hardware.Inventory` whose GPUs are the table's entries
(free = total), so :mod:`provision.fit` judges it exactly as it judges real GPUs.

Memory is what CUDA will see, since vLLM sizes itself from it (``torch.cuda.mem_get_info``):

- the total ``nvidia-smi`` reports, where a public record of it is cited (``reported_mib``);
- else the vendor's figure, in GiB (NVIDIA's "80 GB" is the binary DRAM size: an H100 reports
  81559 MiB, more than 80 x 10^9 bytes), less 1/16 on data-center GDDR boards, whose ECC is on
  by default and takes that share: the reported L4 (23034 of 24576 MiB), A10 (23028), L40S
  (46068 of 49152) and T4 (15360 of 16384) all show it. On HBM boards the driver's total can be
  ~0.5% under the figure (the H100's 79.6 GiB), so an entry without a record may be that generous.

Capabilities follow from the compute capability (https://developer.nvidia.com/cuda-gpus):
bf16 from 8.0 (Ampere; vLLM's CUDA platform lists bfloat16 only from capability 8.0), FP8
tensor cores from 8.9 (Ada, Hopper, Blackwell; NVIDIA Transformer Engine's FP8 support matrix).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .errors import ManifestError

if TYPE_CHECKING:  # the manifest imports this module for `gpus:`; probing stays out of its start-up
    from .hardware import Inventory, MemoryProbe

GIB = 2**30
MIB = 2**20
_ECC_SHARE = 1 / 16  # data-center GDDR with ECC on (see the module docstring)


@dataclass(frozen=True)
class GpuModel:
    name: str  # what --gpu takes, e.g. "A10G", "RTX4090"
    title: str
    kind: str  # "data center", "workstation" or "consumer"
    memory_gb: int  # the vendor's figure
    compute_capability: tuple[int, int]
    reported_mib: int | None = None  # total as nvidia-smi reports it, where a record is cited
    gddr_ecc: bool = False  # data-center GDDR: ECC on by default takes 1/16
    aliases: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> int:
        if self.reported_mib is not None:
            return self.reported_mib * MIB
        share = 1 - _ECC_SHARE if self.gddr_ecc else 1
        return int(self.memory_gb * GIB * share)

    @property
    def bf16(self) -> bool:
        return self.compute_capability >= (8, 0)

    @property
    def fp8(self) -> bool:
        return self.compute_capability >= (8, 9)


# Sources: memory is the vendor's product page or datasheet (URL beside each); reported_mib is
# nvidia-smi's total from the record named; compute capability from developer.nvidia.com/cuda-gpus.
# "modal#2797": github.com/modal-labs/modal-client/pull/2797, nvidia-smi totals of Modal's fleet.
GPUS: tuple[GpuModel, ...] = (
    # nvidia.com/en-us/data-center/dgx-b200/: 1,440 GB of GPU memory over 8 B200s
    GpuModel("B200", "NVIDIA B200", "data center", 180, (10, 0)),
    # nvidia.com/en-us/data-center/h200/: 141 GB HBM3e
    GpuModel("H200", "NVIDIA H200", "data center", 141, (9, 0)),
    # nvidia.com/en-us/data-center/h100/: H100 SXM 80 GB, H100 NVL 94 GB; reported: modal#2797
    GpuModel(
        "H100",
        "NVIDIA H100 80GB HBM3 (SXM)",
        "data center",
        80,
        (9, 0),
        reported_mib=81559,
        aliases=("H100-SXM", "H100-80GB"),
    ),
    GpuModel("H100-NVL", "NVIDIA H100 NVL", "data center", 94, (9, 0)),
    # nvidia.com/en-us/data-center/a100/: 80 GB HBM2e, 40 GB HBM2; reported: modal#2797
    GpuModel("A100-80GB", "NVIDIA A100 80GB", "data center", 80, (8, 0), reported_mib=81920, aliases=("A100",)),
    GpuModel("A100-40GB", "NVIDIA A100 40GB", "data center", 40, (8, 0), reported_mib=40960),
    # nvidia.com/en-us/data-center/l40s/: 48 GB GDDR6 with ECC; reported: modal#2797
    GpuModel("L40S", "NVIDIA L40S", "data center", 48, (8, 9), reported_mib=46068, gddr_ecc=True),
    # nvidia.com/en-us/data-center/l40/: 48 GB GDDR6 with ECC
    GpuModel("L40", "NVIDIA L40", "data center", 48, (8, 9), gddr_ecc=True),
    # nvidia.com/en-us/data-center/a40/: 48 GB GDDR6 with ECC
    GpuModel("A40", "NVIDIA A40", "data center", 48, (8, 6), gddr_ecc=True),
    # nvidia.com/en-us/data-center/l4/: 24 GB GDDR6; reported: modal#2797
    GpuModel("L4", "NVIDIA L4", "data center", 24, (8, 9), reported_mib=23034, gddr_ecc=True),
    # nvidia.com/en-us/data-center/products/a10-gpu/: 24 GB GDDR6; reported: modal#2797
    GpuModel("A10", "NVIDIA A10", "data center", 24, (8, 6), reported_mib=23028, gddr_ecc=True),
    # aws.amazon.com/ec2/instance-types/g5/: A10G with 24 GB per GPU (the same GA102 board as A10)
    GpuModel("A10G", "NVIDIA A10G (AWS G5)", "data center", 24, (8, 6), gddr_ecc=True),
    # nvidia.com/en-us/data-center/tesla-t4/: 16 GB GDDR6; reported: modal#2797
    GpuModel("T4", "NVIDIA T4", "data center", 16, (7, 5), reported_mib=15360, gddr_ecc=True),
    # nvidia.com/en-us/data-center/v100/: 32 or 16 GB HBM2
    GpuModel("V100-32GB", "NVIDIA V100 32GB", "data center", 32, (7, 0), aliases=("V100",)),
    GpuModel("V100-16GB", "NVIDIA V100 16GB", "data center", 16, (7, 0)),
    # nvidia.com/en-us/products/workstations/professional-desktop-gpus/rtx-pro-6000/: 96 GB GDDR7
    GpuModel("RTX-PRO-6000", "NVIDIA RTX PRO 6000 Blackwell", "workstation", 96, (12, 0)),
    # nvidia.com/en-us/design-visualization/rtx-6000/: RTX 6000 Ada, 48 GB GDDR6
    GpuModel("RTX6000-ADA", "NVIDIA RTX 6000 Ada Generation", "workstation", 48, (8, 9)),
    # nvidia.com/en-us/design-visualization/rtx-a6000/: 48 GB GDDR6
    GpuModel("RTXA6000", "NVIDIA RTX A6000", "workstation", 48, (8, 6), aliases=("A6000",)),
    # nvidia.com/en-us/geforce/graphics-cards/50-series/: RTX 5090 32 GB, 5080 16 GB, 5070 Ti 16 GB GDDR7;
    # reported 5090: github.com/noonghunna/club-3090/issues/1261
    GpuModel("RTX5090", "NVIDIA GeForce RTX 5090", "consumer", 32, (12, 0), reported_mib=32607),
    GpuModel("RTX5080", "NVIDIA GeForce RTX 5080", "consumer", 16, (12, 0)),
    GpuModel("RTX5070TI", "NVIDIA GeForce RTX 5070 Ti", "consumer", 16, (12, 0)),
    # nvidia.com/en-us/geforce/graphics-cards/40-series/: RTX 4090 24 GB GDDR6X, 4080 16 GB;
    # reported 4090: github.com/RLinf/RLinf/issues/255
    GpuModel("RTX4090", "NVIDIA GeForce RTX 4090", "consumer", 24, (8, 9), reported_mib=24564),
    GpuModel("RTX4080", "NVIDIA GeForce RTX 4080", "consumer", 16, (8, 9)),
    # nvidia.com/en-us/geforce/graphics-cards/30-series/: RTX 3090 24 GB GDDR6X, 3080 10 GB, 3060 12 GB;
    # reported 3090: github.com/noonghunna/club-3090/issues/1127
    GpuModel("RTX3090", "NVIDIA GeForce RTX 3090", "consumer", 24, (8, 6), reported_mib=24576),
    GpuModel("RTX3080", "NVIDIA GeForce RTX 3080", "consumer", 10, (8, 6)),
    GpuModel("RTX3060", "NVIDIA GeForce RTX 3060", "consumer", 12, (8, 6)),
)


def _key(name: str) -> str:
    """``rtx 4090``, ``RTX-4090`` and ``NVIDIA GeForce RTX4090`` alike."""
    key = re.sub(r"[\s_\-]", "", name.upper())
    return key.removeprefix("NVIDIA").removeprefix("GEFORCE")


_BY_KEY = {_key(alias): gpu for gpu in GPUS for alias in (gpu.name, *gpu.aliases)}


def find_gpu(name: str) -> GpuModel | None:
    return _BY_KEY.get(_key(name))


# -- targets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The GPUs to judge a manifest against instead of this machine's."""

    label: str  # "2 x NVIDIA L4" or "1 x 40.0 GiB"
    count: int
    memory_bytes: int
    compute_capability: tuple[int, int] | None  # None for --vram: unknown
    model: GpuModel | None = None


GpuRequest = Literal["all"] | int | tuple[int, ...]  # a deployment's ``gpus:``: every GPU, how many, or which


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def asks_for_gpus(request: GpuRequest) -> bool:
    """Whether a ``gpus:`` value gives the container any GPU: ``0`` and an empty list do not."""
    if request == "all":
        return True
    return (request if isinstance(request, int) else len(request)) > 0


def parse_gpu_request(value: object) -> GpuRequest:
    """A ``gpus:`` value: ``all``, a number of GPUs (a string of digits too, as ``${GPUS}`` gives) or
    a list of device ids; ValueError (the message a manifest shows) for anything else."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value)
    if value == "all":
        return "all"
    if isinstance(value, int) and _is_count(value):
        return value
    if isinstance(value, (list, tuple)) and all(map(_is_count, value)):
        return tuple(value)
    raise ValueError(f"expected 'all', a number of GPUs or a list of device ids, not {value!r}")


_COUNT = re.compile(r"^(?P<what>.+?)\s*[x×*]\s*(?P<count>\d+)$", re.IGNORECASE)
_SIZE = re.compile(r"^(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[GMT]i?B?)?$", re.IGNORECASE)
_UNITS = {
    "G": GIB,
    "GI": GIB,
    "GIB": GIB,
    "GB": 10**9,
    "M": MIB,
    "MI": MIB,
    "MIB": MIB,
    "MB": 10**6,
    "T": 2**40,
    "TI": 2**40,
    "TIB": 2**40,
    "TB": 10**12,
}
_MAX_GPUS = 64


def _split_count(text: str, option: str) -> tuple[str, int]:
    match = _COUNT.fullmatch(text.strip())
    if match is None:
        return text.strip(), 1
    count = int(match["count"])
    if not 1 <= count <= _MAX_GPUS:
        raise ManifestError(
            f"{option} {text}: the count must be 1 to {_MAX_GPUS}", hint=f"e.g. {option} {match['what']}x2"
        )
    return match["what"], count


def gpu_target(text: str) -> Target:
    """``--gpu NAME[xN]``; an unknown name is a :class:`ManifestError` (exit 2) naming the known ones."""
    name, count = _split_count(text, "--gpu")
    model = find_gpu(name)
    if model is None:
        raise ManifestError(
            f"--gpu {text}: unknown GPU {name!r}",
            hint="known: "
            + ", ".join(g.name for g in GPUS)
            + "; or give the memory with --vram SIZE[xN] (e.g. --vram 40GiB)",
        )
    return Target(f"{count} x {model.title}", count, model.memory_bytes, model.compute_capability, model)


def vram_target(text: str) -> Target:
    """``--vram SIZE[xN]``: ``24GiB`` or ``24G`` (2^30), ``24GB`` (10^9), ``23034MiB``; bare = GiB."""
    size, count = _split_count(text, "--vram")
    match = _SIZE.fullmatch(size)
    if match is None or float(match["number"]) <= 0:
        raise ManifestError(
            f"--vram {text}: not a memory size",
            hint="e.g. --vram 24GiB, --vram 23034MiB (as nvidia-smi shows it), --vram 80GBx2",
        )
    unit = (match["unit"] or "GiB").upper()
    memory = int(float(match["number"]) * _UNITS[unit])
    return Target(f"{count} x {memory / GIB:.1f} GiB", count, memory, None)


def parse_target(*, gpu: str | None, vram: str | None) -> Target | None:
    """``--gpu`` or ``--vram`` (not both; neither: None, judge this machine)."""
    if gpu is not None and vram is not None:
        raise ManifestError("--gpu and --vram both name the target", hint="give one of them")
    if gpu is not None:
        return gpu_target(gpu)
    return vram_target(vram) if vram is not None else None


def planned_inventory(target: Target) -> Inventory:
    """The target's GPUs with this machine's RAM (the only probe a target run makes)."""
    from .hardware import probe_memory

    return target_inventory(target, probe_memory())


def target_inventory(target: Target, memory: MemoryProbe) -> Inventory:
    """An inventory of the target's GPUs (all free) and ``memory`` (RAM: this machine's)."""
    from .hardware import Finding, Gpu, GpuProbe, Inventory, Level

    name = target.model.title if target.model else f"{target.memory_bytes / GIB:.1f} GiB GPU"
    gpus = tuple(
        Gpu(i, name, f"target-{i}", target.memory_bytes, target.memory_bytes, 0, target.compute_capability)
        for i in range(target.count)
    )
    capability = ".".join(map(str, target.compute_capability)) if target.compute_capability else "unknown"
    finding = Finding(
        Level.OK,
        "gpu",
        f"target {target.label}: {target.memory_bytes / GIB:.1f} GiB each, "
        f"compute capability {capability} (planned, not probed)",
    )
    return Inventory(gpu=GpuProbe(gpus, findings=(finding,)), memory=memory, disk=None, docker=None, ollama=None)


def model_inventory(model: GpuModel, count: int, memory: MemoryProbe) -> Inventory:
    return target_inventory(
        Target(f"{count} x {model.title}", count, model.memory_bytes, model.compute_capability, model), memory
    )


def by_memory() -> list[GpuModel]:
    """The table, smallest memory first (then the newest architecture)."""
    return sorted(GPUS, key=lambda g: (g.memory_bytes, tuple(-c for c in g.compute_capability)))
