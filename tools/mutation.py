"""Mutation testing of merdg's core, one module at a time (mutmut 3, https://mutmut.readthedocs.io).

For each module named in ``tools/mutation.toml`` this script:

1. copies ``src/``, ``tests/`` and what tests read (``docs/``, ``README.md``, ``benchmarks/``)
   into a scratch folder ``.mutation/<module>/`` (created by this script and marked as such; the
   repository itself is never modified);
2. writes a ``[tool.mutmut]`` configuration there that mutates only that module's file and runs
   only the module's test files (mutmut then runs, for each mutant, only the tests that call the
   mutated function);
3. runs ``nice -n 19 mutmut run --max-children 1`` with ``OMP_NUM_THREADS=1`` under a time limit
   (the development machines and CI have 2 shared cores);
4. reads mutmut's verdicts, sets aside the survivors listed as *equivalent* in
   ``tools/mutation.toml`` (each with the mutated line and the reason it changes no behaviour,
   matched by name, or by function and mutated line after a renumbering; an entry that matches
   no survivor is reported as stale) and
   prints the score ``killed / (mutants - equivalent)`` per module, with every other survivor's
   diff. Mutants of code that runs only at import time can be left out of the score by the
   module's ``exclude`` globs (mutmut switches mutants per test, after the import).

Exit status: 0 when every module reaches ``--min-score`` (default: ``min_score`` in the
configuration), 1 otherwise, 2 on a usage or tool error.

Usage:
    python tools/mutation.py losses.mer                # one module
    python tools/mutation.py losses.mer run.selection  # several, one after the other
    python tools/mutation.py --all                     # every configured module
    python tools/mutation.py --list                    # the modules and their tests
    python tools/mutation.py --rescore MODULE          # score the last run again (no mutmut)
    python tools/mutation.py --equivalents             # the equivalence list as markdown
    make mutation MODULE=losses.mer                    # the same through make
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "tools" / "mutation.toml"
WORK = ROOT / ".mutation"
MARKER = ".merdg-mutation"  # only folders holding this file are ever deleted
ALSO_COPY = ("docs", "README.md", "benchmarks")

# mutmut's exit codes (mutmut/stats.py): what counts as a killed mutant.
KILLED = {1, 3, 24, -24, 36, 152, 255, 37}
SURVIVED = {0}
NO_TESTS = {5, 33}


@dataclass
class Module:
    name: str
    source: str
    tests: list[str]
    functions: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)
    timeout_s: int = 1800


@dataclass
class Equivalent:
    mutant: str
    change: str
    reason: str


@dataclass
class Score:
    module: str
    total: int = 0
    killed: int = 0
    equivalent: int = 0
    survivors: dict[str, str] = field(default_factory=dict)  # mutant -> its diff
    stale: list[str] = field(default_factory=list)
    no_tests: list[str] = field(default_factory=list)
    error: str = ""

    @property
    def scored(self) -> int:
        return self.total - self.equivalent

    @property
    def score(self) -> float:
        return self.killed / self.scored if self.scored else 1.0


def load_config(path: Path = CONFIG) -> tuple[dict[str, Module], list[Equivalent], float]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    modules = {}
    for name, entry in data.get("modules", {}).items():
        unknown = set(entry) - {"source", "tests", "functions", "exclude", "timeout_s"}
        if unknown:
            raise SystemExit(f"{path.name}: module {name!r} has unknown keys {sorted(unknown)}")
        modules[name] = Module(name=name, **entry)
        for rel in [modules[name].source, *modules[name].tests]:
            if not (ROOT / rel).exists():
                raise SystemExit(f"{path.name}: module {name!r} names {rel}, which does not exist")
    equivalents = [Equivalent(**e) for e in data.get("equivalent", [])]
    return modules, equivalents, float(data.get("min_score", 0.9))


def dotted(source: str) -> str:
    """``src/merdg/losses/mer.py`` -> ``merdg.losses.mer`` (mutmut's mutant-name prefix)."""
    return ".".join(Path(source).with_suffix("").parts[1:])


def mutant_globs(module: Module) -> list[str]:
    prefix = dotted(module.source)
    return [f"{prefix}.{f}" for f in module.functions] or [f"{prefix}.*"]


def prepare(module: Module) -> Path:
    work = WORK / module.name
    if work.exists():
        if not (work / MARKER).exists():
            raise SystemExit(f"{work} exists but was not made by this script; move it away")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / MARKER).write_text("scratch folder of tools/mutation.py; safe to delete\n")
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    for extra in ALSO_COPY:  # files some tests read (the docs' tables, the README's command)
        if (ROOT / extra).is_dir():
            shutil.copytree(ROOT / extra, work / extra, ignore=ignore)
        elif (ROOT / extra).exists():
            shutil.copy2(ROOT / extra, work / extra)
    config = {
        "source_paths": ["src"],
        "also_copy": [p for p in ALSO_COPY if (ROOT / p).exists()],
        "only_mutate": [module.source],
        "pytest_add_cli_args_test_selection": module.tests,
        "pytest_add_cli_args": ["-p", "no:cacheprovider", "-q"],
    }
    lines = ["[tool.mutmut]"] + [f"{k} = {json.dumps(v)}" for k, v in config.items()]
    pytest_ini = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    ini = re.search(r"^\[tool\.pytest\.ini_options\].*?(?=^\[|\Z)", pytest_ini, re.S | re.M)
    (work / "pyproject.toml").write_text("\n".join(lines) + "\n\n" + (ini.group(0) if ini else ""))
    return work


def run_mutmut(module: Module, work: Path) -> str:
    """Run mutmut in ``work``; return "" or a one-line error."""
    # mutants must not write into the user's data cache (a mutated check could record bad data
    # as verified there): each module's run has its own cache folder
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1",
               MERDG_CACHE_DIR=str(work / "cache"))
    mutmut = [sys.executable, "-m", "mutmut"]
    cmd = ["nice", "-n", "19", *mutmut, "run", "--max-children", "1", *mutant_globs(module)]
    log = work / "mutmut.log"
    with open(log, "w") as out:
        # its own process group, so that a time-out or an interrupt ends mutmut's workers too
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=module.timeout_s)
        except subprocess.TimeoutExpired:
            _stop(proc)
            return f"mutmut ran past {module.timeout_s} s (see {log}); scored what it finished"
        except BaseException:
            _stop(proc)
            raise
    if proc.returncode != 0:
        lines = log.read_text(errors="replace").strip().splitlines()
        tail = [line for line in lines if line.startswith(("FAILED", "ERROR"))][:3] + lines[-1:]
        return f"mutmut exited {proc.returncode} (see {log}): " + " | ".join(tail)
    return ""


def _stop(proc: subprocess.Popen) -> None:
    """End mutmut and the workers it forked (its process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


DIFFS = """\
import json, sys
from pathlib import Path
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
print(json.dumps({n: get_diff_for_mutant(n, path=Path(sys.argv[1])) for n in names}))
"""


def mutant_diffs(work: Path, source: str, mutants: list[str]) -> dict[str, str]:
    """The diff of each mutant (its changed lines), in one process (``mutmut show`` per mutant
    when mutmut's internal API is not there)."""
    if not mutants:
        return {}
    proc = subprocess.run([sys.executable, "-c", DIFFS, source], cwd=work, text=True,
                          input=json.dumps(mutants), capture_output=True)
    try:
        diffs = json.loads(proc.stdout)
    except json.JSONDecodeError:
        diffs = {m: subprocess.run([sys.executable, "-m", "mutmut", "show", m], cwd=work,
                                   capture_output=True, text=True).stdout for m in mutants}
    return {m: "\n".join(line for line in diffs[m].splitlines()
                         if line[:1] in ("-", "+") and line[:3] not in ("---", "+++"))
            for m in mutants}


def _function(mutant: str) -> str:
    """``pkg.mod.x_fn__mutmut_3`` -> ``pkg.mod.x_fn``."""
    return mutant.rsplit("__mutmut_", 1)[0]


def added_lines(diff: str) -> list[str]:
    return [line[1:].strip() for line in diff.splitlines()
            if line.startswith("+") and not line.startswith("+++")]


def score(module: Module, work: Path, equivalents: list[Equivalent]) -> Score:
    result = Score(module.name)
    meta = work / "mutants" / (module.source + ".meta")
    if not meta.exists():
        result.error = f"no verdicts: {meta.relative_to(ROOT)} is missing"
        return result
    verdicts = json.loads(meta.read_text())["exit_code_by_key"]
    globs = mutant_globs(module)
    known = {e.mutant: e for e in equivalents}
    excluded = [f"{dotted(module.source)}.{f}" for f in module.exclude]
    selected = {m: c for m, c in sorted(verdicts.items())
                if any(fnmatch.fnmatch(m, g) for g in globs)
                and not any(fnmatch.fnmatch(m, g) for g in excluded)}
    diffs = mutant_diffs(work, module.source,
                         [m for m, c in selected.items() if c in SURVIVED | NO_TESTS])
    # an entry is matched by its mutant's name, or by the function and the mutated line when a
    # change elsewhere in the function renumbered the mutants
    by_change = {(_function(e.mutant), e.change.strip()): e for e in equivalents}
    matched: set[str] = set()
    for mutant, code in selected.items():
        result.total += 1
        if code in KILLED:
            result.killed += 1
            continue
        if code not in SURVIVED | NO_TESTS:  # not run (None), segfault, suspicious, ...
            result.survivors[mutant] = f"(not killed: mutmut exit code {code})"
            continue
        diff = diffs[mutant]
        added = added_lines(diff)
        entry = known.get(mutant)
        if entry is None or entry.change.strip() not in added:
            entry = next((by_change[(_function(mutant), line)] for line in added
                          if (_function(mutant), line) in by_change), None)
        if code in SURVIVED and entry is not None and entry.mutant not in matched:
            matched.add(entry.mutant)
            result.equivalent += 1
            continue
        if code in NO_TESTS:
            result.no_tests.append(mutant)
        result.survivors[mutant] = diff
    listed = {e.mutant for e in equivalents if e.mutant.startswith(dotted(module.source) + ".")}
    result.stale = sorted(listed - matched)
    return result


def report(scores: list[Score], min_score: float) -> bool:
    ok = True
    for s in scores:
        if s.error:
            print(f"\n{s.module}: {s.error}")
        if s.survivors:
            print(f"\n{s.module}: {len(s.survivors)} surviving mutant(s) not listed as equivalent")
            for mutant, diff in s.survivors.items():
                note = " (no test covers it)" if mutant in s.no_tests else ""
                print(f"  {mutant}{note}\n    " + diff.replace("\n", "\n    "))
        for mutant in s.stale:
            print(f"  stale equivalence entry (mutant renumbered, killed or gone): {mutant}")
    print(f"\n{'module':<28}{'mutants':>8}{'killed':>8}{'equiv.':>8}{'survived':>9}{'score':>8}")
    for s in scores:
        shown = f"{100 * s.score:>7.1f}%" if s.total and not s.error else f"{'failed':>8}"
        print(f"{s.module:<28}{s.total:>8}{s.killed:>8}{s.equivalent:>8}{len(s.survivors):>9}"
              f"{shown}")
        ok = ok and not s.error and s.total > 0 and s.score >= min_score
    print(f"\nscore = killed / (mutants - equivalent); required: {100 * min_score:.0f}% per module")
    return ok


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # so that run_mutmut ends mutmut's process group


def equivalents_markdown(modules: dict[str, Module], equivalents: list[Equivalent]) -> str:
    """The equivalence list as a markdown table (module, function, mutated line, reason)."""
    by_prefix = {dotted(m.source) + ".": name for name, m in modules.items()}
    lines = ["| module | mutant | mutated line | why it changes nothing |", "|---|---|---|---|"]
    for e in equivalents:
        prefix = next((p for p in by_prefix if e.mutant.startswith(p)), "")
        short = e.mutant[len(prefix):].replace("\u01c1", ".")
        change = e.change.replace("|", "\\|")
        lines.append(f"| {by_prefix.get(prefix, '?')} | `{short}` | `{change}` | {e.reason} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="module names of tools/mutation.toml")
    parser.add_argument("--all", action="store_true", help="every configured module")
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    parser.add_argument("--min-score", type=float, help="required score (0-1) per module")
    parser.add_argument("--equivalents", action="store_true",
                        help="print the equivalent mutants as a markdown table and exit")
    parser.add_argument("--rescore", action="store_true",
                        help="score the last run's verdicts again (after editing the "
                             "equivalence list) without running mutmut")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupted)
    modules, equivalents, min_score = load_config()
    if args.min_score is not None:
        min_score = args.min_score
    if args.equivalents:
        print(equivalents_markdown(modules, equivalents))
        return 0
    if args.list:
        for m in modules.values():
            print(f"{m.name:<28}{m.source}  <- {' '.join(m.tests)}")
        return 0
    names = list(modules) if args.all else args.modules
    unknown = [n for n in names if n not in modules]
    if not names or unknown:
        print(f"name modules to test (or --all); unknown: {unknown}; "
              f"configured: {', '.join(modules)}", file=sys.stderr)
        return 2
    if shutil.which("nice") is None:
        print("`nice` is not on PATH", file=sys.stderr)
        return 2
    if not args.rescore and importlib.util.find_spec("mutmut") is None:
        print(f"mutmut is not installed in {sys.executable}: pip install -e '.[dev]'",
              file=sys.stderr)
        return 2
    scores = []
    for name in names:
        module, start = modules[name], time.monotonic()
        work = WORK / name
        error = ""
        if not args.rescore:
            print(f"{name}: mutating {module.source} against {len(module.tests)} test file(s)",
                  flush=True)
            work = prepare(module)
            error = run_mutmut(module, work)
        s = score(module, work, equivalents)
        s.error = error or s.error  # mutmut's own failure first: it explains missing verdicts
        scores.append(s)
        print(f"{name}: {s.killed}/{s.scored} killed ({100 * s.score:.1f}%) in "
              f"{time.monotonic() - start:.0f} s", flush=True)
    return 0 if report(scores, min_score) else 1


if __name__ == "__main__":
    sys.exit(main())
