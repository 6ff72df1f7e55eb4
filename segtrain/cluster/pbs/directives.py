"""qsub options, from a command line or from a job script's ``#PBS`` directives, parsed alike.

The local PBS-like runner needs what the server would derive from a submission (name,
walltime, select, variables, dependency, output joining), and the job needs its script's own
walltime directive when ``qstat`` cannot answer. qsub's rules apply: directives are read up to
the first executable line, and an option given on the command line wins over the same option
in a directive (for ``-l``, resource by resource).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Optional, Sequence

from segtrain.cluster.scheduler import read_directives
from segtrain.errors import UserError

# qsub options that take a value, by the attribute they set here; flags take none.
VALUE_OPTIONS = {"N": "name", "l": "resources", "v": "variables", "W": "attributes", "j": "join", "o": "output",
                 "e": "error", "S": "shell", "J": "array", "q": "queue", "m": "mail_events", "M": "mail_users",
                 "A": "account", "P": "project", "r": "rerunnable", "k": "keep"}
FLAG_OPTIONS = {"V", "h", "z"}
# Characters whose meaning in ``-v`` lists differs between qsub versions (quoting, escaping);
# segtrain never sends them (see submit.encode_value) and the local qsub refuses them.
V_SPECIAL = set(",'\"\\")
_ARRAY_RANGE = re.compile(r"^(\d+)-(\d+)(?::(\d+))?$")


@dataclass(frozen=True)
class JobRequest:
    """What one ``qsub`` asks for; unset options are None (or empty)."""
    script: Optional[Path] = None
    name: Optional[str] = None
    resources: dict[str, str] = field(default_factory=dict)  # e.g. select, walltime
    variables: dict[str, str] = field(default_factory=dict)
    attributes: dict[str, str] = field(default_factory=dict)  # -W key=value, e.g. depend
    join: Optional[str] = None
    output: Optional[str] = None
    error: Optional[str] = None
    shell: Optional[str] = None
    array: Optional[str] = None
    queue: Optional[str] = None
    mail_events: Optional[str] = None
    mail_users: Optional[str] = None
    account: Optional[str] = None
    project: Optional[str] = None
    rerunnable: Optional[str] = None
    keep: Optional[str] = None
    export_all: bool = False  # -V
    hold: bool = False  # -h: queued held until qrls

    def merged_over(self, base: "JobRequest") -> "JobRequest":
        """This request (the command line) with ``base`` (the directives) filling what it leaves unset.

        Except ``-W umask``: the script's wins over the command line's, as a real OpenPBS 23.06 server
        showed (``qsub -W umask=077`` of a script with ``#PBS -W umask=022`` ran with 022); ``qalter``
        of the queued job changes it.
        """
        values = {}
        for name in JobRequest.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(base, name)
            if isinstance(mine, dict):
                values[name] = {**theirs, **mine}
            else:
                values[name] = mine if mine not in (None, False) else theirs
        if "umask" in base.attributes:
            values["attributes"]["umask"] = base.attributes["umask"]
        return JobRequest(**values)

    def directives(self) -> list[str]:
        """The request as ``#PBS`` lines, ``-v`` left out (its values are shown decoded elsewhere)."""
        lines = []
        for letter, name in VALUE_OPTIONS.items():
            value = getattr(self, name)
            if name == "resources":
                lines += [f"#PBS -l {key}={val}" for key, val in value.items()]
            elif name == "attributes":
                lines += [f"#PBS -W {key}={val}" for key, val in value.items()]
            elif value and name != "variables":
                lines.append(f"#PBS -{letter} {value}")
        return lines + (["#PBS -V"] if self.export_all else [])


def parse_select(text: str, where: str = "select") -> list[tuple[int, dict[str, str]]]:
    """``2:ncpus=4:mem=8gb+1:ncpus=1`` as [(chunks, {resource: value}), ...]; the count defaults to 1."""
    chunks = []
    for spec in text.split("+"):
        parts = spec.split(":")
        count = 1
        if parts[0].strip().isdigit():
            count = int(parts.pop(0))
        elif parts[0] == "":
            parts.pop(0)
        resources = {}
        for part in parts:
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise UserError(f"{where}: {text!r}: expected N:resource=value:..., got {part!r}")
            resources[key.strip()] = value.strip()
        chunks.append((count, resources))
    return chunks


def parse_array_range(text: str, where: str = "qsub -J") -> list[int]:
    """The indices of ``X-Y[:Z]`` (qsub's form: X < Y, step Z >= 1)."""
    match = _ARRAY_RANGE.match(text.strip())
    if not match or int(match.group(1)) >= int(match.group(2)) or (match.group(3) and int(match.group(3)) < 1):
        raise UserError(f"{where} {text!r}: expected X-Y[:Z] with X < Y (a job array has at least two subjobs)")
    return list(range(int(match.group(1)), int(match.group(2)) + 1, int(match.group(3) or 1)))


def parse_qsub_args(argv: Sequence[str], environ: Optional[Mapping[str, str]] = None,
                    where: str = "qsub") -> JobRequest:
    """Parse qsub's options (getopt style: ``-N name`` or ``-Nname``) and the optional script."""
    environ = os.environ if environ is None else environ
    values: dict = {"resources": {}, "variables": {}, "attributes": {}}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        letter = arg[1]
        if letter in FLAG_OPTIONS and len(arg) == 2:
            if letter == "V":
                values["export_all"] = True
            elif letter == "h":
                values["hold"] = True
            i += 1
            continue
        if letter not in VALUE_OPTIONS:
            raise UserError(f"{where}: option {arg} is not supported here")
        if len(arg) > 2:
            value = arg[2:]
        elif i + 1 < len(args):
            i += 1
            value = args[i]
        else:
            raise UserError(f"{where}: option -{letter} needs a value")
        _set_option(values, VALUE_OPTIONS[letter], value, environ, where)
        i += 1
    rest = args[i:]
    if len(rest) > 1:
        raise UserError(f"{where}: expected one job script after the options, got {' '.join(rest)}")
    return JobRequest(script=Path(rest[0]) if rest else None, **values)


def script_request(script: str | Path) -> JobRequest:
    """The request a script's directives alone make."""
    return parse_qsub_args(read_directives(script, "#PBS"), where=f"{script}: directive")


def job_request(argv: Sequence[str], environ: Optional[Mapping[str, str]] = None,
                cwd: Optional[Path] = None) -> JobRequest:
    """A qsub command line merged over its script's directives: what the server would queue.

    A relative script path is taken from ``cwd`` (qsub's working folder), default the process's.
    """
    cmdline = parse_qsub_args(argv, environ)
    if cmdline.script is None:
        raise UserError("qsub: no job script given (reading a script from stdin is not supported here)")
    script = Path(cwd or Path.cwd()) / cmdline.script
    if not script.is_file():
        raise UserError(f"qsub: cannot access script file {cmdline.script}")
    return replace(cmdline.merged_over(script_request(script)), script=script)


def _set_option(values: dict, attr: str, value: str, environ: Mapping[str, str], where: str) -> None:
    if attr == "resources":
        for item in value.split(","):
            key, sep, val = item.partition("=")
            if not sep or not key:
                raise UserError(f"{where}: -l {value!r}: expected resource=value")
            values["resources"][key.strip()] = val.strip()
    elif attr == "variables":
        values["variables"].update(parse_variable_list(value, environ, where))
    elif attr == "attributes":
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise UserError(f"{where}: -W {value!r}: expected attribute=value")
        values["attributes"][key.strip()] = val.strip()
    else:
        values[attr] = value


def parse_variable_list(text: str, environ: Mapping[str, str], where: str = "qsub") -> dict[str, str]:
    """``A=1,B=2,C`` (a bare name takes its value from the environment, as qsub does)."""
    bad = V_SPECIAL & (set(text) - {","})
    if bad:
        raise UserError(f"{where}: -v {text!r}: quotes and backslashes are not supported here; "
                        "scripts/submit encodes such values safely")
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not name:
            raise UserError(f"{where}: -v {text!r}: empty variable name")
        if not sep:
            if name not in environ:
                raise UserError(f"{where}: -v {name}: not set in the environment, cannot send it with the job")
            value = environ[name]
        out[name] = value
    return out
