"""exaone_cpu: LG AI's EXAONE 4.0 language models on ordinary CPUs, no PyTorch.

    import exaone_cpu
    model = exaone_cpu.load("path/to/EXAONE-4.0-1.2B")
    new_ids = model.generate(prompt_ids, max_new_tokens=32)

or, as in transformers: `from exaone_cpu import AutoModelForCausalLM, AutoTokenizer`.
"""

from . import _core  # the compiled kernels; an ImportError here means the build is broken
from .checkpoint import CheckpointError
from .config import ConfigError, Exaone4Config
from .kv_cache import KVCache
from .loading import load
from .model import Model
from .auto import AutoModelForCausalLM, AutoTokenizer
from .generation import ChatSession, GenerationParams, GenerationResult, Generator, PromptCache
from .sampling import SamplingParams

__version__ = "0.1.0"


def isa() -> str:
    """Name of the kernel variant in use ('avx2', 'scalar', ...)."""
    return _core.isa()


__all__ = ["CheckpointError", "ConfigError", "Exaone4Config", "KVCache", "Model", "isa", "load", "__version__",
           "AutoModelForCausalLM", "AutoTokenizer", "ChatSession", "GenerationParams", "GenerationResult",
           "Generator", "PromptCache", "SamplingParams"]
