"""The GPU table, the --gpu / --vram targets, and a deployment's `gpus:` request."""

from __future__ import annotations

import pytest

from provision.errors import ManifestError
from provision.gpus import (
    GIB,
    GPUS,
    MIB,
    GpuModel,
    GpuRequest,
    asks_for_gpus,
    by_memory,
    find_gpu,
    gpu_target,
    parse_gpu_request,
    target_inventory,
    vram_target,
)
from provision.hardware import MemoryProbe
from tests.typed import known


def gpu(name: str) -> GpuModel:
    """A GPU the table must know."""
    return known(find_gpu(name))


@pytest.mark.parametrize("text", ["RTX4090", "rtx 4090", "RTX-4090", "NVIDIA GeForce RTX 4090", "geforce_rtx4090"])
def test_names_match_however_they_are_written(text: str) -> None:
    assert find_gpu(text) is find_gpu("RTX4090") is not None


def test_every_name_and_alias_is_unique() -> None:
    names = [alias.upper() for gpu in GPUS for alias in (gpu.name, *gpu.aliases)]
    assert len(names) == len(set(names))


def test_counts_and_aliases() -> None:
    target = gpu_target("A10Gx2")
    assert (target.count, known(target.model).name) == (2, "A10G")
    assert gpu_target("h100 x 8").count == 8
    assert known(gpu_target("A100").model).name == "A100-80GB"
    with pytest.raises(ManifestError, match="count"):
        gpu_target("L4x0")


def test_unknown_name_is_bad_input_naming_the_known_ones() -> None:
    with pytest.raises(ManifestError) as caught:
        gpu_target("Z9000x2")
    assert caught.value.exit_code == 2 and "Z9000" in caught.value.message
    assert all(gpu.name in caught.value.hint for gpu in GPUS)


def test_memory_is_what_cuda_reports_where_recorded_else_the_spec() -> None:
    assert gpu("L4").memory_bytes == 23034 * MIB  # nvidia-smi's total, not 24 GiB
    assert gpu("H200").memory_bytes == 141 * GIB  # HBM, no record: the spec
    # data-center GDDR without a record loses ECC's 1/16, as the recorded L4/A10/L40S/T4 do
    a10g = gpu("A10G")
    assert a10g.memory_bytes == 24 * GIB * 15 // 16
    assert abs(a10g.memory_bytes - gpu("A10").memory_bytes) < 16 * MIB
    for recorded in (g for g in GPUS if g.reported_mib and g.gddr_ecc):
        assert recorded.reported_mib == pytest.approx(recorded.memory_gb * 1024 * 15 / 16, abs=16)


def test_capabilities_follow_compute_capability() -> None:
    assert (gpu("T4").bf16, gpu("T4").fp8) == (False, False)  # 7.5
    assert (gpu("A100").bf16, gpu("A100").fp8) == (True, False)  # 8.0
    assert (gpu("L4").bf16, gpu("L4").fp8) == (True, True)  # 8.9
    assert gpu("V100").compute_capability == (7, 0)


@pytest.mark.parametrize(
    ("text", "count", "memory"),
    [
        ("40GiB", 1, 40 * GIB),
        ("40G", 1, 40 * GIB),
        ("40", 1, 40 * GIB),
        ("24GB", 1, 24 * 10**9),
        ("23034MiBx2", 2, 23034 * MIB),
        ("0.5TiB", 1, 512 * GIB),
        ("80gb x 4", 4, 80 * 10**9),
    ],
)
def test_vram_sizes(text: str, count: int, memory: int) -> None:
    target = vram_target(text)
    assert (target.count, target.memory_bytes, target.compute_capability) == (count, memory, None)


@pytest.mark.parametrize("text", ["lots", "-4GiB", "0", "24 parsecs", ""])
def test_vram_nonsense_is_bad_input(text: str) -> None:
    with pytest.raises(ManifestError):
        vram_target(text)


def test_target_inventory_has_free_gpus_and_this_machines_ram() -> None:
    ram = MemoryProbe(64 * GIB, 60 * GIB)
    inventory = target_inventory(gpu_target("L4x2"), ram)
    assert [g.index for g in inventory.gpus] == [0, 1]
    assert all(
        g.memory_free == g.memory_total == 23034 * MIB and g.compute_capability == (8, 9) for g in inventory.gpus
    )
    assert inventory.memory is ram and inventory.docker is None and inventory.disk is None
    assert "planned, not probed" in inventory.findings[0].message


def test_by_memory_is_ascending() -> None:
    sizes = [g.memory_bytes for g in by_memory()]
    assert sizes == sorted(sizes) and len(sizes) == len(GPUS)


@pytest.mark.parametrize(
    ("value", "request_"),
    [("all", "all"), (0, 0), (2, 2), ("2", 2), ([0, 3], (0, 3)), ((1,), (1,)), ([], ())],
)
def test_a_gpus_value_is_all_a_count_or_device_ids(value: object, request_: GpuRequest) -> None:
    assert parse_gpu_request(value) == request_


@pytest.mark.parametrize("value", [True, -1, "two", "²", "ALL", [0, -1], [True], 1.5, None, {"count": 1}])
def test_any_other_gpus_value_is_one_clear_error(value: object) -> None:
    with pytest.raises(ValueError, match="expected 'all', a number of GPUs or a list of device ids, not "):
        parse_gpu_request(value)


@pytest.mark.parametrize(
    ("request_", "asks"), [("all", True), (1, True), ((0,), True), ((2, 3), True), (0, False), ((), False)]
)
def test_zero_and_an_empty_device_list_ask_for_no_gpu(request_: GpuRequest, asks: bool) -> None:
    # The one rule behind the container's device requests, check-hardware's CPU path and the estimate.
    assert asks_for_gpus(request_) is asks
