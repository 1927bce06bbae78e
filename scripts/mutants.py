"""Check the test suite itself: break the protocol on purpose and make sure a test fails.

Each mutant below is a small, deliberate breakage of something the README or
the protocol promises (selection on the test set, no restore of the best
weights, a budget that drifts by one, ...). The script copies the repository's
files (tracked and untracked-but-not-ignored) to a temporary folder, applies one
mutant at a time there as exact string replacements, runs the test files named
for that mutant with ``PYTHONPATH`` pointing at the copy's ``src`` and reports
whether the suite caught it (some test failed). The working tree is never
touched.

    python scripts/mutants.py             # every mutant, its listed test files (a few minutes)
    python scripts/mutants.py --full      # every mutant against the whole suite (slow)
    python scripts/mutants.py --only no_restore_best,selection_on_test
    python scripts/mutants.py --only budget_drift_per_row --tests tests/test_training.py
    python scripts/mutants.py --list      # what each mutant patches, and where

Exit status: 0 if every mutant was caught; 1 if one was missed or its test run
errored; 2 if the script could not run (a target string is gone or appears
more than once, which means the code moved and the mutant needs updating, or
the unmutated copy fails its own tests).

Run it before calling a change to training, evaluation or the sparse engine
done; a new protocol rule deserves a mutant here and a test that kills it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutant:
    name: str
    what: str
    path: str  # file (relative to the repository root) the replacements apply to
    replace: tuple[tuple[str, str], ...]  # (exact old text, new text); old must occur exactly once
    tests: tuple[str, ...]  # test files run against it (the whole suite with --full)


LOOP = "src/dslrec/training/loop.py"
RUN = "src/dslrec/training/run.py"
STORAGE = "src/dslrec/sparse/storage.py"
COMPACT = "src/dslrec/sparse/compact.py"
DECISIONS = "src/dslrec/sparse/decisions.py"

MUTANTS = [
    # --- the protocol: selection on validation, report at the best validation epoch ------------------
    Mutant("selection_on_test", "the best epoch is selected (and early stopping decided) on the test set",
           LOOP, (('valid = self.evaluate(model, "valid")', 'valid = self.evaluate(model, "test")'),),
           ("tests/test_protocol.py", "tests/test_training.py")),
    Mutant("no_restore_best", "test metrics come from the last epoch's weights, not the best validation epoch's",
           RUN, (("    model.load_state_dict(result.best_state)\n", "    pass  # mutant: no restore\n"),),
           ("tests/test_protocol.py", "tests/test_training.py")),
    Mutant("test_reports_validation", "the summary's test metrics are computed on the validation split",
           RUN, (('trainer.evaluate(model, "test", per_user=True)', 'trainer.evaluate(model, "valid", per_user=True)'),),
           ("tests/test_protocol.py", "tests/test_training.py")),
    Mutant("best_state_aliased", "the best state is a view of the live weights (the last epoch's at the end)",
           LOOP, (("best_state, best_is_live = {k: v.clone() for k, v in best_state.items()}, False",
                   "best_is_live = False"),),
           ("tests/test_protocol.py", "tests/test_training.py")),
    Mutant("eval_every_ignored", "every epoch is validated (and selectable) whatever --eval_every says",
           LOOP, (("if (epoch + 1) % cfg.eval_every == 0 or last:", "if True:"),),
           ("tests/test_protocol.py",)),
    Mutant("valid_not_excluded_at_test", "validation items stay in the test ranking (they can be hits)",
           "src/dslrec/evaluate/ranking.py",
           (("return [dataset.train, dataset.valid]", "return [dataset.train]"),),
           ("tests/test_metrics.py", "tests/test_protocol.py")),
    Mutant("sampled_negatives_training_seed", "the sampled protocol's negatives follow the training seed",
           RUN, (("sampled_negatives(dataset, s, 100, cfg.split_seed, sample)",
                  "sampled_negatives(dataset, s, 100, cfg.seed, sample)"),),
           ("tests/test_protocol.py",)),
    Mutant("split_uses_training_seed", "random splits are seeded by --seed instead of --split_seed",
           "src/dslrec/settings.py", (('kwargs = {"seed": cfg.split_seed,', 'kwargs = {"seed": cfg.seed,'),),
           ("tests/test_protocol.py",)),
    # --- the sparse engine's invariants -----------------------------------------------------------------
    Mutant("budget_drift_per_tensor", "a DSL update grows one weight more than it pruned (per_tensor/global)",
           DECISIONS, (("grown = grow_positions(n, k, survivors, cand_pos, cand_score, generator, unseen)",
                        "grown = grow_positions(n, k + 1, survivors, cand_pos, cand_score, generator, unseen)"),),
           ("tests/test_sparse_properties.py", "tests/test_sparse_engine.py")),
    Mutant("budget_drift_per_row", "a per-row DSL update grows one weight more than it pruned in every row",
           DECISIONS, (("slots = _floyd_slots(free, k[cold], generator)",
                        "slots = _floyd_slots(free, k[cold] + 1, generator)"),),
           ("tests/test_sparse_properties.py", "tests/test_sparse_engine.py")),
    Mutant("state_kept_on_mask_change", "pruned and newly grown weights keep their optimiser state",
           STORAGE, (("targets = [p, *self.state_tensors(name)]", "targets = [p]"),),
           ("tests/test_sparse_properties.py", "tests/test_sparse_engine.py")),
    Mutant("state_kept_by_remask", "re-masking after a step zeroes inactive weights but not their optimiser state",
           STORAGE, (("            for s in self.state_tensors(name):\n                s.mul_(scale)\n",
                      "            for s in []:\n                s.mul_(scale)\n"),),
           ("tests/test_sparse_properties.py", "tests/test_sparse_engine.py")),
    Mutant("compact_state_not_rekeyed", "compact storage keeps each index's optimiser state when the positions "
           "behind the indices change (per_tensor/global updates)",
           COMPACT, (("        if positions.numel() == old.numel():\n            for t in [values, *self.state_tensors(name)]:",
                      "        if positions.numel() == old.numel():\n            for t in [values]:"),),
           ("tests/test_compact.py",)),
    Mutant("compact_rows_state_not_rekeyed", "compact storage keeps each index's optimiser state in per-row updates",
           COMPACT, (("tensors = [t.view(-1, width) for t in [self.values(name), *self.state_tensors(name)]]",
                      "tensors = [t.view(-1, width) for t in [self.values(name)]]"),),
           ("tests/test_compact.py",)),
    Mutant("compact_grows_blind", "compact storage records no gradient for growth (rows looked up are not kept)",
           COMPACT, (("            out.register_hook(lambda g: self.recorded.append((flat_idx, g.detach())))",
                      "            pass"),),
           ("tests/test_compact.py",)),
    Mutant("explore_until_ignored", "DSL keeps updating its masks after --explore_until",
           "src/dslrec/sparse/schedule.py",
           (("return t > 0 and t % delta_t == 0 and t < explore_until * total_steps",
             "return t > 0 and t % delta_t == 0"),),
           ("tests/test_methods_loop.py", "tests/test_sparse_engine.py", "tests/test_sparse_properties.py")),
    # --- the methods through the training loop ----------------------------------------------------------
    Mutant("best_before_target", "gmp/pep: an epoch counts as best before the target budget is reached",
           LOOP, (('eligible = engine is None or getattr(engine, "at_target", lambda: True)()', "eligible = True"),),
           ("tests/test_methods_loop.py",)),
    Mutant("patience_ignores_settling", "DSL: early stopping counts before the update ratio has decayed to half",
           LOOP, (("elif eligible and self.learning(best_metric, first_metric) and settled(engine):",
                   "elif eligible and self.learning(best_metric, first_metric):"),),
           ("tests/test_methods_loop.py",)),
    Mutant("lth_no_rewind", "the lottery ticket keeps training from the previous round's weights (no rewind)",
           "src/dslrec/training/methods.py",
           (("                model.load_state_dict(rundir.load_weights(init_path))\n",
             "                pass  # mutant: no rewind\n"),),
           ("tests/test_methods_loop.py",)),
    Mutant("oneshot_prunes_last_weights", "one-shot pruning prunes and fine-tunes the last dense weights, not the best",
           "src/dslrec/training/methods.py",
           (("        def prepare():\n            model.load_state_dict(phase.previous.best_state)\n",
             "        def prepare():\n            pass  # mutant: no load of the best dense weights\n"),),
           ("tests/test_methods_loop.py",)),
    Mutant("resume_without_optimizer_state", "a resumed run starts its optimiser afresh",
           LOOP, (('            optimizer.load_state_dict(resume["optimizer"])\n', "            pass  # mutant\n"),),
           ("tests/test_methods_loop.py",)),
    Mutant("resume_boundary_rng", "a run resumed between two phases starts the next one with a fresh random generator",
           RUN, (('            torch.set_rng_state(checkpoint["torch_rng"])\n', "            pass  # mutant\n"),),
           ("tests/test_methods_loop.py",)),
    Mutant("cosine_lr_ignored", "--lr_schedule cosine trains at a constant learning rate",
           LOOP, (('if cfg.lr_schedule == "cosine":', "if False:"),),
           ("tests/test_methods_loop.py",)),
    Mutant("adamw_is_adam", "--optimizer adamw builds Adam (L2 in the gradient, not decoupled)",
           "src/dslrec/training/optim.py", (("return torch.optim.AdamW(params,", "return torch.optim.Adam(params,"),),
           ("tests/test_methods_loop.py",)),
    # --- export and serving -----------------------------------------------------------------------------
    Mutant("export_no_seen_ignored", "dslrec export --no-seen still writes the training interactions",
           "src/dslrec/export/commands.py",
           (("export(args.run_dir, args.out, dtype=args.dtype, with_seen=args.with_seen)",
             "export(args.run_dir, args.out, dtype=args.dtype, with_seen=True)"),),
           ("tests/test_export.py",)),
    Mutant("include_seen_ignored", "dslrec recommend --include-seen still leaves out the seen items",
           "src/dslrec/export/commands.py",
           (("exclude_seen=args.exclude_seen, unknown=args.unknown", "exclude_seen=True, unknown=args.unknown"),),
           ("tests/test_export.py",)),
    Mutant("block_merge_prefers_later_items", "merging item blocks' top lists, a tie goes to the later block's item",
           "src/dslrec/evaluate/ranking.py",
           (("    v = torch.cat([vals, more_vals], dim=1)\n    i = torch.cat([items, more_items], dim=1)",
             "    v = torch.cat([more_vals, vals], dim=1)\n    i = torch.cat([more_items, items], dim=1)"),),
           ("tests/test_metrics.py", "tests/test_export.py")),
    Mutant("block_exclusion_first_only", "seen items are excluded in the first item block only",
           "src/dslrec/evaluate/ranking.py",
           (("            _exclude_block(scores, r, c)\n", "            _exclude_block(scores, r, c) if start == 0 else None\n"),),
           ("tests/test_metrics.py", "tests/test_export.py")),
    Mutant("candidate_bound_without_rounding", "the bfloat16 candidate check ignores the rounding error",
           "src/dslrec/evaluate/ranking.py",
           (("        bound = before_rounding + self.err_per_norm * self.max_norm * norms + flushed + np.abs(tau64) * 2**-20",
             "        bound = tau64"),),
           ("tests/test_metrics.py",)),
    Mutant("candidate_pass_ranks_seen_items", "the bfloat16 candidate pass forgets to leave out seen items",
           "src/dslrec/evaluate/ranking.py",
           (("            approx.view(-1).index_fill_(0, torch.from_numpy(rows * width + cols), float(\"-inf\"))",
             "            pass"),),
           ("tests/test_metrics.py",)),
    Mutant("candidate_bound_without_flushing", "the bfloat16 candidate check forgets values below float32's normals",
           "src/dslrec/evaluate/ranking.py",
           (("        flushed = 4 * self.dim * TINY * (1 + norms + self.max_norm)", "        flushed = 0.0"),),
           ("tests/test_metrics.py",)),
    Mutant("candidate_pass_on_overflowing_table", "an item table beyond bfloat16's range still takes the candidate pass",
           "src/dslrec/evaluate/ranking.py",
           (("    if reduced is not None and not reduced.usable:\n        reduced = None\n", ""),),
           ("tests/test_metrics.py",)),
    Mutant("candidate_padding_ranked", "the padding items of the candidate pass keep their zero scores",
           "src/dslrec/evaluate/ranking.py",
           (("        approx[:, self.n_items:] = float(\"-inf\")\n", ""),),
           ("tests/test_metrics.py",)),
    Mutant("candidate_ties_to_higher_item", "among candidates with equal scores the higher item index comes first",
           "src/dslrec/evaluate/ranking.py",
           (("np.sort(np.argpartition(keys, g - n_cand, axis=1)[:, g - n_cand:], axis=1)",
             "np.sort(np.argpartition(keys, g - n_cand, axis=1)[:, g - n_cand:], axis=1)[:, ::-1]"),),
           ("tests/test_metrics.py",)),
    Mutant("ranks_sample_the_whole_batch", "each rank of a distributed run samples and trains on the whole global batch",
           LOOP, (("        ranks = {} if parallel is None else dict(rank=self.dist.rank, world=self.dist.world)\n",
                   "        ranks = {}\n"),),
           ("tests/test_distributed.py",)),
    Mutant("rank_shares_overlap", "every rank takes rank 0's share of each global batch",
           "src/dslrec/data/sampling.py",
           (("        start, stop = shard(np.asarray(sizes, dtype=np.int64), self.rank, self.world)\n",
             "        start, stop = shard(np.asarray(sizes, dtype=np.int64), 0, self.world)\n"),),
           ("tests/test_sampling.py",)),
    Mutant("int8_scales_ignored", "int8 tables are served without their row scales",
           "src/dslrec/export/rows.py",
           (("        return out if scales is None else out.mul_(scales[:, None])", "        return out"),),
           ("tests/test_export.py",)),
    Mutant("bitmap_order_reversed", "a per-row bitmap's bits are read in the opposite order",
           "src/dslrec/export/rows.py",
           (("    bits = (packed[..., None] >> _BITS) & 1", "    bits = (packed[..., None] >> (7 - _BITS)) & 1"),),
           ("tests/test_export.py",)),
    Mutant("row_slice_candidates_unshifted", "a slice of rows reads its growth candidates by global row, not its own",
           "src/dslrec/sparse/policies.py",
           (("part = (source[0][a:b] - lo, source[1][a:b].abs())", "part = (source[0][a:b], source[1][a:b].abs())"),),
           ("tests/test_compact.py",)),
    Mutant("ever_active_slice_offset_lost", "a slice of the ever-active bitset starts at the wrong bit",
           "src/dslrec/sparse/tracking.py",
           (("return torch.from_numpy(bits[start & 7: (start & 7) + stop - start].astype(bool))",
             "return torch.from_numpy(bits[: stop - start].astype(bool))"),),
           ("tests/test_sparse_properties.py",)),
    Mutant("negatives_may_be_positives", "the per-row search for a user's positives stops one step early",
           "src/dslrec/data/sampling.py",
           (("        return (lo < end) & (self.indices[np.minimum(lo, last)] == items)",
             "        return (lo < end - 1) & (self.indices[np.minimum(lo, last)] == items)"),),
           ("tests/test_sampling.py",)),
    Mutant("reused_gradient_not_zeroed", "a lookup's gradient is added onto the last step's reused buffer",
           "src/dslrec/sparse/compact.py",
           (("            buf.zero_()\n", "            pass\n"),),
           ("tests/test_compact.py",)),
    Mutant("rows_marked_in_wrong_words", "per-row ever-active marking lands one 64-bit word off",
           "src/dslrec/sparse/tracking.py",
           (("        span |= words.numpy().view(np.uint64).reshape(-1)",
             "        span |= np.roll(words.numpy().view(np.uint64).reshape(-1), 1)"),),
           ("tests/test_sparse_properties.py",)),
    # --- experiments: a sweep's tables ---------------------------------------------------------------
    Mutant("relative_to_any_dense", "a relative table divides every run by the first dense run, whatever its seed",
           "src/dslrec/experiments/pivot.py",
           (("                ref = refs.get(scope(r, labels))", "                ref = next(iter(refs.values()))"),),
           ("tests/test_sweep.py",)),
    Mutant("relative_across_backbones", "a relative table divides a run by dense of another backbone or dataset",
           "src/dslrec/experiments/pivot.py",
           (("        return (r.summary.get(\"dataset\") or {}).get(\"name\"), r.summary.get(\"model\"), context(labels)",
             "        return context(labels)"),),
           ("tests/test_sweep.py",)),
    Mutant("partial_cover_is_all", "a run standing for some values of an axis is shown as standing for all",
           "src/dslrec/experiments/sweep.py",
           (("        return \"all\" if every is None or set(covered) >= every else \", \".join(covered)",
             "        return \"all\""),),
           ("tests/test_sweep.py",)),
    Mutant("worker_dies_on_sigterm", "a sweep worker terminated by its stopped sweep dies without clean-up",
           "src/dslrec/experiments/sweep.py",
           (("    with sigterm_as_interrupt(), warnings_about(", "    with warnings_about("),),
           ("tests/test_sweep.py",)),
    Mutant("interval_ignored_for_dsl", "a sweep treats DSL runs at two intervals as the same run",
           "src/dslrec/experiments/sweep.py",
           (("(set() if config.get(\"method\") in USE_DELTA_T else {\"delta_t\", \"delta_t_epochs\"})",
             "{\"delta_t\", \"delta_t_epochs\"}"),),
           ("tests/test_sweep.py",)),
    # --- serving ------------------------------------------------------------------------------------
    Mutant("serving_keeps_freed_heap", "a recommend call that filled score blocks keeps its freed heap",
           "src/dslrec/export/recommender.py",
           (("            release_freed_memory()\n        return out", "            pass\n        return out"),),
           ("tests/test_export.py",)),
    Mutant("trim_for_cold_users", "users served by popularity alone count toward the score blocks a call filled",
           "src/dslrec/export/recommender.py",
           (("        if out.known.sum() * self.n_items * 4 >= self.score_bytes:",
             "        if len(out.known) * self.n_items * 4 >= self.score_bytes:"),),
           ("tests/test_export.py",)),
    Mutant("ids_of_any_index", "user_ids(indices) prints an out-of-range index as if it were an id",
           "src/dslrec/export/recommender.py",
           (("    if idx.min() < 0 or idx.max() >= n:", "    if False:"),),
           ("tests/test_export.py",)),
]


def repository_files(root: Path) -> list[str]:
    """Tracked files and untracked files git does not ignore (new tests count before they are committed)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                         capture_output=True, check=True)
    return sorted({f for f in out.stdout.decode().split("\0") if f and (root / f).is_file()})


def copy_repository(root: Path, dest: Path) -> None:
    for rel in repository_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


def check_targets(root: Path, mutants: list[Mutant]) -> list[str]:
    """Every old string must occur exactly once in its file: otherwise the code moved and the mutant rotted."""
    problems = []
    for m in mutants:
        path = root / m.path
        if not path.is_file():
            problems.append(f"{m.name}: {m.path} does not exist")
            continue
        text = path.read_text()
        for old, _ in m.replace:
            n = text.count(old)
            if n != 1:
                problems.append(f"{m.name}: {m.path} contains the target {n} times (needs exactly 1): {old.strip()!r}")
        for test in m.tests:
            if not (root / test).is_file():
                problems.append(f"{m.name}: test file {test} does not exist")
    return problems


def run_pytest(copy: Path, tests: list[str], timeout: float) -> tuple[int, str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(copy / "src") + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, "-m", "pytest", "-x", "-rf", "-p", "no:cacheprovider", "-W", "ignore", *tests]
    t0 = time.perf_counter()
    try:
        done = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        rc, out = -1, f"timed out after {timeout:.0f} s\n{(e.stdout or b'')[-2000:]!r}"
    return rc, out, time.perf_counter() - t0


def failed_tests(output: str) -> list[str]:
    return re.findall(r"^FAILED (\S+)", output, flags=re.M)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="run the whole test suite against every mutant")
    ap.add_argument("--only", help="comma-separated mutant names")
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--tests", help="comma-separated test files or node ids to run against every mutant instead of "
                                    "its own list (e.g. to see whether one new test kills them)")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run of the unmutated copy")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per test run (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (its path is printed)")
    args = ap.parse_args(argv)

    mutants = MUTANTS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in {m.name for m in MUTANTS}]
        if unknown:
            print(f"unknown mutant(s): {', '.join(unknown)}; see --list", file=sys.stderr)
            return 2
        mutants = [m for m in MUTANTS if m.name in wanted]
    if args.list:
        for m in mutants:
            print(f"{m.name}: {m.what}\n  {m.path}")
            for old, new in m.replace:
                print(f"    - {old.strip()!r}\n    + {new.strip()!r}")
            print(f"  tests: {'the whole suite' if args.full and not args.tests else args.tests or ' '.join(m.tests)}")
        return 0

    chosen = [t.strip() for t in args.tests.split(",") if t.strip()] if args.tests else None
    problems = check_targets(ROOT, mutants)
    if problems:
        print("mutants out of date with the code (update their target strings):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="dslrec-mutants-"))
    copy = tmp / "repo"
    try:
        copy_repository(ROOT, copy)
        env = dict(os.environ, PYTHONPATH=str(copy / "src"))
        where = subprocess.run([sys.executable, "-c", "import dslrec; print(dslrec.__file__)"], cwd=copy, env=env,
                               capture_output=True, text=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(copy.resolve()):
            print(f"the copy's dslrec is not the one imported ({where}); cannot test mutants", file=sys.stderr)
            return 2
        def files(m: Mutant) -> list[str]:
            return chosen if chosen else ["tests"] if args.full else list(m.tests)

        if not args.no_baseline:
            union = sorted({t for m in mutants for t in files(m)})
            rc, out, secs = run_pytest(copy, union, args.timeout)
            print(f"baseline (unmutated copy, {' '.join(union)}): {'passed' if rc == 0 else 'FAILED'} in {secs:.0f} s",
                  flush=True)
            if rc != 0:
                print(out[-3000:], file=sys.stderr)
                print("the unmutated copy fails its tests: mutants cannot be judged", file=sys.stderr)
                return 2

        rows = []
        for m in mutants:
            path = copy / m.path
            original = path.read_text()
            text = original
            for old, new in m.replace:
                text = text.replace(old, new, 1)
            path.write_text(text)
            try:
                rc, out, secs = run_pytest(copy, files(m), args.timeout)
            finally:
                path.write_text(original)
            verdict = {0: "MISSED", 1: "caught"}.get(rc, "ERROR")
            by = failed_tests(out)
            note = by[0] if by else ("" if rc == 0 else out.strip().splitlines()[-1][:120] if out.strip() else "")
            rows.append((m, verdict, secs, note))
            print(f"  {m.name}: {verdict} ({secs:.0f} s) {note}", flush=True)
            if verdict == "ERROR":
                print(out[-2000:], file=sys.stderr)
    finally:
        if args.keep:
            print(f"copy kept in {copy}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| mutant | breakage | file | result | caught by (first failing test) | s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for m, verdict, secs, note in rows:
        print(f"| {m.name} | {m.what} | {m.path.removeprefix('src/dslrec/')} | {verdict} | {note} | {secs:.0f} |")
    missed = [m.name for m, v, _, _ in rows if v != "caught"]
    print(f"\n{len(rows) - len(missed)} of {len(rows)} mutants caught"
          + (f"; not caught: {', '.join(missed)}" if missed else ""))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
