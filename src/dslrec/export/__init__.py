"""Making the savings real: cost accounting, the compact model file, serving from it.

``cost_section`` (static parameter/byte/MAC counts for ``summary.json``),
``export`` / ``load`` / ``to_module`` (the compact safetensors format) and
``Recommender`` (top-k lists straight from the compact weights).
"""

import importlib

# Imported on first use, so that the command line (dslrec.export.commands) starts without torch.
_WHERE = {"CompactModel": "compact", "export": "compact", "load": "compact", "to_module": "compact",
          "write_compact": "compact", "cost_of_run": "cost", "cost_section": "cost",
          "Recommendations": "recommender", "Recommender": "recommender"}

__all__ = ["CompactModel", "Recommendations", "Recommender", "cost_of_run", "cost_section", "export", "load",
           "to_module", "write_compact"]


def __getattr__(name: str):
    if name in _WHERE:
        value = getattr(importlib.import_module(f"dslrec.export.{_WHERE[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dslrec.export' has no attribute {name!r}")
