"""Built-in demo tasks (small deterministic networks used by demos and benchmarks).

Importing this package does not require PyTorch; the functions that need it
import it lazily.
"""

from . import digits
from .digits import build_model, evaluate, get_state_dict, load_data, train

__all__ = ["digits", "load_data", "build_model", "train", "get_state_dict", "evaluate"]
