"""dslrec: train recommenders sparse from scratch with Dynamic Sparse Learning.

    import dslrec
    summary = dslrec.train(model="mf", dataset="ml-100k", method="dsl", density=0.2)
"""

__version__ = "0.1.0"

__all__ = ["train", "Recommender", "data", "__version__"]


def __getattr__(name: str):
    # Lazy, so that `import dslrec` and the command line start fast.
    if name == "train":
        from dslrec.training.run import train

        return train
    if name == "data":  # dslrec.data.load(...) after a plain `import dslrec`
        import importlib

        return importlib.import_module("dslrec.data")
    if name == "Recommender":
        from dslrec.export.recommender import Recommender

        return Recommender
    raise AttributeError(f"module 'dslrec' has no attribute {name!r}")
