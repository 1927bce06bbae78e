"""RecBole 1.2.1's full-sort test evaluation time on a given split (runs in the RecBole venv).

Not part of dslrec and never imports it: it runs under ``.venv-recbole/bin/python``
(``make recbole-env``), and ``benchmarks/bench_eval.py --recbole`` starts it so that
both libraries are timed in one run, at one thread count, on one split.

    .venv-recbole/bin/python benchmarks/recbole_eval.py --split SPLIT.npz [--threads 1] [--repeat 3]

``SPLIT.npz`` holds ``train_users, train_items, valid_users, valid_items, test_users,
test_items`` (int64 indices; ``bench_eval.py`` writes it from ``dslrec.data.load``, so the
split is dslrec's). It is written as RecBole atomic files (``gowalla.train.inter``,
``.valid.inter``, ``.test.inter``) in a temporary folder and read with
``benchmark_filename``, so RecBole ranks the same test users against the same items,
excluding each user's train and valid items, as dslrec does.

BPR (MF, ``embedding_size`` 64) and LightGCN (64, ``n_layers`` 3) are built untrained: the
time of a full-sort evaluation does not depend on the weights. Timed: the
``Trainer.evaluate(test_data, load_best_model=False)`` call only (Recall and NDCG at
top-20, full ranking), best of ``--repeat``. LightGCN's cached propagation is cleared
before each call, so, as in dslrec's evaluation, every evaluation propagates once.

``--eval-batch-size``: RecBole's ``eval_batch_size`` (default 4096, RecBole's own
default). In full-sort mode RecBole scores ``max(1, eval_batch_size // n_items)`` users per
batch, so its default ranks one user at a time on Gowalla.

Prints one JSON object. With ``--serve`` it prints a JSON line once set up, then for each
line read from stdin times one evaluation of every backbone and prints one JSON line
(so a caller can alternate RecBole's timings with its own without reloading the data).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

# --- compatibility shims (in this script, never patches to site-packages) ----------------------
# numpy 2 removed np.float_, np.complex_ and np.unicode_, which RecBole 1.2.1's
# Config.compatibility_settings() reads to re-create np.float, np.int, np.bool, ... (still used
# by its metrics and data code); give it the aliases it expects.
for _alias, _type in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if not hasattr(np, _alias):
        setattr(np, _alias, _type)

# recbole.utils.utils imports torch.utils.tensorboard.SummaryWriter at import time, which needs
# the tensorboard package (and its dependency tree); the Trainer only writes training curves
# with it. A do-nothing writer stands in so the RecBole venv need not install tensorboard.
try:
    import torch.utils.tensorboard  # noqa: F401
except ImportError:
    class _NullWriter:
        def __init__(self, *args, **kwargs):
            pass

        def __getattr__(self, name):
            return lambda *args, **kwargs: None

    _tb = types.ModuleType("torch.utils.tensorboard")
    _tb.SummaryWriter = _NullWriter
    sys.modules["torch.utils.tensorboard"] = _tb

# RecBole's LightGCN builds its adjacency with dok_matrix._update(dict), a private method newer
# scipy dropped (the entries now live in dok_matrix._dict); the same bulk insert.
import scipy.sparse as _sp  # noqa: E402

if not hasattr(_sp.dok_matrix, "_update"):
    _sp.dok_matrix._update = lambda self, data: self._dict.update(data)
# ------------------------------------------------------------------------------------------------

BACKBONES = {"mf": "BPR", "lightgcn": "LightGCN"}
SPLITS = ("train", "valid", "test")


def write_atomic(split: Path, folder: Path, name: str) -> dict[str, int]:
    """``name.{train,valid,test}.inter`` under ``folder/name`` from the npz; interactions per split."""
    data = np.load(split)
    out = folder / name
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for s in SPLITS:
        u, i = data[f"{s}_users"], data[f"{s}_items"]
        sizes[s] = len(u)
        with open(out / f"{name}.{s}.inter", "w") as f:
            f.write("user_id:token\titem_id:token\n")
            np.savetxt(f, np.stack([u, i], axis=1), fmt="%d", delimiter="\t")
    return sizes


def config_dict(folder: Path, name: str, args) -> dict:
    return {
        "data_path": str(folder),
        "dataset": name,
        "benchmark_filename": list(SPLITS),
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"]},
        "eval_args": {"group_by": "user", "order": "RO", "mode": "full"},
        "metrics": ["Recall", "NDCG"],
        "topk": [20],
        "valid_metric": "NDCG@20",
        "embedding_size": args.dim,
        "n_layers": 3,
        "reg_weight": 1e-4,
        "eval_batch_size": args.eval_batch_size,
        "train_batch_size": 2048,
        "epochs": 1,
        "use_gpu": False,
        "device": "cpu",
        "gpu_id": "",
        "worker": 0,
        "seed": 2020,
        "reproducibility": True,
        "show_progress": False,
        "save_dataset": False,
        "save_dataloaders": False,
        "log_wandb": False,
        "checkpoint_dir": str(folder / "saved"),
        "state": "WARNING",
    }


def setup(args, folder: Path) -> tuple[dict, dict]:
    """({backbone: (trainer, test_data)}, info) with the data loaded once."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    name = "gowalla"
    t0 = time.perf_counter()
    sizes = write_atomic(args.split, folder, name)
    logging.getLogger().setLevel(logging.WARNING)
    built, info = {}, {"interactions": sizes}
    dataset = train_data = test_data = None
    for backbone in args.backbones:
        model_name = BACKBONES[backbone]
        config = Config(model=model_name, config_dict=config_dict(folder, name, args))
        init_seed(config["seed"], config["reproducibility"])
        torch.set_num_threads(args.threads)  # init_seed / Config may reset it; set it last
        if dataset is None:  # the data are the same for both models: load and split once
            dataset = create_dataset(config)
            train_data, _, test_data = data_preparation(config, dataset)
            info.update(users=dataset.user_num - 1, items=dataset.item_num - 1,  # less RecBole's padding id
                        test_users=len(test_data.uid_list),
                        users_per_batch=test_data.step)
        # built on the training split, as RecBole's run_recbole does (LightGCN's graph is train's)
        model = get_model(model_name)(config, train_data._dataset).to("cpu")
        built[backbone] = (Trainer(config, model), test_data)
    torch.set_num_threads(args.threads)
    info["setup_seconds"] = time.perf_counter() - t0
    return built, info


def time_once(trainer, test_data) -> tuple[float, dict]:
    """Seconds of one full-sort test evaluation, and its metrics."""
    model = trainer.model
    for cache in ("restore_user_e", "restore_item_e"):  # LightGCN: propagate in every evaluation
        if hasattr(model, cache):
            setattr(model, cache, None)
    t = time.perf_counter()
    result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
    return time.perf_counter() - t, {k: float(v) for k, v in result.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", type=Path, help="npz of the split (see the module docstring)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="timed evaluations per backbone (best kept)")
    ap.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--eval-batch-size", type=int, default=4096,
                    help="RecBole's eval_batch_size (interactions; users per batch = this // n_items)")
    ap.add_argument("--serve", action="store_true",
                    help="after setup, time one evaluation per backbone for each line on stdin")
    ap.add_argument("--check", action="store_true", help="import what the timing uses, then exit")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import recbole

    if args.check:
        for module in ("recbole.config", "recbole.data", "recbole.model.general_recommender", "recbole.trainer"):
            importlib.import_module(module)
        print(f"recbole {recbole.__version__} imports (torch {torch.__version__}, numpy {np.__version__})")
        return
    if args.split is None:
        ap.error("--split is required")

    with tempfile.TemporaryDirectory(prefix="recbole-eval-") as tmp:
        built, info = setup(args, Path(tmp))
        info.update(recbole=recbole.__version__, torch=torch.__version__, numpy=np.__version__,
                    threads=torch.get_num_threads(), eval_batch_size=args.eval_batch_size)
        if args.serve:
            print(json.dumps({"ready": True, **info}), flush=True)
            for _ in sys.stdin:
                row = {b: time_once(*built[b]) for b in args.backbones}
                print(json.dumps({b: {"seconds": s, "metrics": m} for b, (s, m) in row.items()}), flush=True)
            return
        seconds: dict[str, list[float]] = {b: [] for b in args.backbones}
        metrics = {}
        for _ in range(args.repeat):
            for b in args.backbones:
                s, metrics[b] = time_once(*built[b])
                seconds[b].append(s)
        print(json.dumps({**info, "repeat": args.repeat,
                          "seconds": {b: min(v) for b, v in seconds.items()},
                          "all_seconds": seconds, "metrics_untrained": metrics}, indent=2))


if __name__ == "__main__":
    main()
