"""The layering of the package, computed from its source: no import cycle, run/ below cluster/, and the
facts of PBS and Slurm inside their packages (segtrain/cluster/pbs/, segtrain/cluster/slurm/)."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "segtrain"
SCHEDULER_PACKAGES = ("segtrain.cluster.pbs", "segtrain.cluster.slurm")
COMMANDS = {"qsub", "qstat", "qdel", "qrerun", "qextend", "pbsdsh", "sbatch", "squeue", "scontrol", "scancel", "sacct",
            "srun"}
VARIABLE = re.compile(r"\b(?:PBS|SLURM)_[A-Z][A-Z0-9_]*\b")
SHARED_SHELL = ("jobs/common.sh", "jobs/node.sh")  # run under either scheduler


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that importing ``name`` runs: every import in it, at module level or in a function
    (``TYPE_CHECKING`` ones too), with the packages above each imported module (their ``__init__`` runs first)."""
    own = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            words = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(own[:len(own) - node.level + 1] + [node.module or ""]).strip(".") if node.level \
                else node.module
            words = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for word in words:
            while word and word not in known:  # ``from a.b import name``: the module a.b
                word = word.rpartition(".")[0]
            parts = word.split(".") if word else []
            targets |= {".".join(parts[:n]) for n in range(2, len(parts) + 1)} & known.keys()  # and its packages
    ancestors = {".".join(name.split(".")[:n]) for n in range(1, name.count(".") + 2)}
    return targets - ancestors


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph[node]:
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_imports_without_a_cycle_at_module_or_function_level():
    assert cycles(import_graph()) == []


def test_the_graph_sees_imports_in_functions_and_the_packages_above_a_module():
    graph = import_graph()
    assert "segtrain.cluster.frontend" in graph["segtrain.cluster.job.steps"]  # its __init__ runs before .grid
    assert "segtrain.predict" in graph["segtrain.commands.predict"]  # imported inside run()
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_run_directories_know_nothing_of_the_job_layer():
    graph = import_graph()
    below = {name: sorted(t for t in targets if t.startswith("segtrain.cluster"))
             for name, targets in graph.items() if name.startswith("segtrain.run")}
    assert {name: targets for name, targets in below.items() if targets} == {}


def scheduler_words(path: Path, root: Path = REPO) -> list[str]:
    """The strings of a module's code that name a PBS or Slurm command or variable.

    The rule: a string constant (docstrings aside: prose may name anything) whose first word is a scheduler's
    command (a command line, ``argv[0]``, a ``shutil.which`` argument, a command shown to a user) or that names
    a ``PBS_*`` or ``SLURM_*`` variable is that scheduler's fact, and lives in its package.
    """
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return [f"{path.relative_to(root)}:{node.lineno}: {node.value!r}" for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and ((node.value.split() or [""])[0] in COMMANDS or VARIABLE.search(node.value))]


def test_no_module_outside_a_schedulers_package_names_its_commands_or_variables():
    outside = [path for name, path in modules().items() if not name.startswith(SCHEDULER_PACKAGES)]
    assert [word for path in outside for word in scheduler_words(path)] == []


def test_the_rule_catches_a_command_line_and_a_variable_but_not_prose(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('"""Submitted with qsub, as PBS_JOBID says."""\nARGV = ["qstat", "-f"]\nID = "SLURM_JOB_ID"\n'
                      'HINT = "the job script asks qsub nothing"\n')
    assert sorted(word.split(": ", 1)[1] for word in scheduler_words(module, tmp_path)) == ["'SLURM_JOB_ID'", "'qstat'"]


def shell_code(path: Path) -> list[tuple[int, str]]:
    """A shell file's lines of code, comments removed."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        code = re.sub(r"(^|\s)#.*$", "", line)
        if code.strip():
            lines.append((number, code))
    return lines


def test_the_shell_every_job_shares_runs_no_scheduler_command_and_reads_no_scheduler_variable():
    """What differs lives in the scheduler packages and the job scripts' first lines; a message (a double-quoted string) may name a command."""
    found = []
    for name in SHARED_SHELL:
        for number, code in shell_code(REPO / name):
            unquoted = re.sub(r'"(?:[^"\\]|\\.)*"', '""', code)
            if VARIABLE.search(code) or COMMANDS & set(re.findall(r"[\w-]+", unquoted)):
                found.append(f"{name}:{number}: {code.strip()}")
    assert found == []
