"""Run settings: one flat, documented namespace resolved in a fixed order.

defaults below  <  the backbone's settings (its paper's, with its DEFAULT_CHANGES and
without delta_t)  <  a preset  <  a YAML/JSON config file  <  keyword arguments /
``--key value`` on the command line.

Keys that are not run settings must be constructor options of the chosen
backbone (``dim``, ``layers``, ``l2`` ...); anything else is an error that lists
the valid keys, so a typo never silently does nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dslrec.errors import DslrecError
from dslrec.sparse.config import COMPACT_METHODS, SPARSE_KEYS, SparseSettings

# The default exploration interval, in epochs (see README, Results: how it was picked).
DELTA_T_EPOCHS = 1.0

METHODS = ("dense", "dsl", "static", "gmp", "oneshot", "lth", "pep")
OPTIMIZERS = ("adam", "adamw", "sgd", "sparse_adam")


@dataclass
class RunConfig(SparseSettings):
    """Every setting of a run. The sparse settings (density, scope, prune, grow, delta_t, ...) are
    inherited from ``dslrec.sparse.config.SparseSettings``, their one definition; the fields
    below are the run's own (and two defaults a run changes: dense, and delta_t from the rule)."""

    # what to train on what
    model: str = "mf"
    dataset: str = "synthetic"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    # data preparation (unsplit formats; see dslrec.data.load)
    split: str | None = None  # given | ratio | temporal | loo | users (default: the dataset's own)
    split_seed: int = 0  # seed of random splits, apart from `seed` so seeds share one split
    min_rating: float | None = None
    k_core: int | None = None
    columns: dict[str, str] | None = None  # CSV/TSV/.inter header name per role: user=uid,item=iid,rating=r,timestamp=ts
    sep: str | None = None  # CSV/TSV field separator (default: from the extension, else detected)
    # optimisation
    epochs: int = 100
    max_steps: int | None = None  # stop after N optimiser steps (per phase, like epochs); the last epoch is cut short
    batch_size: int = 2048
    optimizer: str = "adam"  # adam | adamw | sgd | sparse_adam (lazy: only the batch's embedding rows move)
    lr: float = 1e-3
    lr_end: float | None = None  # final lr of the cosine schedule (default lr / 100)
    lr_schedule: str = "constant"  # constant | cosine
    weight_decay: float = 0.0  # optimiser weight decay (the backbones' own L2 is `l2`)
    momentum: float = 0.9  # SGD only
    per_user_sampling: bool = False  # LightGCN-style: sample users, then a positive each
    n_neg: int = 4  # pointwise backbones: negatives per positive
    # evaluation and model selection
    eval_every: int = 1
    metric: str = "recall@20"
    patience: int = 10  # evaluations without improvement before stopping (0 = never), counted once the model beats popularity (and DSL has settled)
    ks: list[int] = field(default_factory=lambda: [20])
    eval_batch_size: int | None = None  # users per evaluation batch (default: 8 MiB of scores per thread on CPU, at most 32 MiB; 2 GiB on GPUs; 16 MiB of bfloat16 in the candidate pass)
    eval_users: int | None = None  # validate and test on a seeded random sample of N users (the same sample throughout)
    cold_users: str = "drop"  # users with valid/test items but no training ones: drop | popular (ranked by popularity)
    # sparse training (more settings of dslrec.sparse below)
    method: str = "dense"
    density: float = 1.0
    scope: str = "per_row"  # per_row | per_tensor | global (per_tensor for pep and init erk unless set)
    grow: str = "accumulated"  # growth criterion (DSL)
    accumulate_steps: int | None = None  # steps of gradient growth sums before an update (null: all delta_t)
    delta_t: int | None = None  # iterations between mask updates (default: from delta_t_epochs, resolved at the start)
    delta_t_epochs: float = DELTA_T_EPOCHS  # the rule: delta_t = round(delta_t_epochs * steps per epoch)
    preset: str | None = None  # a named group of settings (PRESETS); explicit settings override it
    finetune_epochs: int | None = None  # oneshot: epochs of fine-tuning (default: epochs)
    lth_rounds: int = 3
    # model hyper-parameters (checked against the backbone's constructor)
    model_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """All settings, the run's own first and then the sparse ones (config.yaml's order)."""
        data = dataclasses.asdict(self)
        own = [f.name for f in dataclasses.fields(self) if f.name not in SPARSE_KEYS and f.name != "model_options"]
        return {**{k: data[k] for k in own}, **{k: data[k] for k in SPARSE_KEYS}, "model_options": data["model_options"]}


RUN_KEYS = {f.name for f in dataclasses.fields(RunConfig)} - {"model_options"}
# The backbones' paper settings name the lr schedule "schedule" (in a run that key is DSL's)
# and the pointwise negatives "negatives".
PAPER_KEY_ALIASES = {"schedule": "lr_schedule", "negatives": "n_neg"}
# settings whose explicit null means something (accumulate_steps: the whole interval)
NULLABLE = ("accumulate_steps",)


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DslrecError(f"config file {path} does not exist; pass an existing YAML or JSON file")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        first = str(e).splitlines()[0]
        raise DslrecError(f"config file {path} is not valid YAML/JSON ({first}); fix its syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise DslrecError(f"config file {path} must hold a mapping of settings (key: value)")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise DslrecError(f"config file {path}: {bad_keys[0]!r} is not a setting name; keys are names like lr or epochs")
    # A saved resolved config nests model options; flatten them back.
    data = dict(data)
    options = data.pop("model_options", None) or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise DslrecError(f"config file {path}: model_options must be a mapping of option: value, got {options!r}")
    data.update(options)
    return data


# Named groups of settings (--preset NAME), applied over the backbone's defaults and under any
# setting given explicitly (config file, command line, keyword).
PRESETS: dict[str, dict[str, Any]] = {
    # the paper's DSL and the backbone's paper settings, its per-backbone delta_t included (faithful
    # reproductions): one budget per tensor, growth by the gradient of one batch
    "paper": {"method": "dsl", "scope": "per_tensor", "grow": "gradient", "accumulate_steps": 20},
    # DSL as we recommend it, the run's defaults: every user/item row keeps its own budget, and growth
    # follows the gradient summed over the whole interval since the last update (README, Results)
    "recommended": {"method": "dsl", "scope": "per_row", "grow": "accumulated", "accumulate_steps": None},
}
# scopes that allocate per tensor: a run's default per_row scope gives way to per_tensor for them
PER_TENSOR_ONLY = {"method": "pep", "init": "erk"}
_FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(RunConfig)}


def _coerce(key: str, value: Any, declared: str | None = None) -> Any:
    """Turn a setting from the command line or a file into its declared type (one-line errors)."""
    declared = declared or _FIELD_TYPES[key]
    optional = "None" in declared
    kind = declared.split("|")[0].strip()
    if key in ("columns", "sep"):  # their own string forms (user=uid,item=iid; tab); see dslrec.data.readers
        from dslrec.data.readers import parse_columns, parse_sep

        return parse_columns(value) if key == "columns" else parse_sep(value)
    if isinstance(value, str) and kind != "str":
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    if value is None:
        if optional:
            return None
        raise DslrecError(f"setting {key} needs a value ({kind})")
    if isinstance(value, str) and kind in ("int", "float"):
        try:  # YAML 1.1 reads 1e-3 (no dot) as a string
            number = float(value)
            value = int(number) if kind == "int" and number.is_integer() else number
        except ValueError:
            pass
    if key == "k_core" and isinstance(value, list):  # (user_k, item_k): checked in validate()
        return value
    if key == "ks" and isinstance(value, (int, str)):
        parts = [v.strip() for v in str(value).split(",")]
        if not all(v.isdigit() for v in parts):
            raise DslrecError(f"setting ks must be comma-separated integers like 10,20, got {value!r}")
        value = [int(v) for v in parts]
    if key == "ks" and not (isinstance(value, list) and all(type(v) is int for v in value)):
        raise DslrecError(f"setting ks must be a list of integers like [10, 20] (or 10,20), got {value!r}")
    if kind == "bool":
        if not isinstance(value, bool):
            raise DslrecError(f"setting {key} must be true or false, got {value!r}")
    elif kind == "int":
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DslrecError(f"setting {key} must be an integer, got {value!r}")
    elif kind == "float":
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DslrecError(f"setting {key} must be a number, got {value!r}")
        value = float(value)
    elif kind == "str" and not isinstance(value, str):
        value = str(value)
    return value


def _model_option(model: str, key: str, value: Any, default: Any) -> Any:
    """A backbone option from the command line or a file, of the type of its default."""
    if isinstance(default, (bool, int, float)):
        kind = "bool" if isinstance(default, bool) else "int" if isinstance(default, int) else "float"
        return _coerce(key, value, kind)  # names the option when the type is wrong
    if isinstance(value, str) and not isinstance(default, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError:
            raise DslrecError(f"option {key} of model {model!r}: {value!r} is not a valid value "
                              f"(default {default!r}); pass it like --{key} {default!r}") from None
    if isinstance(default, list) and not isinstance(value, list):
        raise DslrecError(f"option {key} of model {model!r} must be a list like {default}, got {value!r}")
    return value


def resolve(settings: dict[str, Any], backbone_settings, model_kwargs) -> RunConfig:
    """Build a RunConfig from user settings.

    ``backbone_settings(model, paper) -> dict`` (the backbone's default training
    settings, or with ``paper=True`` its paper's) and ``model_kwargs(model) ->
    {option: default}`` come from the backbone registry (``resolve_settings`` below
    passes ``dslrec.models``' functions). Order: RunConfig's defaults < the
    backbone's settings < the preset < ``settings``.
    """
    settings = {k.replace("-", "_"): v for k, v in settings.items()}
    settings = {k: v for k, v in settings.items() if v is not None or k in NULLABLE}
    model = str(settings.get("model", RunConfig.model))
    preset = settings.get("preset")
    if preset is not None and preset not in PRESETS:
        raise DslrecError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    merged: dict[str, Any] = {}
    for k, v in backbone_settings(model, preset == "paper").items():
        merged[PAPER_KEY_ALIASES.get(k, k)] = v
    merged.update(PRESETS.get(preset, {}))
    # The backbone's density is the default of the sparse methods; a dense run keeps every weight.
    if settings.get("method", merged.get("method", RunConfig.method)) == "dense":
        merged.pop("density", None)
    merged.update(settings)
    if "scope" not in settings:  # a preset's per_row gives way too: the method or init was asked for
        if any(str(merged.get(k)) == v for k, v in PER_TENSOR_ONLY.items()):
            merged["scope"] = "per_tensor"
    model_defaults = model_kwargs(model)  # option -> default
    valid_model_keys = set(model_defaults)
    run: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in merged.items():
        if key in RUN_KEYS:
            run[key] = _coerce(key, value)
        elif key in valid_model_keys:
            options[key] = _model_option(model, key, value, model_defaults[key])
        else:
            valid = ", ".join(sorted(RUN_KEYS | valid_model_keys))
            raise DslrecError(f"unknown setting {key!r} for model {model!r}; valid settings: {valid}")
    cfg = RunConfig(**run, model_options=options)
    validate(cfg)
    return cfg


def resolve_delta_t(cfg: RunConfig, steps_per_epoch: int) -> int:
    """The run's delta_t in iterations: the explicit setting, else ``delta_t_epochs`` epochs."""
    if cfg.delta_t is not None:
        return cfg.delta_t
    return max(1, round(cfg.delta_t_epochs * steps_per_epoch))


def validate(cfg: RunConfig) -> None:
    def check(ok: bool, message: str) -> None:
        if not ok:
            raise DslrecError(message)

    check(cfg.method in METHODS, f"unknown method {cfg.method!r}; choose one of {', '.join(METHODS)}")
    check(0.0 < cfg.density <= 1.0, f"density must be in (0, 1], got {cfg.density}")
    check(cfg.method != "dense" or cfg.density == 1.0,
          "density < 1 needs a sparse method; pass --method dsl (or static, gmp, oneshot, lth, pep)")
    check(cfg.epochs >= 1, f"epochs must be at least 1, got {cfg.epochs}")
    check(cfg.batch_size >= 1, f"batch_size must be at least 1, got {cfg.batch_size}")
    check(cfg.lr > 0, f"lr must be positive, got {cfg.lr}")
    check(cfg.optimizer in OPTIMIZERS, f"unknown optimizer {cfg.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
    check(cfg.optimizer != "sparse_adam" or cfg.weight_decay == 0,
          "sparse_adam has no weight decay (it would touch every row at every step); use --l2 or --optimizer adamw")
    check(cfg.lr_schedule in ("constant", "cosine"),
          f"unknown lr_schedule {cfg.lr_schedule!r}; choose constant or cosine")
    check(cfg.eval_every >= 1, f"eval_every must be at least 1, got {cfg.eval_every}")
    check(cfg.patience >= 0, f"patience must be >= 0, got {cfg.patience}")
    check(bool(cfg.ks) and all(k >= 1 for k in cfg.ks), f"ks must be positive cut-offs, got {cfg.ks}")
    name, _, k = cfg.metric.partition("@")
    check(name in ("recall", "ndcg", "precision", "hitrate", "mrr") and k.isdigit(),
          f"metric must look like recall@20 or ndcg@10, got {cfg.metric!r}")
    if int(k) not in cfg.ks:
        cfg.ks = sorted({*cfg.ks, int(k)})
    check(cfg.device == "auto" or cfg.device == "cpu" or cfg.device.startswith("cuda"),
          f"device must be auto, cpu or cuda[:N], got {cfg.device!r}")
    check(cfg.delta_t is None or cfg.delta_t >= 1, f"delta_t must be at least 1, got {cfg.delta_t}")
    check(cfg.delta_t_epochs > 0, f"delta_t_epochs must be positive, got {cfg.delta_t_epochs}")
    check(cfg.lth_rounds >= 1, f"lth_rounds must be at least 1, got {cfg.lth_rounds}")
    check(cfg.cold_users in ("drop", "popular"),
          f"unknown cold_users {cfg.cold_users!r}; choose drop (leave them out of evaluation) or popular")
    # checked here rather than deep in numpy/torch, so that the message names the setting
    for key in ("seed", "split_seed"):
        value = getattr(cfg, key)
        check(0 <= value < 2**32, f"{key} must be an integer from 0 to 2**32 - 1, got {value}")
    check(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    check(0 <= cfg.momentum < 1, f"momentum must be in [0, 1), got {cfg.momentum}")
    check(cfg.n_neg >= 1, f"n_neg must be at least 1, got {cfg.n_neg}")
    check(cfg.eval_batch_size is None or cfg.eval_batch_size >= 1,
          f"eval_batch_size must be at least 1, got {cfg.eval_batch_size}")
    check(int(k) >= 1, f"metric must cut off at k >= 1 like recall@20, got {cfg.metric!r}")
    check(isinstance(cfg.dataset, str) and cfg.dataset != "",
          f"dataset must be a registered name or a path, got {cfg.dataset!r}")
    check(cfg.device in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", cfg.device) is not None,
          f"device must be auto, cpu, cuda or cuda:N, got {cfg.device!r}")
    optional = {  # settings whose default None means "not set": (check, what they must be)
        "finetune_epochs": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (epochs of fine-tuning)"),
        "max_steps": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (optimiser steps per phase)"),
        "eval_users": (lambda v: _is_int(v) and v >= 1, "an integer >= 1 (users sampled for evaluation)"),
        "lr_end": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (final lr of the cosine schedule)"),
        "min_rating": (_is_number, "a number"),
        "k_core": (lambda v: (_is_int(v) and v >= 1) or (isinstance(v, list) and len(v) == 2
                                                          and all(_is_int(x) and x >= 1 for x in v)),
                   "an integer >= 1 or a [user_k, item_k] pair"),
        "split": (lambda v: isinstance(v, str), "a split name like ratio, temporal or loo"),
    }
    for key, (ok, what) in optional.items():
        value = getattr(cfg, key)
        check(value is None or ok(value), f"{key} must be {what}, got {value!r}")
    from dslrec.data.preprocess import METHODS as SPLIT_METHODS

    check(cfg.split is None or cfg.split in SPLIT_METHODS,
          f"unknown split {cfg.split!r}; choose one of {', '.join(SPLIT_METHODS)}")
    cfg.check_sparse()
    check(cfg.storage == "masked" or cfg.method in COMPACT_METHODS,
          f"method {cfg.method} trains dense weights by definition and needs --storage masked "
          f"(compact storage is for {' and '.join(COMPACT_METHODS)})")
    check(not (cfg.method == "pep" and cfg.scope == "per_row"),
          "scope per_row does not apply to pep (its thresholds choose the mask); use --scope per_tensor or global")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def resolve_settings(settings: dict[str, Any] | None = None, config_file: str | Path | None = None,
                     **overrides) -> RunConfig:
    """A run's settings from keywords, a config file and overrides, with the backbone's defaults."""
    from dslrec import models

    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(read_config_file(config_file))
    merged.update(settings or {})
    merged.update(overrides)
    return resolve(merged, models.default_settings, models.model_kwargs)


def load_dataset(cfg: RunConfig, progress: bool = True):
    """The dataset a run's settings name, filtered and split as they say."""
    from dslrec import data

    kwargs = {"seed": cfg.split_seed, "progress": progress}
    for key in ("split", "min_rating", "k_core", "columns", "sep"):
        if getattr(cfg, key) is not None:
            kwargs[key] = getattr(cfg, key)
    return data.load(cfg.dataset, **kwargs)
