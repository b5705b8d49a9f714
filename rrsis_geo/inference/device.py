"""Device and precision choice for inference."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import torch

from rrsis_geo.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` / ``cuda:N`` a (given) CUDA device.

    Asking for a CUDA device that is not there is a usage error.
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if match is None:
        raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name} was asked for but no CUDA device is available")
    if match.group(1) is not None:
        index, count = int(match.group(1)), torch.cuda.device_count()
        if index >= count:
            raise UsageError(f"--device {name}: this machine has {count} CUDA device(s) "
                             f"(cuda:0 to cuda:{count - 1})")
        return torch.device("cuda", index)
    return torch.device("cuda")


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads (intra-op) when ``threads`` is given; return the count in use."""
    if threads is not None:
        if int(threads) < 1:
            raise UsageError(f"--threads must be at least 1 (got {threads})")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Stop glibc from handing freed memory back to the OS after every tile (process-wide).

    By default glibc adapts its thresholds and trims the heap whenever enough memory is freed at
    its top. In the pipeline, each forward's activations are freed between batches together with
    the tile and probability arrays, the heap is trimmed, and the next forward page-faults all of
    its activations back in: ~0.9 million minor faults in one 4096² run against ~20 thousand with
    fixed thresholds (bench/pipeline.py). Fixed thresholds keep up to ``trim_threshold`` bytes of
    freed memory for reuse (peak RSS is unchanged: it is the peak) and serve blocks below
    ``mmap_threshold`` from the heap. Returns False where this is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h> constants
    return bool(mallopt(m_mmap_threshold, int(mmap_threshold))) and \
        bool(mallopt(m_trim_threshold, int(trim_threshold)))


#: the ``--precision`` values
PRECISIONS = ("auto", "fp32", "bf16", "fp16", "int8")


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for plain fp32 (and for ``int8``, which is not an autocast: see
    :func:`apply_precision`). ``auto`` = bf16 on bf16-capable GPUs, fp32 on CPU here; on a CPU
    the model decides (:func:`auto_cpu_bf16`).
    """
    name = (name or "auto").strip().lower()
    if name in ("fp32", "int8"):
        if name == "int8" and device.type != "cpu":
            raise UsageError("--precision int8 (dynamic quantization) runs on the CPU only; "
                             "use bf16 or fp16 on a GPU")
        return None
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        if device.type != "cuda":
            raise UsageError("--precision fp16 needs a CUDA device; use bf16 or fp32 on CPU")
        return torch.float16
    if name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise UsageError(f"unknown precision {name!r}; use auto, fp32, bf16, fp16 or int8")


#: ``--precision auto`` on a CPU: models with at least this many parameters run bf16 autocast
#: where the CPU computes bf16 natively (:func:`cpu_has_native_bf16`), after the first batch
#: has shown that bf16 agrees with fp32 (:data:`AUTO_BF16_MIN_AGREEMENT`).
AUTO_BF16_MIN_PARAMS = 50_000_000
#: pixel argmax agreement with fp32 that bf16 must reach on the first batch to be kept
AUTO_BF16_MIN_AGREEMENT = 0.99


def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True where the CPU has bf16 instructions (x86 ``avx512_bf16`` or ``amx_bf16``, read from
    ``cpuinfo``); False elsewhere, or where that cannot be told (then bf16 would be emulated,
    and slower than fp32)."""
    try:
        with open(cpuinfo, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool({"avx512_bf16", "amx_bf16"} & flags)
    except OSError:
        pass
    return False


def auto_cpu_bf16(model: torch.nn.Module) -> bool:
    """The rule for ``--precision auto`` on a CPU: bf16 autocast for a large model on a CPU with
    native bf16, fp32 otherwise.

    Measured on this project's 2-core AVX512-BF16 CPU (README, Benchmarks): the official layout
    (256 M parameters, 480² tiles) runs a tile in ~0.62× of its fp32 time with bf16 autocast;
    the demo model (5.6 M parameters, 192²) is not faster with bf16 (time ratio 0.85-1.16), nor
    with int8. The caller keeps bf16 only if the first batch's argmax agrees with fp32
    (:data:`AUTO_BF16_MIN_AGREEMENT`): see ``Segmenter``."""
    params = sum(p.numel() for p in model.parameters())
    return params >= AUTO_BF16_MIN_PARAMS and cpu_has_native_bf16()


def apply_precision(model: torch.nn.Module, name: str,
                    device: torch.device) -> tuple[torch.nn.Module, torch.dtype | None]:
    """(the model to run, autocast dtype or None) for ``--precision name`` on ``device``:
    ``int8`` runs a copy whose Linear layers are dynamically quantized
    (:func:`rrsis_geo.model.ops.quantize_linears`; CPU only), the others autocast (or not)."""
    dtype = resolve_precision(name, device)
    if (name or "").strip().lower() == "int8":
        from rrsis_geo.model.ops import quantize_linears

        return quantize_linears(model), None
    return model, dtype


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    """Autocast scoped to the forward pass only (never around pre/post-processing)."""
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def is_oom(exc: BaseException) -> bool:
    """True for CUDA (or CPU allocator) out-of-memory errors."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


# -- GPU throughput: pinned copies and the batch size from free memory -------------------------
#: ``--batch-size auto`` on CPU: tiles per forward (larger batches were not faster on CPU)
CPU_BATCH_SIZE = 4
#: ``--batch-size auto`` on a GPU: at most this many tiles per forward (a GPU is saturated well
#: before; larger batches only add latency and the memory a concurrent job may need)
GPU_BATCH_CAP = 32
#: ``--batch-size auto`` on a GPU: the share of the free memory a batch may plan to use (the
#: rest is the allocator's fragmentation, cuDNN workspaces and other processes)
GPU_MEMORY_SHARE = 0.6


def batch_size_from_memory(free_bytes: int, per_tile_bytes: int, cap: int = GPU_BATCH_CAP,
                           share: float = GPU_MEMORY_SHARE) -> int:
    """Tiles per forward that fit ``share`` of ``free_bytes`` of GPU memory when one tile needs
    ``per_tile_bytes`` (activations of a batch-1 forward), within [1, ``cap``]. A batch that
    still runs out of memory is halved by the pipeline (OOM back-off), then the run falls back
    to CPU."""
    if per_tile_bytes <= 0:
        return max(1, int(cap))
    fits = int(max(0, free_bytes) * share // per_tile_bytes)
    return max(1, min(int(cap), fits))


def pinned_transfer_available() -> bool:
    """Pinned (page-locked) host memory exists only with CUDA."""
    return torch.cuda.is_available()


def host_to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` (a CPU tensor) on ``device``: to a CUDA device through pinned memory with a
    non-blocking copy (the copy overlaps the host's next work; the caching host allocator keeps
    the pinned buffer until the copy is done); on CPU ``x`` itself, nothing pinned."""
    if device.type != "cuda" or not pinned_transfer_available():
        return x
    return x.pin_memory().to(device, non_blocking=True)
