"""`tokenforge demo`: the main job end to end on the bundled real data, for every method that brings a demo part.

    tokenforge demo [--out outputs/demo] [--methods vqgan,gpt,...] [--steps small|default] [--device cuda --preset small]

Bundled samples (``tokenforge/samples``: photos, labelled face crops, 24 kHz speech, meshes; sources and
licences in its ATTRIBUTION.md) -> raw shards -> fit the tiny config of every tokenizer on the samples of its
modality -> reconstruct held-out files with ``tokenforge reconstruct`` -> evaluate on the validation shards ->
encode the faces into the token / latent shards the generators learn -> fit the generators -> sample and decode
with ``tokenforge generate`` -> each method's trivial baseline and paper claim -> ``summary.json``,
``results.md`` and the HTML report ``index.html``. The stages come from the methods: each declares its part
(`tokenforge.methods.Method.demo`, a `tokenforge.demo_stages.DemoPart`). Each stage prints one line; a failed
stage is reported and the stages that do not need it still run.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from tokenforge.demo_stages import DATA_KINDS, DemoPart, Run, Stage, make_data
from tokenforge.methods import load_target, registry
from tokenforge.report import metric_rows, write_report

SMALL_STEPS = 3  # optimiser steps of every part under --steps small (a smoke test)


@cache
def _declared() -> tuple[dict[str, DemoPart], dict[str, str]]:
    """(part name -> part, in `registry` order: tokenizers first; accepted name -> part name)."""
    found, names = {}, {}
    for method in registry().values():
        if method.demo:
            part = load_target(method.demo)()
            found[part.name] = part
            names.update({name: part.name for name in (method.name, *method.aliases)})
    return found, {**names, **{name: name for name in found}}


def parts() -> dict[str, DemoPart]:
    """Every installed method's demo part by part name, tokenizers first."""
    return _declared()[0]


def part_name(name: str) -> str | None:
    """The part ``--methods`` means by ``name`` (a part's name, or its method's name or alias), else None."""
    return _declared()[1].get(name)


def declared(names: list[str]) -> dict[str, dict[str, str]]:
    """What the report and tables show of each part, kept in summary.json (the report imports no method):
    ``modalities`` (its label), ``claims`` (its claim's title), ``expect`` (what its outputs look like)."""
    every = parts()
    return {"modalities": {n: every[n].label for n in names}, "claims": {n: every[n].claim_title for n in names},
            "expect": {n: every[n].expect for n in names}}


def steps_table(preset: str) -> dict[str, int]:
    """Optimiser steps per part: ``small`` (a smoke test), ``default`` (2 idle CPU cores, ~10 minutes in all) or
    ``long`` (for ``--device cuda --preset small``; not timed here)."""
    return {name: SMALL_STEPS if preset == "small" else part.steps[preset] for name, part in parts().items()}


STEP_PRESETS = ("small", "default", "long")


def _needed(names: list[str]) -> list[str]:
    """``names`` and every part they require, transitively."""
    found, todo = [], list(names)
    while todo:
        name = todo.pop()
        if name not in found:
            found.append(name)
            todo += parts()[name].requires
    return found


def plan(names: list[str]) -> list[Stage]:
    """The stages of the parts ``names``, the data and the parts they need first, then their baselines and claims,
    in run order (a stage listed by two parts runs once)."""
    every = parts()
    needed = set(_needed(names))
    stages: list[Stage] = [(f"data/{kind}", lambda run, kind=kind: make_data(run, kind), ())
                           for kind in DATA_KINDS if any(kind in every[n].data for n in needed)]
    for name, part in every.items():
        if name in needed:
            stages += part.stages
    for name, part in every.items():  # every part's trivial baseline and paper claim, after all the own stages
        if name in names:
            stages += [*part.baseline, *part.claim]
    seen: set[str] = set()
    return [stage for stage in stages if not (stage[0] in seen or seen.add(stage[0]))]


class Stages:
    """Runs named stages, prints a line per stage, records results and failures for summary.json."""

    def __init__(self, run: Run) -> None:
        self.run_state = run
        self.report: dict[str, Any] = run.results

    def run(self, name: str, fn: Callable[[Run], Any], needs: tuple[str, ...] = ()) -> Any:
        missing = [n for n in needs if self.report.get(n, {}).get("status") != "ok"]
        if missing:
            self.report[name] = {"status": "skipped", "reason": f"needs {', '.join(missing)}"}
            print(f"[demo] {name:<22} skipped (needs {', '.join(missing)})", flush=True)
            return None
        print(f"[demo] {name:<22} ...", flush=True)
        start = time.perf_counter()
        try:
            result = fn(self.run_state)
        except Exception as error:  # report and go on: later stages that can run still run
            traceback.print_exc()
            self.report[name] = {"status": "failed", "error": f"{type(error).__name__}: {error}",
                                 "seconds": round(time.perf_counter() - start, 1)}
            print(f"[demo] {name:<22} FAILED: {error}", flush=True)
            return None
        seconds = time.perf_counter() - start
        self.report[name] = {"status": "ok", "seconds": round(seconds, 1), **(result or {})}
        shown = {k: v for k, v in (result or {}).items()
                 if k in ("metrics", "splits", "rejected", "steps", "unigram_entropy_nats", "codes_used")}
        print(f"[demo] {name:<22} ok in {seconds:.1f} s {json.dumps(shown)}", flush=True)
        return result


def _cell(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else ("" if value is None else str(value))


def results_table(summary: dict[str, Any]) -> str:
    """Markdown: each method's held-out numbers beside a trivial baseline's, then each paper claim as measured."""
    lines = [f"Produced by `{summary['command']}` ({summary['device']}, steps={summary['steps_preset']}, "
             f"wall time {summary['wall_seconds']:.0f} s). Tiny configs after seconds of CPU training: the numbers "
             "show that each chain works end to end, not what the method reaches; they vary slightly across CPUs.",
             "", "| method | modality | metric | model | trivial baseline |", "|---|---|---|---|---|"]
    labels, titles = summary.get("modalities", {}), summary.get("claims", {})
    for method in summary["methods"]:
        rows = metric_rows(summary, method)
        name = (summary["stages"].get(f"{method}/baseline") or {}).get("baseline", "")
        for stage, key, value, base in rows:
            shown = f"{_cell(base)} ({name})" if base is not None else ""
            lines.append(f"| {method} | {labels.get(method, '')} | {stage}: {key} | {_cell(value)} | {shown} |")
        if not rows:
            statuses = {k: v["status"] for k, v in summary["stages"].items() if k.startswith(method + "/")}
            lines.append(f"| {method} | {labels.get(method, '')} | status | {statuses or 'not run'} | |")
    claims = [(m, summary["stages"][f"{m}/claim"]) for m in summary["methods"] if f"{m}/claim" in summary["stages"]]
    if claims:
        lines += ["", "Paper claims, measured on this machine (ratios matter; absolute times depend on the CPU):", "",
                  "| method | claim | measured here |", "|---|---|---|"]
        for method, result in claims:
            seen = result.get("verdict") if result["status"] == "ok" else f"{result['status']}: " + str(
                result.get("error") or result.get("reason"))
            lines.append(f"| {method} | {result.get('claim', titles.get(method, ''))} | {seen} |")
    return "\n".join(lines) + "\n"


def selector(only: str | None, out: Path, run: Run) -> Callable[[str], bool]:
    """Which stages to run: all, or with ``only`` the named stages / prefixes, the others' results being read
    back from ``out/summary.json`` (a stage absent there stays absent, so stages that need it are skipped)."""
    if not only:
        return lambda name: True
    previous = out / "summary.json"
    if previous.is_file():
        run.results.update(json.loads(previous.read_text()).get("stages", {}))
    wanted = [w.strip().rstrip("/") for w in only.split(",") if w.strip()]
    return lambda name: any(name == w or name.startswith(w + "/") for w in wanted)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tokenforge demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("outputs/demo"), help="output folder (outputs/demo)")
    every = ",".join(parts())
    parser.add_argument("--methods", default=every, help=f"comma-separated subset of {every} (or method names)")
    parser.add_argument("--steps", choices=STEP_PRESETS, default=None,
                        help="step table: small (smoke test), default (CPU, ~10 min), long (GPU; default with --preset small)")
    parser.add_argument("--preset", choices=("tiny", "small"), default="tiny",
                        help="config size: tiny (CPU) or small (configs' small.yaml where it exists, GPU)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: tiny models gain little more)")
    parser.add_argument("--no-report", action="store_true", help="skip index.html")
    parser.add_argument("--only", default=None,
                        help="comma-separated stages or stage prefixes to (re)run, e.g. 'data/photos,encode'; the "
                             "other stages keep their results from the summary.json already in --out")
    args = parser.parse_args(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in methods if part_name(m) is None]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {every}")
    methods = list(dict.fromkeys(part_name(m) for m in methods))
    steps_name = args.steps or ("long" if args.preset == "small" else "default")

    import torch

    if args.device == "cpu":  # tiny models: more threads than free cores make them many times slower
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    steps = steps_table(steps_name)
    run = Run(out=out, device=args.device, steps=steps, preset=args.preset)
    stages = Stages(run)
    selected = selector(args.only, out, run)
    for name, fn, needs in plan(methods):
        if selected(name):
            stages.run(name, fn, needs)
    wall = time.perf_counter() - started
    summary = {"command": "tokenforge demo " + " ".join(argv if argv is not None else []),
               "device": args.device, "preset": args.preset, "steps_preset": steps_name, "steps": steps,
               "methods": methods, **declared(methods),
               "wall_seconds": round(wall, 1), "stages": run.results}
    summary["command"] = summary["command"].strip()
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "results.md").write_text(results_table(summary))
    if not args.no_report:
        page = write_report(out)
        print(f"[demo] report: {page}")
    failed = [name for name, r in run.results.items() if r["status"] != "ok"]
    print(f"[demo] {len(run.results)} stages in {wall:.0f} s; wrote {out / 'summary.json'}, {out / 'results.md'}"
          + (f"; not ok: {', '.join(failed)}" if failed else "; all ok"), flush=True)
    return 1 if failed else 0

