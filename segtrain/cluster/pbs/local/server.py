"""The local PBS server: job records, spool copies, scratch folders, and running a job chain."""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Mapping, Optional, Sequence

import segtrain
from segtrain.cluster.pbs.directives import JobRequest, job_request, parse_array_range, parse_qsub_args, parse_select
from segtrain.cluster.pbs.status import qstat_states
from segtrain.cluster.scheduler import JobState
from segtrain.cluster.job_name import check_job_name
from segtrain.cluster.site import Site, get_site, job_name
from segtrain.cluster.variables import display
from segtrain.cluster.walltime import format_hms, parse_hms
from segtrain.errors import UserError
from segtrain.fsutil import atomic_write_json

STATE_VARIABLE = "SEGTRAIN_LOCAL_PBS"
SERVER = "local"
QUEUE = "local"
KILL_DELAY_S = 10.0
DEFAULT_UMASK = 0o077  # what a PBS MOM starts jobs with unless -W umask= says otherwise
SETTINGS_FILE = "server.json"
EXIT_WALLTIME = -29
EXIT_QDEL = 256 + signal.SIGTERM
EXIT_RERUN = -11  # PBS's JOB_EXEC_RERUN: the job is queued again
BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
STANDINS = ("qsub", "qstat", "qdel", "qrerun", "qextend", "qalter", "qrls", "clean_scratch", "pbsdsh")
_JOB_SEQ = re.compile(r"^\d+(\[\d*\])?$")  # 12, 13[] (an array), 13[2] (one of its subjobs)


def default_state_dir() -> Path:
    return Path(os.environ.get(STATE_VARIABLE) or Path.home() / ".cache" / "segtrain" / "local-pbs")


@dataclass
class ServerSettings:
    """How this server behaves where real ones differ (``qmgr``'s part), kept in the state folder.

    The defaults are what a real server showed: SIGKILL 10 s after SIGTERM, the walltime's
    SIGTERM on time here (up to ~25 s late there: ``walltime_late_s``), history kept.
    """
    kill_delay_s: float = KILL_DELAY_S
    walltime_late_s: float = 0.0  # the node daemon polls: SIGTERM comes this long after the walltime
    job_history: bool = True  # False: qstat (-x too) forgets finished jobs, as stock OpenPBS does


@dataclass
class LocalJob:
    """One job's record, kept as JSON in the state folder (what ``qstat -f`` reports)."""
    id: str
    seq: int
    name: str
    site: str
    chain: str  # id of the job the runner was started with
    spool: str  # the script copy the job runs
    workdir: str
    submit_env: dict[str, str]  # PBS_O_* and the -v variables
    resources: dict[str, str]
    depend: Optional[str] = None
    umask: Optional[str] = None  # -W umask=, octal
    join: Optional[str] = None
    output: Optional[str] = None
    error: Optional[str] = None
    state: str = "Q"  # Q queued, R running, F finished; B an array some of whose subjobs have not ended
    exit_status: Optional[int] = None
    comment: str = ""
    pgid: Optional[int] = None
    scratch: Optional[str] = None
    tmpdir_left: list[str] = field(default_factory=list)  # what the job left in $TMPDIR
    signalled: Optional[float] = None  # when the walltime or qdel SIGTERM went
    emptied: Optional[float] = None  # when the job's last process ended after it
    killed_after_delay: bool = False  # some were still there kill_delay later: SIGKILL
    run_count: int = 0  # how many times it started (qrerun starts it again, same id)
    submitted: float = field(default_factory=time.time)
    started: Optional[float] = None
    ended: Optional[float] = None
    rerunnable: bool = True  # qsub -r n: qrerun refuses it
    array_indices: Optional[str] = None  # an array: its -J range
    array_id: Optional[str] = None  # a subjob: its array's id (13[].local) ...
    array_index: Optional[int] = None  # ... and its index

    @property
    def walltime_s(self) -> Optional[float]:
        value = self.resources.get("walltime")
        return parse_hms(value, f"job {self.id}: walltime") if value else None

    @property
    def ncpus(self) -> int:
        if self.resources.get("select"):
            value = parse_select(self.resources["select"], f"job {self.id}: select")[0][1].get("ncpus", "")
            if value.isdigit():
                return int(value)
        return int(self.resources.get("ncpus", "1"))

    @property
    def vnodes(self) -> list[str]:
        """The nodefile's lines: one per chunk, each on a loopback "host" of its own unless ``place=pack``."""
        select = self.resources.get("select")
        chunks = sum(count for count, _ in parse_select(select, f"job {self.id}: select")) if select else 1
        if "pack" in self.resources.get("place", ""):
            return ["127.0.0.1"] * chunks
        return [f"127.0.0.{i + 1}" for i in range(chunks)]

    @property
    def umask_bits(self) -> int:
        return int(self.umask, 8) if self.umask else DEFAULT_UMASK

    def output_paths(self) -> tuple[Path, Optional[Path]]:
        """The .o file and the .e file (None when ``-j oe`` merges them)."""
        out = self._path(self.output, "o")
        return out, None if self.join == "oe" else self._path(self.error, "e")

    def _path(self, given: Optional[str], kind: str) -> Path:
        default = f"{self.name}.{kind}{self.seq}" + (f".{self.array_index}" if self.array_index is not None else "")
        if not given:
            return Path(self.workdir) / default
        path = Path(self.workdir) / given.split(":", 1)[-1]  # PBS accepts host:path
        return path / default if path.is_dir() else path


class LocalServer:
    """Job records, spool copies and scratch folders under one state folder."""

    def __init__(self, state_dir: Optional[Path] = None):
        self.root = Path(state_dir or default_state_dir()).absolute()
        self.jobs_dir = self.root / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)

    @property
    def settings(self) -> ServerSettings:
        path = self.root / SETTINGS_FILE
        return ServerSettings(**json.loads(path.read_text())) if path.is_file() else ServerSettings()

    def configure(self, **changes: Any) -> ServerSettings:
        """Change settings (as ``qmgr -c "set server ..."`` would); the jobs' stand-ins read them too."""
        settings = dataclasses.replace(self.settings, **changes)
        atomic_write_json(self.root / SETTINGS_FILE, dataclasses.asdict(settings))
        return settings

    # ---- records --------------------------------------------------------------------------
    def _record_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id.split('.', 1)[0]}.json"

    def get(self, job_id: str) -> Optional[LocalJob]:
        if not _JOB_SEQ.match(job_id.split(".", 1)[0]):
            return None
        path = self._record_path(job_id)
        return LocalJob(**json.loads(path.read_text())) if path.is_file() else None

    def subjobs(self, array: LocalJob) -> list[LocalJob]:
        """The subjobs of an array, by index (none for another job)."""
        if not array.array_indices:
            return []
        found = (self.get(f"{array.seq}[{i}].{SERVER}") for i in parse_array_range(array.array_indices))
        return [job for job in found if job is not None]

    def save(self, job: LocalJob) -> None:
        atomic_write_json(self._record_path(job.id), dataclasses.asdict(job))

    def _next_seq(self) -> int:
        with open(self.root / "seq.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            seq_file = self.root / "seq"
            seq = int(seq_file.read_text() or 0) + 1 if seq_file.is_file() else 1
            seq_file.write_text(str(seq))
            return seq

    # ---- qsub -----------------------------------------------------------------------------
    def submit(self, argv: Sequence[str], environ: Mapping[str, str], cwd: Path, site: Optional[Site] = None,
               chain: Optional[str] = None) -> LocalJob:
        """Queue a job as qsub would (``argv`` are qsub's arguments); return its record (an array's, for -J)."""
        request = job_request(argv, environ, cwd)
        _check_supported(request)
        if request.name is not None:  # as qsub refuses it; the name is also the output file's, in cwd
            check_job_name(request.name, "qsub: -N")
        indices = parse_array_range(request.array, "qsub: -J") if request.array else []
        script = request.script
        seq = self._next_seq()
        job_id = f"{seq}[].{SERVER}" if indices else f"{seq}.{SERVER}"
        spool = self.jobs_dir / f"{job_id}.SC"
        shutil.copyfile(script, spool)
        submit_env = {
            "PBS_O_WORKDIR": str(cwd.absolute()), "PBS_O_HOME": environ.get("HOME", str(Path.home())),
            "PBS_O_LOGNAME": environ.get("LOGNAME", environ.get("USER", "")), "PBS_O_HOST": socket.gethostname(),
            "PBS_O_SHELL": environ.get("SHELL", "/bin/bash"), "PBS_O_PATH": environ.get("PATH", BASE_PATH),
            "PBS_O_QUEUE": request.queue or QUEUE,
        }
        if request.export_all:
            submit_env = {**environ, **submit_env}
        submit_env.update(request.variables)
        job = LocalJob(id=job_id, seq=seq, name=request.name or job_name(script.name), site=(site or get_site()).name,
                       chain=chain or job_id, spool=str(spool), workdir=str(cwd.absolute()), submit_env=submit_env,
                       resources=dict(request.resources), depend=request.attributes.get("depend"),
                       umask=request.attributes.get("umask"), join=request.join,
                       output=request.output, error=request.error,
                       state="H" if request.hold else "B" if indices else "Q",
                       rerunnable=request.rerunnable != "n", array_indices=request.array)
        if "walltime" in job.resources:  # a bad walltime is refused at submission, as qsub does
            parse_hms(job.resources["walltime"], "qsub: -l walltime")
        if job.umask and not re.fullmatch(r"[0-7]{1,4}", job.umask):
            raise UserError(f"qsub: -W umask={job.umask}: expected an octal umask such as 022")
        self.save(job)
        for index in indices:
            self.save(dataclasses.replace(job, id=f"{seq}[{index}].{SERVER}", state="H" if request.hold else "Q",
                                          array_indices=None,
                                          array_id=job_id, array_index=index))
        return job

    def submit_here(self, argv: Sequence[str], cwd: Path, site: Optional[Site] = None) -> str:
        """A submission of ``scripts/submit --local``: the qsub words ``argv``, said and queued here; the job's id."""
        print(f"running here, PBS-like: {display(argv)}", flush=True)
        return self.submit(argv[1:], os.environ, cwd, site=site).id

    # ---- qalter, qrls ---------------------------------------------------------------------
    def alter(self, job_id: str, argv: Sequence[str]) -> LocalJob:
        """``qalter -W umask=NNN ID``: a job that has not started yet (held or queued) gets that umask,
        over its script's directive (qsub's command line cannot do that, qalter can)."""
        job = self.get(job_id)
        if job is None or job.state not in ("H", "Q", "B"):
            raise UserError(f"qalter: {'Unknown Job Id' if job is None else 'Request invalid for state of job'} "
                            f"{job_id}")
        request = parse_qsub_args(argv, where="qalter")
        if set(request.attributes) != {"umask"} or request != JobRequest(attributes=request.attributes):
            raise UserError("qalter: the local runner alters -W umask=NNN only")
        umask = request.attributes["umask"]
        if not re.fullmatch(r"[0-7]{1,4}", umask):
            raise UserError(f"qalter: -W umask={umask}: expected an octal umask such as 077")
        for altered in [job] + self.subjobs(job):
            altered.umask = umask
            self.save(altered)
        return job

    def release(self, job_id: str) -> LocalJob:
        """``qrls ID``: a held job (an array: its subjobs) is queued."""
        job = self.get(job_id)
        if job is None or job.state != "H":
            raise UserError(f"qrls: {'Unknown Job Id' if job is None else 'Job has no hold'} {job_id}")
        for held in [job] + self.subjobs(job):
            held.state = "B" if held.array_indices else "Q"
            self.save(held)
        return job

    # ---- running --------------------------------------------------------------------------
    def run_chain(self, first: LocalJob, echo: Optional[IO[bytes]] = None,
                  kill_delay: Optional[float] = None) -> list[LocalJob]:
        """Run ``first`` (an array: its subjobs), then each job its chain submits (in order, dependencies
        honoured)."""
        done: list[LocalJob] = []
        stopper = _Stopper()
        with stopper:
            job: Optional[LocalJob] = first if first.state == "Q" else self._next_ready(first.chain)
            while job is not None and not stopper.requested:
                if self.delete_requested(job.id):  # qdel of a queued job
                    self._finish(job, None, "deleted before it ran")
                elif (ran := self.run(job, echo, kill_delay, stopper)).state == "F":  # not requeued by qrerun
                    done.append(ran)
                job = self._next_ready(first.chain)
            if stopper.requested:  # like qdel of the whole chain
                for queued in self._queued(first.chain):
                    self._finish(queued, None, "deleted: the runner was interrupted")
        return done

    def _queued(self, chain: str) -> list[LocalJob]:
        jobs = [self.get(p.stem) for p in self.jobs_dir.glob("*.json")]
        queued = (j for j in jobs if j and j.chain == chain and j.state == "Q")
        return sorted(queued, key=lambda j: (j.seq, -1 if j.array_index is None else j.array_index))

    def _next_ready(self, chain: str) -> Optional[LocalJob]:
        for job in self._queued(chain):
            ready, failed = self._dependency(job)
            if failed:
                self._finish(job, None, f"deleted: dependency {job.depend} not satisfied")
            elif ready:
                return job
        return None

    def _dependency(self, job: LocalJob) -> tuple[bool, bool]:
        """(ready to run, can never run) for the job's ``-W depend``."""
        if not job.depend:
            return True, False
        kind, _, ids = job.depend.partition(":")
        others = [self.get(i) for i in ids.split(":")]
        if any(o is None for o in others):
            return False, True
        if any(o.state != "F" for o in others):
            return False, False
        if kind == "afterok" and any(o.exit_status != 0 for o in others):
            return False, True
        return True, False

    def _finish(self, job: LocalJob, status: Optional[int], comment: str) -> None:
        job.state, job.exit_status, job.comment, job.ended = "F", status, comment, time.time()
        self.save(job)
        array = self.get(job.array_id) if job.array_id else None
        if array is not None and all(sub.state == "F" for sub in self.subjobs(array)):
            statuses = [sub.exit_status for sub in self.subjobs(array)]
            self._finish(array, 2 if None in statuses else int(any(statuses)), "")

    def delete_requested(self, job_id: str) -> bool:
        return self._record_path(job_id).with_suffix(".qdel").exists()

    def request_delete(self, job_id: str) -> None:
        """What ``qdel`` does: the runner of the job ends it (a queued job never starts)."""
        self._record_path(job_id).with_suffix(".qdel").touch()

    def rerun_requested(self, job_id: str) -> bool:
        return self._record_path(job_id).with_suffix(".qrerun").exists()

    def request_rerun(self, job_id: str) -> None:
        """What ``qrerun`` does: the runner ends the running job as for ``qdel`` and queues it again, same id."""
        job = self.get(job_id)
        if job is None or job.state != "R" or not job.rerunnable:
            what = "unknown job" if job is None else "not rerunnable (qsub -r n)" if not job.rerunnable else "not running"
            raise UserError(f"qrerun: {job_id} is {what}")
        self._record_path(job_id).with_suffix(".qrerun").touch()

    def run(self, job: LocalJob, echo: Optional[IO[bytes]] = None, kill_delay: Optional[float] = None,
            stopper: Optional["_Stopper"] = None) -> LocalJob:
        """Run one queued job to its end; return its finished record (queued again after a ``qrerun``)."""
        settings = self.settings
        if kill_delay is not None:
            settings.kill_delay_s = kill_delay
        site = get_site(job.site)
        home = Path(job.submit_env.get("PBS_O_HOME") or Path.home())
        tmpdir, _ = self.node_places(job, site, 0)
        tmpdir.mkdir(parents=True, exist_ok=True)
        env = self._job_environment(job, site, tmpdir)
        sisters = self._sister_places(job, site)
        out_path, err_path = job.output_paths()
        job.state, job.started, job.run_count = "R", time.time(), job.run_count + 1
        with _output_file(out_path, job.umask_bits) as out, \
                (_output_file(err_path, job.umask_bits) if err_path else nullcontext()) as err:
            proc = subprocess.Popen(["/bin/bash", job.spool], cwd=home, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT if err_path is None else subprocess.PIPE,
                                    start_new_session=True, umask=job.umask_bits)
            job.pgid = proc.pid
            self.save(job)
            pumps = [_pump(proc.stdout, out, echo)] + ([_pump(proc.stderr, err, echo)] if err_path else [])
            status, comment = self._supervise(proc, job, out, settings, stopper)
            _signal_group(proc.pid, signal.SIGKILL)  # PBS ends whatever the job left running
            for pump in pumps:
                pump.join(timeout=5)
        job.tmpdir_left = sorted(str(p.relative_to(tmpdir)) for p in tmpdir.rglob("*"))
        for tmp, scratch in [(tmpdir, Path(job.scratch) if job.scratch else None)] + sisters:
            shutil.rmtree(tmp, ignore_errors=True)
            if scratch is not None and scratch.is_dir() and not any(scratch.iterdir()):
                scratch.rmdir()
        if status == EXIT_RERUN:
            self._record_path(job.id).with_suffix(".qrerun").unlink(missing_ok=True)
            job.state, job.comment = "Q", "requeued by qrerun"
            self.save(job)
        else:
            self._finish(job, status, comment)
        return job

    def _job_environment(self, job: LocalJob, site: Site, tmpdir: Path) -> dict[str, str]:
        nodefile = self.root / "aux" / job.id
        nodefile.parent.mkdir(parents=True, exist_ok=True)
        nodefile.write_text("".join(f"{host}\n" for host in job.vnodes))
        ncpus = min(job.ncpus, os.cpu_count() or 1)
        env = {
            "HOME": job.submit_env.get("PBS_O_HOME", str(Path.home())), "USER": job.submit_env.get("PBS_O_LOGNAME", ""),
            "LOGNAME": job.submit_env.get("PBS_O_LOGNAME", ""), "SHELL": "/bin/bash", "LANG": "C.UTF-8",
            "PATH": f"{self._standins(site)}:{BASE_PATH}",
            **job.submit_env,
            "PBS_JOBID": job.id, "PBS_JOBNAME": job.name, "PBS_NODEFILE": str(nodefile), "PBS_QUEUE": QUEUE,
            "PBS_ENVIRONMENT": "PBS_BATCH", "NCPUS": str(ncpus), "OMP_NUM_THREADS": str(ncpus),
            "TMPDIR": str(tmpdir), STATE_VARIABLE: str(self.root), "SEGTRAIN_LOCAL_PYTHON": sys.executable,
            "SEGTRAIN_LOCAL_PYTHONPATH": str(Path(segtrain.__file__).resolve().parents[1]),
        }
        if job.array_id:
            env.update(PBS_ARRAY_ID=job.array_id, PBS_ARRAY_INDEX=str(job.array_index))
        if site.scratch_variable:
            _, scratch = self.node_places(job, site, 0)
            scratch.mkdir(parents=True, exist_ok=True)
            job.scratch = str(scratch)
            env[site.scratch_variable] = str(scratch)
        return env

    def node_places(self, job: LocalJob, site: Site, vnode: int) -> tuple[Path, Optional[Path]]:
        """``$TMPDIR`` and (where the site gives one) the scratch folder of nodefile line ``vnode``'s host:
        the job's own on the first host, named after the host on another."""
        host = job.vnodes[vnode % len(job.vnodes)]
        name = job.id if host == job.vnodes[0] else f"{job.id}@{host}"
        return self.root / "tmp" / f"pbs.{name}", self.root / "scratch" / name if site.scratch_variable else None

    def _sister_places(self, job: LocalJob, site: Site) -> list[tuple[Path, Optional[Path]]]:
        """The other hosts' places, made when the job starts, as PBS makes them on each node of a job."""
        places = [self.node_places(job, site, job.vnodes.index(host)) for host in dict.fromkeys(job.vnodes[1:])
                  if host != job.vnodes[0]]
        for folder in (path for place in places for path in place if path is not None):
            folder.mkdir(parents=True, exist_ok=True)
        return places

    def _standins(self, site: Site) -> Path:
        """A bin folder with this site's PBS commands, each calling back into this module."""
        folder = self.root / f"bin-{site.name}"
        folder.mkdir(parents=True, exist_ok=True)
        for name in STANDINS:
            path = folder / name
            if (name == "clean_scratch" and not site.clean_scratch) or (name == "qextend" and not site.qextend):
                path.unlink(missing_ok=True)
                continue
            text = ("#!/bin/sh\n# local PBS stand-in (segtrain.cluster.pbs.local)\n"
                    'PYTHONPATH="$SEGTRAIN_LOCAL_PYTHONPATH" exec "$SEGTRAIN_LOCAL_PYTHON" '
                    f'-m segtrain.cluster.pbs.local {name} "$@"\n')
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)
                path.chmod(0o755)
        return folder

    def _supervise(self, proc: subprocess.Popen, job: LocalJob, out: IO[bytes], settings: ServerSettings,
                   stopper: Optional["_Stopper"]) -> tuple[int, str]:
        """Wait for the job; enforce its walltime, ``qdel`` and a runner interrupt as PBS would."""
        while True:
            try:
                rc = proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                rc = None
            # Once the job ended too: a qextend in its last moments (or while this thread waited for a busy CPU)
            # stays in its finished record.
            self._follow_qextend(job)
            if rc is not None:
                return (rc if rc >= 0 else 256 - rc), ""
            deadline = job.started + job.walltime_s if job.walltime_s is not None else None
            if deadline is not None and time.time() >= deadline + settings.walltime_late_s:
                used = format_hms(time.time() - job.started)
                _note(out, f"=>> PBS: job killed: walltime {used} exceeded limit {format_hms(job.walltime_s)}")
                self._end(job, proc, settings.kill_delay_s, top_shell_first=False)
                return EXIT_WALLTIME, "walltime exceeded"
            if self.rerun_requested(job.id):
                _note(out, "=>> PBS: job killed: rerun by qrerun")
                self._end(job, proc, settings.kill_delay_s, top_shell_first=True)
                return EXIT_RERUN, "rerun"
            interrupted = stopper is not None and stopper.requested
            if interrupted or self.delete_requested(job.id):
                by = "the local runner (interrupted)" if interrupted else "qdel"
                _note(out, f"=>> PBS: job killed: deleted by {by}")
                self._end(job, proc, settings.kill_delay_s, top_shell_first=True)
                return EXIT_QDEL, "deleted"

    def extend(self, job_id: str, seconds: float) -> LocalJob:
        """What ``qextend`` does: the running job's walltime grows by ``seconds`` (its runner follows)."""
        job = self.get(job_id)
        if job is None or job.state != "R" or job.array_indices or job.array_id or job.walltime_s is None:
            what = ("unknown job" if job is None else "an array job" if job.array_indices or job.array_id
                    else "a job without a walltime" if job.walltime_s is None else "a job that is not running")
            raise UserError(f"qextend: {job_id} is {what}; only a running simple job can be extended")
        job.resources["walltime"] = format_hms(job.walltime_s + seconds)
        self.save(job)
        return job

    def _follow_qextend(self, job: LocalJob) -> None:
        """Take over a walltime ``qextend`` wrote into the job's record while it runs."""
        current = self.get(job.id)
        if current is not None and current.resources.get("walltime") != job.resources.get("walltime"):
            job.resources["walltime"] = current.resources["walltime"]

    def _end(self, job: LocalJob, proc: subprocess.Popen, kill_delay: float, top_shell_first: bool) -> None:
        """SIGTERM to every process of the job; SIGKILL to those still there ``kill_delay`` later.

        On ``qdel`` a real server killed the job's top shell at once (its traps never ran) while
        the other processes got SIGTERM: ``top_shell_first`` does the same. When the signal went
        and when the job's last process ended are kept in the record (``signalled``, ``emptied``).
        """
        if top_shell_first:
            _signal(proc.pid, signal.SIGKILL)
        _signal_group(proc.pid, signal.SIGTERM)
        job.signalled = time.time()
        deadline = time.monotonic() + kill_delay
        while time.monotonic() < deadline:
            proc.poll()  # reap the job's shell, so that only live processes keep the group alive
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                job.emptied = time.time()
                break
            time.sleep(0.05)
        else:
            job.killed_after_delay = True
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


class _Stopper:
    """SIGINT/SIGTERM to the runner ends the running job as ``qdel`` would, and stops the chain."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict = {}

    def __enter__(self) -> "_Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        self.requested = True


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, as /proc lists them (Linux)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [root]
    while todo:
        tree.append(todo.pop())
        todo += children.get(tree[-1], [])
    return tree


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _output_file(path: Path, umask: int) -> IO[bytes]:
    """The job's output file, created with the job's umask as PBS creates it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o666 & ~umask)
    return os.fdopen(fd, "wb")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _note(out: IO[bytes], text: str) -> None:
    out.write(text.encode() + b"\n")
    out.flush()


def _pump(stream: IO[bytes], out: IO[bytes], echo: Optional[IO[bytes]]) -> threading.Thread:
    """Copy a job's output stream to its file (and to ``echo``) as it comes."""
    def copy() -> None:
        while chunk := os.read(stream.fileno(), 65536):
            out.write(chunk)
            out.flush()
            if echo is not None:
                echo.write(chunk)
                echo.flush()
        stream.close()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def _check_supported(request: JobRequest) -> None:
    depend = request.attributes.get("depend")
    if depend and depend.partition(":")[0] not in ("afterany", "afterok"):
        raise UserError(f"qsub: -W depend={depend}: the local runner knows afterany and afterok only")


# ---- the runner ------------------------------------------------------------------------------------
def submit_and_run(qsub_args: Sequence[str], site: Optional[Site] = None, echo: Optional[IO[bytes]] = None,
                   state_dir: Optional[Path] = None, environ: Optional[Mapping[str, str]] = None,
                   cwd: Optional[Path] = None) -> list[LocalJob]:
    """``qsub QSUB_ARGS`` here, then run the job and its chain; return the finished records."""
    server = LocalServer(state_dir)
    job = server.submit(qsub_args, os.environ if environ is None else environ, cwd or Path.cwd(), site=site)
    return server.run_chain(job, echo)


def local_states(job_ids: Sequence[str]) -> dict[str, JobState]:
    """Where jobs of this machine's runner stand (its ``qstat``)."""
    return qstat_states(job_ids, [sys.executable, "-m", "segtrain.cluster.pbs.local", "qstat"])


def describe(jobs: Sequence[LocalJob]) -> list[str]:
    out = []
    for job in jobs:
        status = "deleted" if job.exit_status is None else f"exit {job.exit_status}"
        output = job.output_paths()[0]
        out.append(f"job {job.id} ({job.name}): {status}{', ' + job.comment if job.comment else ''}; output {output}")
    return out
