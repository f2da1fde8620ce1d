"""How busy the training device is: GPU utilisation and memory through NVML (``nvidia-ml-py``) when
training on CUDA, the CPUs' otherwise (psutil when installed, else ``/proc``).

`DeviceMonitor(device).sample()` returns a `DeviceSample` (or None when nothing can be read); the
training loop logs it to TensorBoard (``system/*``), the live feed (``kartsim dashboard``) and a
job's progress file (``status``). Sampling costs microseconds (one NVML call, or two small reads).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class DeviceSample:
    kind: str
    """``gpu`` or ``cpu``."""
    name: str
    """The GPU's name, or ``N cores``."""
    util_pct: float
    """Utilisation in percent: the GPU's busy time (NVML), or the CPUs' busy share since the last sample."""
    mem_used_mb: float
    mem_total_mb: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def text(self) -> str:
        """``GPU 87% (NVIDIA H200), memory 20.1 / 139.8 GB``."""
        return (f"{self.kind.upper()} {self.util_pct:.0f}% ({self.name}), memory "
                f"{self.mem_used_mb / 1024:.1f} / {self.mem_total_mb / 1024:.1f} GB")


def sample_text(d: dict[str, Any] | None) -> str | None:
    """`DeviceSample.text` of a sample stored as a dict (progress files, live feeds); None if absent."""
    try:
        return DeviceSample(**d).text() if d else None
    except TypeError:
        return None


class DeviceMonitor:
    """Samples the utilisation of `device` (``cuda``, ``cuda:1``, ``cpu``)."""

    def __init__(self, device: str) -> None:
        self.device = str(device)
        self.problem: str | None = None
        self._nvml: Any = None
        self._handle: Any = None
        self._cpu_last: tuple[int, int] | None = None
        if self.device.startswith("cuda"):
            self._open_nvml()
        else:
            self._cpu_last = _cpu_times()  # the first CPU sample measures from here

    def _open_nvml(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = self._gpu_handle(pynvml)
            self._gpu_name = pynvml.nvmlDeviceGetName(self._handle)
            if isinstance(self._gpu_name, bytes):
                self._gpu_name = self._gpu_name.decode()
        except Exception as exc:  # no driver, no NVML library, a GPU NVML cannot see
            self._nvml = None
            self.problem = f"GPU utilisation unavailable (NVML: {exc})"

    def _gpu_handle(self, pynvml: Any) -> Any:
        """The NVML handle of the GPU torch trains on (by UUID: CUDA_VISIBLE_DEVICES renumbers them)."""
        index = int(self.device.split(":")[1]) if ":" in self.device else 0
        try:
            import torch

            uuid = str(torch.cuda.get_device_properties(index).uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else f"GPU-{uuid}")
        except Exception:
            return pynvml.nvmlDeviceGetHandleByIndex(index)

    def sample(self) -> DeviceSample | None:
        try:
            return self._gpu() if self.device.startswith("cuda") else self._cpu()
        except Exception as exc:  # a sample must never break training
            self.problem = f"utilisation unavailable ({exc})"
            return None

    def _gpu(self) -> DeviceSample | None:
        if self._nvml is None:
            return None
        nv, h = self._nvml, self._handle
        util = nv.nvmlDeviceGetUtilizationRates(h)
        mem = nv.nvmlDeviceGetMemoryInfo(h)
        return DeviceSample("gpu", self._gpu_name, float(util.gpu), mem.used / 2 ** 20, mem.total / 2 ** 20)

    def _cpu(self) -> DeviceSample:
        busy, total = _cpu_times()
        last, self._cpu_last = self._cpu_last, (busy, total)
        if last is not None and total > last[1]:
            # clamped: the busy and total counters are read apart, so on a fully busy machine
            # their differences can come out a tick apart
            util = min(100.0, max(0.0, 100.0 * (busy - last[0]) / (total - last[1])))
        else:
            util = 0.0
        used, mem_total = _memory_mb()
        return DeviceSample("cpu", f"{os.cpu_count() or 1} cores", util, used, mem_total)

def _cpu_times() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, in 1/100 s."""
    try:
        import psutil

        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        return int((sum(t) - idle) * 100), int(sum(t) * 100)
    except ImportError:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:8]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)


def _memory_mb() -> tuple[float, float]:
    """(used, total) system memory in MB."""
    try:
        import psutil

        vm = psutil.virtual_memory()
        return (vm.total - vm.available) / 2 ** 20, vm.total / 2 ** 20
    except ImportError:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, value = line.split(":", 1)
                info[key] = int(value.split()[0]) / 1024  # kB -> MB
        return info["MemTotal"] - info.get("MemAvailable", info.get("MemFree", 0)), info["MemTotal"]


__all__ = ["DeviceMonitor", "DeviceSample", "sample_text"]
