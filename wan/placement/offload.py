"""Where the networks live on one device: the official residency rules (``--offload_model``, ``init_on_cpu``)."""
from __future__ import annotations

import logging
from typing import Dict, List, Set, Tuple

log = logging.getLogger(__name__)


def _device_bytes() -> int:
    """Bytes the runtime counts as held by tensors on the device (``mindspore.runtime.memory_allocated``)."""
    import mindspore as ms

    return int(ms.runtime.memory_allocated())


class Offloader:
    """Moves networks between device and host memory before each use, following the official pipelines.

    - ``swap_experts`` (the official ``init_on_cpu``, on whenever one device runs without ZeRO3 or Ulysses):
      the DiT experts wait in host memory and only the expert in use is resident; at the expert switch the
      idle one goes back to the host first. This holds even with ``--offload_model false``.
    - ``enabled`` (``--offload_model``): additionally T5 leaves the device after encoding, and the experts
      leave it before the VAE decodes. The VAE itself always stays resident (as official).

    Nothing is deleted: parameters are moved with ``Tensor.move_to`` and moved back before use. On a CPU
    device target host and device memory are the same, so moves are no-ops apart from bookkeeping.
    """

    def __init__(self, enabled: bool, swap_experts: bool = False):
        import mindspore as ms

        self.enabled = bool(enabled)
        self.swap_experts = bool(swap_experts) or self.enabled
        self.device = "Ascend" if ms.get_context("device_target") == "Ascend" else "CPU"
        self.on_device: Dict[int, bool] = {}
        self.experts: Set[int] = set()
        self.swaps: List[Tuple[str, int, int]] = []  # Ascend: (network, parameter bytes, device bytes freed)

    def _move(self, cell, to_device: bool) -> None:
        target = self.device if to_device else "CPU"
        counted = self.device == "Ascend" and not to_device
        before = _device_bytes() if counted else 0
        for p in cell.get_parameters():
            p.set_data(p.move_to(target))
        if counted:  # the runtime's counter must drop by about the parameters' size, or nothing was freed
            freed, held = before - _device_bytes(), sum(int(p.size) * int(p.itemsize) for p in cell.get_parameters())
            self.swaps.append((type(cell).__name__, held, freed))
            log.info("offload: %s to host, %.1f MB of parameters, device memory freed %.1f MB", type(cell).__name__,
                     held / 2 ** 20, freed / 2 ** 20)
            if held and freed < held // 2:
                log.warning("offload: moving %s to the host freed only %.1f of %.1f MB of device memory",
                            type(cell).__name__, freed / 2 ** 20, held / 2 ** 20)

    def _to(self, cell, resident: bool) -> None:
        if self.on_device.get(id(cell), True) != resident:
            self._move(cell, resident)
        self.on_device[id(cell)] = resident

    def add_expert(self, cell) -> None:
        """Register a freshly loaded DiT; with ``swap_experts`` it waits in host memory until first used."""
        self.experts.add(id(cell))
        if self.swap_experts:
            self._to(cell, False)

    def is_resident(self, cell) -> bool:
        return self.on_device.get(id(cell), True)

    def use(self, cell, *others) -> None:
        """Make ``cell`` resident and send ``others`` to host memory, as far as the policy moves them.

        With ``enabled``: everything named. With ``swap_experts`` alone: only at an expert's turn (``cell`` a
        registered DiT), and only the other experts leave (the official ``_prepare_model_for_timestep``); T5
        and the VAE stay where they are.
        """
        if not self.swap_experts:
            return
        if not self.enabled and id(cell) not in self.experts:
            return
        movable = lambda c: c is not None and (self.enabled or id(c) in self.experts)  # noqa: E731
        for other in others:
            if other is not cell and movable(other):
                self._to(other, False)  # free first, so that two experts never share the device
        if cell is not None:
            self._to(cell, True)
