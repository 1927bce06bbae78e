"""``dslrec train``: train a backbone, dense or sparse, and write a run directory.

``dslrec train --help`` lists every setting of ``RunConfig`` (settings.py) with its
default, grouped as the class groups them, and each backbone's options and paper settings,
read from the backbones' source: building the parser or printing help never imports torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import importlib.util
import io
import re
import shutil
import textwrap
import tokenize
from pathlib import Path
from typing import Any

from dslrec.errors import DslrecError
from dslrec.sparse.config import GROWS, INITS, PRUNES, SCHEDULES, SCOPES

NAMED = ("model", "dataset", "epochs", "method", "density", "prune", "grow", "schedule", "scope",
         "delta_t", "zeta0", "device", "seed")
BACKBONES = ("mf", "lightgcn", "neumf", "multvae")  # modules of dslrec.models

# What each setting means, for settings whose line in RunConfig has no comment of its own
# (a comment there wins). A setting added to RunConfig shows in --help without an entry here.
MEANINGS = {
    "model": f"backbone: {', '.join(BACKBONES)}",
    "dataset": "registered name (dslrec data list), a dataset folder or file, or synthetic",
    "seed": "training seed: initial weights, batches, masks",
    "min_rating": "keep only interactions rated at least this",
    "k_core": "keep the k-core: users and items with at least k interactions",
    "epochs": "epochs to train (oneshot: of the dense phase; lth: of each round)",
    "batch_size": "training examples per optimiser step (users for multvae)",
    "lr": "learning rate",
    "eval_every": "validate every N epochs",
    "metric": "validation metric that picks the best epoch and stops early",
    "ks": "cut-offs of the reported metrics, e.g. 10,20",
    "eval_batch_size": "users per evaluation batch (default: as many as 8 MiB of scores per thread hold, at most 32 MiB, at least 16; 16 MiB of bfloat16 scores per thread in the candidate pass)",
    "method": "dense | dsl | static | gmp | oneshot | lth | pep",
    "density": "fraction of the sparsifiable weights kept active (sparse methods)",
    "scope": f"where the budget holds: {' | '.join(SCOPES)}",
    "init": f"initial mask: {' | '.join(INITS)}",
    "prune": f"DSL's prune criterion: {' | '.join(PRUNES)}",
    "grow": f"DSL's growth criterion: {' | '.join(GROWS)}",
    "zeta0": "initial update ratio (fraction of active weights moved per update)",
    "eta_min": "final update ratio of the schedule",
    "delta_t": "iterations between mask updates",
    "explore_until": "fraction of training after which the mask is frozen",
    "lth_rounds": "lottery ticket: rounds of pruning and rewinding",
}


class _TrainHelp(argparse.RawDescriptionHelpFormatter):
    """Named arguments show their RunConfig default; the settings list is built only for --help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        defaults = run_defaults()
        if action.dest in defaults and "default" not in text:
            text += f" (default {show_value(defaults[action.dest])}{'*' if action.dest in paper_keys() else ''})"
        return text.replace("%", "%%") if "%(" not in text else text

    def add_text(self, text) -> None:
        super().add_text(settings_help() if text is SETTINGS_HELP else text)


SETTINGS_HELP = object()  # stands for the epilog until help is printed


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model (dense or sparse) and write a run directory",
        description="Train a backbone. Any setting can be given as --key value (see README, 'Settings').\n"
                    "example: dslrec train --model mf --dataset ml-100k --method dsl --density 0.2 --epochs 50",
        epilog=SETTINGS_HELP, formatter_class=_TrainHelp,
    )
    p.add_argument("--model", choices=BACKBONES, help="backbone")
    p.add_argument("--dataset", help="registered name (dslrec data list), a folder or a file; default synthetic")
    p.add_argument("--config", help="YAML/JSON file of settings (command-line settings override it)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--out", type=_out_dir, help="run directory (default runs/DATE-MODEL-METHOD-DATASET)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue a run (only --epochs, --device, --eval_batch_size may differ from its config)")
    p.add_argument("--method", choices=("dense", "dsl", "static", "gmp", "oneshot", "lth", "pep"))
    p.add_argument("--density", type=float, help="fraction of sparsifiable weights kept active")
    p.add_argument("--prune", choices=PRUNES)
    p.add_argument("--grow", choices=GROWS)
    p.add_argument("--schedule", choices=SCHEDULES, help="DSL update-ratio schedule")
    p.add_argument("--scope", choices=SCOPES)
    p.add_argument("--delta-t", dest="delta_t", type=int, help="iterations between mask updates")
    p.add_argument("--zeta0", type=float, help="initial update ratio")
    p.add_argument("--device", help="auto | cpu | cuda (default auto)")
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.add_argument("--tensorboard", nargs="?", const=True, metavar="DIR",
                   help="also log each epoch's scalars for TensorBoard, into DIR (default RUN_DIR/tensorboard); "
                        "needs the optional extra: pip install 'dslrec[tensorboard]'")
    for action in p._actions:  # named settings without a help of their own say what they mean
        if action.help is None and action.dest in MEANINGS:
            action.help = MEANINGS[action.dest].split(":")[0] if action.choices else MEANINGS[action.dest]
    p.set_defaults(func=run, extra_settings=True)


def _out_dir(text: str) -> str:
    """--out is checked while the arguments are parsed, before anything is written."""
    from dslrec.fileio import check_out_dir

    check_out_dir(text, "--out")
    return text


def parse_extra(extra: list[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` pairs for any other setting."""
    settings: dict[str, str] = {}
    i = 0
    while i < len(extra):
        token = extra[i]
        if not token.startswith("--") or len(token) < 3:
            raise DslrecError(f"unexpected argument {token!r}; settings are given as --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra) or extra[i + 1].startswith("--"):
                raise DslrecError(f"setting --{key} needs a value (--{key} VALUE)")
            value = extra[i + 1]
            i += 1
        settings[key.replace("-", "_")] = value
        i += 1
    return settings


def run(args: argparse.Namespace, extra: list[str]) -> int:
    from dslrec import distributed
    from dslrec.training.run import train

    settings = {k: getattr(args, k) for k in NAMED if getattr(args, k) is not None}
    settings.update(parse_extra(extra))
    try:
        if args.resume:
            # --config and --out are checked against the run (train refuses what would change it)
            summary = train(resume=args.resume, config_file=args.config, out=args.out, progress=not args.quiet,
                            tensorboard=args.tensorboard, **settings)
        else:
            summary = train(settings, config_file=args.config, out=args.out, progress=not args.quiet,
                            tensorboard=args.tensorboard)
        group = distributed.current()
        if group is None or group.writer:  # torchrun: one summary, rank 0's
            print(format_summary(summary))
        distributed.teardown(wait=True)
    finally:
        distributed.teardown()  # after an error: at once (the launcher stops the other ranks)
    return 0


def format_summary(summary: dict) -> str:
    p = summary["params"]
    # each column as wide as its name (sampled_hitrate@20 ...) or a value, two spaces apart
    width = {k: max(len(k), 10) + 2 for k in summary["test"]}
    lines = [
        f"{summary['model']} / {summary['method']} on {summary['dataset']['name']}: "
        f"best epoch {summary['best_epoch']} of {summary['epochs_run']}",
        f"  {'split':<6}" + "".join(f"{k:>{w}}" for k, w in width.items()),
        f"  {'valid':<6}" + "".join(f"{summary['valid'].get(k, float('nan')):>{w}.4f}" for k, w in width.items()),
        f"  {'test':<6}" + "".join(f"{summary['test'][k]:>{w}.4f}" for k, w in width.items()),
        f"  params: {p['active']:,} active of {p['total']:,} (peak {p['peak_active']:,}, "
        f"mean {p['mean_active']:,.0f} over the run)",
        f"  time: {summary['time']['train_s']:.1f}s training, {summary['time']['epoch_s']:.2f}s per epoch",
        f"  run written to {summary['run_dir']}",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- the settings in --help


def show_value(value: Any) -> str:
    """A setting's value as it would be typed on the command line."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def run_defaults() -> dict[str, Any]:
    """Every RunConfig setting and its default, in the class's order."""
    from dslrec.settings import RunConfig

    base = RunConfig()
    return {f.name: getattr(base, f.name) for f in dataclasses.fields(RunConfig) if f.name != "model_options"}


def setting_groups() -> list[tuple[str, list[tuple[str, str]]]]:
    """(group title, [(setting, meaning)]) in RunConfig's order, grouped by its comment lines.

    The title is the comment above a group of fields; a field's meaning is its trailing
    comment, else ``MEANINGS``. Settings the source does not show are listed under "other".
    """
    import inspect

    from dslrec.sparse.config import SparseSettings
    from dslrec.settings import RunConfig

    names = set(run_defaults())
    groups: list[tuple[str, list[tuple[str, str]]]] = [("settings", [])]
    seen: set[str] = set()
    # the run's own settings, then the sparse ones RunConfig inherits (declared in dslrec.sparse.config)
    source = (inspect.getsource(RunConfig) + "\n# sparse training: how the sparse methods behave\n"
              + inspect.getsource(SparseSettings).split('"""', 2)[2])
    previous = ""
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#"):
            if not previous.startswith("#"):  # the first line of a comment block titles a group
                groups.append((text.lstrip("# ").strip(), []))
            previous = text
            continue
        previous = text
        m = re.match(r"(\w+)\s*:", text)
        if not m or m.group(1) not in names or m.group(1) in seen:
            continue
        comment = ""
        try:
            for tok in tokenize.generate_tokens(io.StringIO(text).readline):
                if tok.type == tokenize.COMMENT:
                    comment = tok.string.lstrip("# ").strip()
        except (tokenize.TokenError, SyntaxError):  # a field written over several lines
            pass
        groups[-1][1].append((m.group(1), comment or MEANINGS.get(m.group(1), "")))
        seen.add(m.group(1))
    rest = [(k, MEANINGS.get(k, "")) for k in run_defaults() if k not in seen]
    if rest:
        groups.append(("other", rest))
    return [(title, rows) for title, rows in groups if rows]


@functools.lru_cache(maxsize=None)
def backbone_source(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(constructor options and their defaults, the run's default settings) of backbone ``name``:
    its paper settings without ``delta_t``, changed by its ``DEFAULT_CHANGES``.

    Read from ``dslrec/models/NAME.py`` with ``ast``, not imported (that would import
    torch); tests check that this agrees with ``dslrec.models``. A default that is not a
    literal shows as ``?``.
    """
    from dslrec.settings import PAPER_KEY_ALIASES

    spec = importlib.util.find_spec("dslrec.models")  # imports dslrec, not dslrec.models
    path = Path(list(spec.submodule_search_locations)[0]) / f"{name}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))

    def literal(node):
        try:
            value = ast.literal_eval(node)
        except ValueError:
            return "?"
        return list(value) if isinstance(value, tuple) else value

    options: dict[str, Any] = {}
    paper: dict[str, Any] = {}
    changes: dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "build":
            a = node.args
            positional = a.posonlyargs + a.args
            pos_defaults = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
            pairs = list(zip(positional, pos_defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
            options = {arg.arg: (literal(d) if d is not None else "?") for arg, d in pairs if arg.arg != "dataset"}
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "PAPER_SETTINGS" for t in node.targets):
            value = literal(node.value)
            if isinstance(value, dict):
                paper = {PAPER_KEY_ALIASES.get(k, k): v for k, v in value.items()}
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "DEFAULT_CHANGES" for t in node.targets):
            value = literal(node.value)
            if isinstance(value, dict):
                changes = {PAPER_KEY_ALIASES.get(k, k): v for k, v in value.items()}
    # a run's defaults: the paper's, without its delta_t (the run-length rule), with dslrec's changes
    defaults = {k: v for k, v in paper.items() if k != "delta_t"}
    defaults.update(changes)
    return options, defaults


def paper_keys() -> set[str]:
    """Settings that some backbone's default settings replace."""
    return {k for name in BACKBONES for k in backbone_source(name)[1]}


def settings_help() -> str:
    """The epilog of ``dslrec train --help``."""
    defaults = run_defaults()
    groups = setting_groups()
    papers = {name: backbone_source(name) for name in BACKBONES}
    replaced = {k for _, paper in papers.values() for k in paper}
    width = min(max(shutil.get_terminal_size().columns, 80), 120)
    key_w = max(len(k) for _, rows in groups for k, _ in rows) + 4
    val_w = min(max(len(show_value(v)) for v in defaults.values()), 10) + 2

    def wrapped(first: str, text: str) -> list[str]:
        lines = textwrap.wrap(text, width=max(width - len(first), 30)) or [""]
        return [first + lines[0]] + [" " * len(first) + rest for rest in lines[1:]]

    out = ["Any setting below is accepted as --key value or --key=value (- and _ are the same).",
           "Settings resolve in this order: the defaults shown < the backbone's settings (*, below)",
           "< --preset < a --config file < the command line. README, section \"Settings\", has the table."]
    for title, rows in groups:
        out += ["", f"{title}:"]
        for key, meaning in rows:
            value = show_value(defaults[key]) + ("*" if key in replaced else "")
            out += wrapped(f"  --{key:<{key_w - 2}}{value:<{val_w}} ", meaning)
    name_w = max(map(len, BACKBONES)) + 2
    out += ["", "* the backbone's settings replace these defaults (density only for sparse methods): its paper's,",
            "  with delta_t left to delta_t_epochs and its DEFAULT_CHANGES; --preset paper restores the paper's:"]
    for name, (_, paper) in papers.items():
        text = ", ".join(f"{k} {show_value(v)}" for k, v in paper.items())
        out += wrapped(f"  {name:<{name_w}}", text)
    out += ["", "model options (--key value; each backbone's own, checked against its constructor):"]
    for name, (options, _) in papers.items():
        text = ", ".join(f"{k} {show_value(v)}" for k, v in options.items())
        out += wrapped(f"  {name:<{name_w}}", text)
    return "\n".join(out)
