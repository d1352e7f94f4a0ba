"""Model offloading between device and host memory (``--offload_model``)."""
from __future__ import annotations

from typing import Dict


class Offloader:
    """``--offload_model``: keep only the network in use on the device; the others wait in host memory.

    Nothing is deleted: parameters are moved with ``Tensor.move_to`` and moved back before use. On a CPU
    device target host and device memory are the same, so moves are no-ops apart from bookkeeping.
    """

    def __init__(self, enabled: bool):
        import mindspore as ms

        self.enabled = enabled
        self.device = "Ascend" if ms.get_context("device_target") == "Ascend" else "CPU"
        self.on_device: Dict[int, bool] = {}

    def _move(self, cell, target: str) -> None:
        for p in cell.get_parameters():
            p.set_data(p.move_to(target))

    def use(self, cell, *others) -> None:
        """Make ``cell`` resident on the device and send ``others`` to host memory."""
        if not self.enabled:
            return
        for other in others:
            if other is not None and other is not cell and self.on_device.get(id(other), True):
                self._move(other, "CPU")
                self.on_device[id(other)] = False
        if not self.on_device.get(id(cell), True):
            self._move(cell, self.device)
        self.on_device[id(cell)] = True
