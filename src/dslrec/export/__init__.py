"""Making the savings real: cost accounting, the compact model file, serving from it.

``cost_section`` (static parameter/byte/MAC counts for ``summary.json``),
``export`` / ``load`` / ``to_module`` (the compact safetensors format) and
``Recommender`` (top-k lists straight from the compact weights).
"""

from dslrec.export.compact import CompactModel, export, load, to_module, write_compact
from dslrec.export.cost import cost_of_run, cost_section
from dslrec.export.recommender import Recommendations, Recommender

__all__ = ["CompactModel", "Recommendations", "Recommender", "cost_of_run", "cost_section", "export", "load",
           "to_module", "write_compact"]
