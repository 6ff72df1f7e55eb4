"""The stand-ins for ``qsub``, ``qstat``, ``qdel``, ``qrerun``, ``qextend``, ``qalter``, ``qrls``, ``clean_scratch``
and ``pbsdsh`` that a local job finds on its PATH (and a user runs as ``python -m segtrain.cluster.pbs.local NAME``)."""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from segtrain.cluster.pbs.local.server import QUEUE, LocalJob, LocalServer, describe, process_tree
from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.cluster.site import get_site
from segtrain.errors import UserError


def standin_qsub(argv: Sequence[str]) -> int:
    server = LocalServer()
    parent = server.get(os.environ.get("PBS_JOBID", ""))
    site = get_site(parent.site) if parent else None
    job = server.submit(argv, os.environ, Path.cwd(), site=site, chain=parent.chain if parent else None)
    print(job.id)
    return 0


def standin_qstat(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="qstat")
    parser.add_argument("-f", action="store_true")
    parser.add_argument("-x", action="store_true")
    parser.add_argument("-t", action="store_true", help="an array's subjobs too")
    parser.add_argument("ids", nargs="*")
    args = parser.parse_args(argv)
    server = LocalServer()
    history = server.settings.job_history
    rc = 0
    for job_id in args.ids:  # like qstat: a bad id is reported, the others are still shown
        job = server.get(job_id)
        if job is None or (job.state == "F" and not history):  # without history, finished jobs are gone
            print(f"qstat: Unknown Job Id {job_id}", file=sys.stderr)
            rc = 153
            continue
        for shown in [job] + (server.subjobs(job) if args.t else []):
            if shown.state == "F" and not args.x:
                print(f"qstat: {shown.id} Job has finished, use -x or -H to obtain historical job information",
                      file=sys.stderr)
                rc = 35
                continue
            print(full_status(shown) + "\n" if args.f else f"{shown.id:<16} {shown.name:<16} {shown.state}")
    return rc


def standin_qdel(argv: Sequence[str]) -> int:
    """``qdel ID...``: the runner of each job ends it as PBS does (top shell at once, SIGTERM, SIGKILL)."""
    server = LocalServer()
    rc = 0
    for job_id in argv:
        job = server.get(job_id)
        if job is None or job.state == "F":
            print(f"qdel: {'Job has finished' if job else 'Unknown Job Id'} {job_id}", file=sys.stderr)
            rc = 35 if job else 153
            continue
        for deleted in [job] + server.subjobs(job):
            server.request_delete(deleted.id)
    return rc


def standin_qrerun(argv: Sequence[str]) -> int:
    """``qrerun ID...``: each running job is ended as by ``qdel`` and queued again under its id."""
    server = LocalServer()
    rc = 0
    for job_id in argv:
        try:
            server.request_rerun(job_id)
        except UserError as exc:
            print(exc, file=sys.stderr)
            rc = 1
    return rc


def standin_qextend(argv: Sequence[str]) -> int:
    """``qextend JOB_ID ADDITIONAL_WALLTIME`` (seconds or HH:MM:SS), as MetaCentrum's walltime-extender
    answers it; its quota (20 extensions and 2880 CPU-hours in 30 days) is not imitated."""
    if len(argv) != 2:
        print("usage: qextend <job_id> <additional_walltime>  (seconds, or hh:mm:ss)", file=sys.stderr)
        return 2
    job_id, added = argv
    seconds = float(added) if added.isdigit() else parse_hms(added, "qextend: additional walltime")
    job = LocalServer().extend(job_id, seconds)
    print(f"The walltime of the job {job.id} has been extended.\nAdditional walltime:\t{format_hms(seconds)}\n"
          f"New walltime:\t\t{job.resources['walltime']}")
    return 0


def standin_qalter(argv: Sequence[str]) -> int:
    """``qalter -W umask=NNN ID``: the umask of a job that has not started (see LocalServer.alter)."""
    if len(argv) < 2:
        print("usage: qalter -W umask=NNN job_identifier", file=sys.stderr)
        return 2
    LocalServer().alter(argv[-1], argv[:-1])
    return 0


def standin_qrls(argv: Sequence[str]) -> int:
    """``qrls ID...``: held jobs are queued. Inside a job the runner of its chain runs them; typed here
    (no ``PBS_JOBID``), the local runner has no queue that runs by itself, so this runs the released
    job and its chain, as ``python -m segtrain.cluster.pbs.local run`` does."""
    server = LocalServer()
    released = [server.release(job_id) for job_id in argv]
    if os.environ.get("PBS_JOBID"):
        return 0
    rc = 0
    for job in released:
        done = server.run_chain(job, sys.stdout.buffer)
        print("\n".join(describe(done)))
        last = done[-1].exit_status if done else None
        rc = rc or (last if last is not None and 0 <= last < 256 else 1)
    return rc


def full_status(job: LocalJob) -> str:
    """The job in ``qstat -f`` form."""
    lines = [f"Job Id: {job.id}", f"    Job_Name = {job.name}", f"    job_state = {job.state}",
             f"    queue = {QUEUE}", f"    Resource_List.ncpus = {job.ncpus}"]
    lines += [f"    {name} = {time.strftime('%a %b %d %H:%M:%S %Y', time.localtime(when))}"
              for name, when in (("qtime", job.submitted), ("stime", job.started)) if when is not None]
    lines += [f"    Resource_List.{key} = {value}" for key, value in sorted(job.resources.items()) if key != "ncpus"]
    if job.run_count:
        lines.append(f"    run_count = {job.run_count}")
    if job.exit_status is not None:
        lines.append(f"    Exit_status = {job.exit_status}")
    if job.depend:
        lines.append(f"    depend = {job.depend}")
    if job.array_indices:
        lines += ["    array = True", f"    array_indices_submitted = {job.array_indices}"]
    if job.array_id:
        lines += [f"    array_id = {job.array_id}", f"    array_index = {job.array_index}"]
    return "\n".join(lines)


def standin_clean_scratch(argv: Sequence[str]) -> int:
    """Empty ``$SCRATCHDIR`` (only ever a scratch folder this runner made)."""
    scratch = Path(os.environ.get("SCRATCHDIR", "")).resolve()
    if not os.environ.get("SCRATCHDIR") or (LocalServer().root / "scratch").resolve() not in scratch.parents:
        print("clean_scratch: SCRATCHDIR is not a scratch folder of the local runner; nothing removed", file=sys.stderr)
        return 1
    for entry in scratch.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    return 0


def standin_pbsdsh(argv: Sequence[str]) -> int:
    """``pbsdsh [-v] -n INDEX -- PROGRAM [ARGS]``: PROGRAM "on" the host of nodefile line INDEX.

    As OpenPBS's pbsdsh does, the task starts in $HOME with the job's environment on that host
    (its $TMPDIR and scratch), inside the job (the walltime's SIGTERM reaches it), its output
    going to the job's; pbsdsh exits 0 whatever the task did and prints
    ``pbsdsh: task 0x00000000 exit status N`` when -v is given or N is not 0; on SIGTERM it
    passes the signal on to every process of the task (PBS signals the task's session) and
    exits 1 without waiting for them.
    """
    parser = argparse.ArgumentParser(prog="pbsdsh", description="the local runner's pbsdsh (-c, -s, -o not imitated)")
    parser.add_argument("-n", dest="index", type=int, required=True, help="the vnode (nodefile line) to run on")
    parser.add_argument("-v", dest="verbose", action="store_true", help="report the task's exit status")
    parser.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    program = args.program[1:] if args.program[:1] == ["--"] else args.program
    server = LocalServer()
    job = server.get(os.environ.get("PBS_JOBID", ""))
    if job is None or not program:
        print("pbsdsh: not executing under PBS, or no program given", file=sys.stderr)
        return 1
    site = get_site(job.site)
    tmpdir, scratch = server.node_places(job, site, args.index)
    env = {**server._job_environment(job, site, tmpdir), "PBS_NODENUM": str(args.index),
           "PBS_VNODENUM": str(args.index), "PBS_TASKNUM": "1"}
    if scratch is not None:
        env[site.scratch_variable] = str(scratch)
    task = subprocess.Popen(program, cwd=env["HOME"], env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())

    def pass_on(signum, frame) -> None:
        print(f"pbsdsh: killing task 0x{0:08X} signal {signum}", flush=True)
        for pid in process_tree(task.pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
        os._exit(1)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, pass_on)
    rc = task.wait()
    status = rc if rc >= 0 else 128 - rc
    if args.verbose or status:
        print(f"pbsdsh: task 0x{0:08X} exit status {status}", flush=True)
    return 0
