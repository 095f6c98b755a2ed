"""What machine a measurement was taken on: CPUs available, instruction sets, kernels.

Hand-written plumbing (not extracted from a chapter). Every page that reports hardware
behaviour prints ``describe_cpu()`` first, because bitwise equality, fusion, vector lanes and
oneDNN's choice of kernel all change from one CPU to the next. Needs only the standard
library; it asks TVM and PyTorch about themselves only if they are installed (and, for
PyTorch, already imported or importable).
"""
import os
import platform
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["CpuDescription", "available_cpus", "cpu_caches", "describe_cpu", "isa_name"]


def available_cpus() -> int:
    """Number of CPUs this process may run on.

    ``os.sched_getaffinity`` honours CPU pinning (containers, ``taskset``) but exists only
    on some platforms (Linux); elsewhere ``os.cpu_count()`` is the best answer, and 1 if
    even that is unknown.
    """
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def cpu_caches(cpu: int = 0) -> dict[str, int]:
    """The data caches that CPU ``cpu`` sees, as ``{"L1d": bytes, "L2": bytes, ...}``, read
    from Linux's ``/sys/devices/system/cpu``; empty where that is not available. A cache
    shared by several cores counts whole (L3 usually is)."""
    if isinstance(cpu, bool) or not isinstance(cpu, int) or cpu < 0:
        raise ValueError(f"cpu must be a CPU number (an int >= 0), got {cpu!r}")
    caches = {}
    folder = f"/sys/devices/system/cpu/cpu{cpu}/cache"
    try:
        entries = sorted(os.listdir(folder))
    except OSError:
        return {}
    units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            with open(f"{folder}/{entry}/level") as f:
                level = f.read().strip()
            with open(f"{folder}/{entry}/type") as f:
                kind = f.read().strip()
            with open(f"{folder}/{entry}/size") as f:
                size = f.read().strip()
        except OSError:
            continue
        if kind == "Instruction" or not size:
            continue
        number = int(size.rstrip("KMG")) * units.get(size[-1], 1)
        caches[f"L{level}{'d' if kind == 'Data' else ''}"] = number
    return caches


def isa_name(features: Iterable[str]) -> str:
    """The widest x86 vector instruction set in a collection of LLVM feature names."""
    features = set(features)
    for feature, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX"),
                          ("sse2", "SSE2")):
        if feature in features:
            return name
    return "no x86 vector extension"


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


@dataclass(frozen=True)
class CpuDescription:
    """The facts a hardware-dependent result depends on (``None``: framework absent)."""

    model: str
    llvm_cpu: str | None = None  # what LLVM calls this CPU
    tvm_mcpu: str | None = None  # the mcpu d2ldw.tvm.host_target() compiles for
    tvm_isa: str | None = None  # widest vector ISA of that target
    tvm_fma: bool | None = None  # may LLVM emit fused multiply-adds for it?
    torch_capability: str | None = None  # ATen's kernel level (ATEN_CPU_CAPABILITY caps it)
    onednn_isa_limit: str | None = None  # ONEDNN_MAX_CPU_ISA, if set
    cpus: int = 1

    def __str__(self) -> str:
        lines = [f"CPU: {self.model} ({self.cpus} available to this process)"]
        if self.llvm_cpu is not None:
            lines.append(f"TVM: LLVM calls it {self.llvm_cpu}; building for mcpu="
                         f"{self.tvm_mcpu}: {self.tvm_isa}, FMA {'yes' if self.tvm_fma else 'no'}")
        if self.torch_capability is not None:
            limit = self.onednn_isa_limit or "none"
            lines.append(f"PyTorch: ATen kernels {self.torch_capability}, "
                         f"oneDNN ISA limit {limit}")
        return "\n".join(lines)


def describe_cpu() -> CpuDescription:
    """Describe this CPU as TVM and PyTorch see it; print it beside any timing or bitwise
    verdict. Environment variables that emulate a smaller CPU (``D2LDW_LLVM_MCPU``,
    ``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``) are reflected in the description."""
    facts = dict(model=_cpu_model(), cpus=available_cpus(),
                 onednn_isa_limit=os.environ.get("ONEDNN_MAX_CPU_ISA"))
    try:
        import tvm
    except ImportError:
        pass
    else:
        from d2ldw import tvm as d2l_tvm
        target = d2l_tvm.host_target()
        features = d2l_tvm.target_features(target)
        facts.update(llvm_cpu=tvm.target.codegen.llvm_get_system_cpu(),
                     tvm_mcpu=str(target.attrs["mcpu"]), tvm_isa=isa_name(features),
                     tvm_fma="fma" in features)
    try:
        import torch
    except ImportError:
        pass
    else:
        facts.update(torch_capability=torch.backends.cpu.get_cpu_capability())
    return CpuDescription(**facts)
