"""onnxruntime sessions built on purpose: chosen execution providers, threads and graph optimisation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tagger_eval.config import ExecutionProvider, TaggerOptions
from tagger_eval.taggers.base import TaggerError

if TYPE_CHECKING:
    import onnxruntime

# What each --execution-provider asks for, best first; CPU is always the last resort.
PROVIDER_CHOICES = {
    ExecutionProvider.CPU: ("CPUExecutionProvider",),
    ExecutionProvider.CUDA: ("CUDAExecutionProvider", "CPUExecutionProvider"),
    ExecutionProvider.TENSORRT: ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    # TensorRT builds an engine per input shape on first use, so `auto` stops at CUDA.
    ExecutionProvider.AUTO: ("CUDAExecutionProvider", "CPUExecutionProvider"),
}


# Images per model call by default on a GPU provider; on the CPU one image at a time was the fastest setting measured
# (batch 8 cost ConvNeXt-Base about 12 % more per image on 2 cores: README "Performance").
GPU_BATCH_SIZE = 16
GPU_PROVIDERS = frozenset({"CUDAExecutionProvider", "TensorrtExecutionProvider"})


def preferred_batch_size(providers: list[str]) -> int:
    """The default batch size of a session running on `providers` (its `get_providers()`, best first)."""
    return GPU_BATCH_SIZE if providers and providers[0] in GPU_PROVIDERS else 1


class ModelLoadError(TaggerError):
    """A model file that cannot be used; the message names the file and why."""


def missing_package_reason() -> str | None:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return 'onnxruntime is not installed: pip install "tagger-eval[onnx]"'
    return None


def select_providers(choice: ExecutionProvider | str, available: list[str]) -> list[str]:
    """The providers to request for `choice`; an explicit GPU choice that cannot be honoured is an error."""
    try:
        wanted = PROVIDER_CHOICES[ExecutionProvider(choice)]
    except ValueError:
        known = ", ".join(PROVIDER_CHOICES)
        raise ValueError(f"unknown execution provider {choice!r}; expected one of {known}") from None
    if choice != ExecutionProvider.AUTO and wanted[0] not in available:
        raise ModelLoadError(
            f"execution provider {wanted[0]} is not available here (onnxruntime offers {', '.join(available)}); "
            'for CUDA or TensorRT install onnxruntime-gpu: pip install "tagger-eval[gpu]"'
        )
    return [provider for provider in wanted if provider in available]


def create_session(model_path: Path, options: TaggerOptions) -> onnxruntime.InferenceSession:
    import onnxruntime

    session_options = onnxruntime.SessionOptions()
    session_options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    session_options.intra_op_num_threads = options.threads or os.cpu_count() or 1
    session_options.inter_op_num_threads = 1
    session_options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
    providers = select_providers(options.execution_provider, onnxruntime.get_available_providers())
    if not model_path.is_file():
        raise ModelLoadError(f"model file not found: {model_path}")
    try:
        return onnxruntime.InferenceSession(str(model_path), sess_options=session_options, providers=providers)
    except Exception as error:  # onnxruntime raises its own pybind types for truncated or invalid files
        raise ModelLoadError(f"{model_path} is not a loadable ONNX model: {error}") from error
