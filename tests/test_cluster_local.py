"""The local PBS-like runner, with small shell jobs: environment, walltime, stand-ins, chains."""
import os
import threading
import time
from pathlib import Path

import pytest

from segtrain.cluster.pbs.local import server as server_module
from segtrain.cluster.pbs.local.server import EXIT_WALLTIME, LocalServer
from segtrain.cluster.pbs.local.__main__ import main
from segtrain.cluster.site import METACENTRUM, OPENPBS
from segtrain.errors import UserError


@pytest.fixture
def server(tmp_path, monkeypatch) -> LocalServer:
    monkeypatch.setenv("SEGTRAIN_LOCAL_PBS", str(tmp_path / "state"))
    return LocalServer()


@pytest.fixture
def workdir(tmp_path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    return work


def job_script(workdir: Path, body: str, directives: str = "#PBS -N t\n#PBS -j oe\n") -> str:
    (workdir / "job.sh").write_text("#!/bin/bash\n" + directives + body)
    return "job.sh"


def run(server, workdir, argv, site=METACENTRUM, kill_delay=10.0):
    job = server.submit(argv, {"HOME": str(workdir.parent), "PATH": os.environ["PATH"], "SECRET": "x"}, workdir, site=site)
    return server.run_chain(job, kill_delay=kill_delay)


def output(job) -> str:
    return job.output_paths()[0].read_text()


def test_job_runs_in_home_with_the_pbs_variables_and_not_the_submitters_environment(server, workdir):
    script = job_script(workdir, 'pwd; echo "$PBS_JOBID|$PBS_JOBNAME|$PBS_O_WORKDIR|$PBS_ENVIRONMENT|$NCPUS|${SECRET:-}|$A"\n'
                                 'test -s "$PBS_NODEFILE" && test -d "$SCRATCHDIR" && test -d "$TMPDIR" && echo places-ok\n'
                                 'echo "script is $0"\n')
    [job] = run(server, workdir, ["-v", "A=1", script])
    lines = output(job).splitlines()
    assert lines[0] == str(workdir.parent)  # PBS starts jobs in $HOME
    assert lines[1] == f"1.local|t|{workdir}|PBS_BATCH|{min(1, os.cpu_count())}||1"
    assert lines[2] == "places-ok"
    assert lines[3] == f"script is {job.spool}" and job.exit_status == 0


def test_output_file_is_named_like_pbs_and_stderr_goes_to_its_own_file_without_join(server, workdir):
    script = job_script(workdir, "echo out; echo err >&2\n", directives="#PBS -N named\n")
    [job] = run(server, workdir, [script])
    assert (workdir / "named.o1").read_text() == "out\n" and (workdir / "named.e1").read_text() == "err\n"


@pytest.mark.parametrize("name", ["../x/y", "/tmp/x", "1st", "a b", "a" * 231])
def test_a_job_name_qsub_would_refuse_is_refused_and_nothing_is_written(server, workdir, tmp_path, name):
    """The output file is <name>.o<seq> in the submit folder: ``-N ../x/y`` wrote it outside."""
    script = job_script(workdir, "echo out\n")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(UserError, match="qsub: -N"):
        run(server, workdir, ["-N", name, script])
    assert sorted(tmp_path.rglob("*")) == before


def test_ncpus_follows_the_select_statement_capped_at_this_machine(server, workdir):
    script = job_script(workdir, 'echo "$NCPUS $OMP_NUM_THREADS"\n')
    [job] = run(server, workdir, ["-l", "select=1:ncpus=64:mem=1gb", script])
    assert output(job).split() == [str(os.cpu_count())] * 2


def test_walltime_sends_sigterm_then_sigkill_after_the_kill_delay(server, workdir):
    script = job_script(workdir, "trap 'echo got-TERM' TERM\nwhile :; do sleep 0.1; done\necho never\n")
    [job] = run(server, workdir, ["-l", "walltime=00:00:01", script], kill_delay=0.5)
    text = output(job)
    assert "=>> PBS: job killed: walltime" in text and "exceeded limit 00:00:01" in text
    assert "got-TERM" in text and "never" not in text
    assert job.exit_status == EXIT_WALLTIME


def test_sigterm_reaches_every_process_of_the_job(server, workdir):
    script = job_script(workdir, "sh -c \"trap 'echo child-TERM; exit 0' TERM; while :; do sleep 0.1; done\" &\nwait\n")
    [job] = run(server, workdir, ["-l", "walltime=00:00:01", script], kill_delay=1)
    assert "child-TERM" in output(job)


def test_a_job_killed_by_a_signal_ends_with_256_plus_the_signal(server, workdir):
    [job] = run(server, workdir, [job_script(workdir, "kill -KILL $$\n")])
    assert job.exit_status == 256 + 9


def test_qsub_stand_in_chains_a_job_that_starts_after_this_one_ends(server, workdir):
    script = job_script(workdir, 'cd "$PBS_O_WORKDIR"; echo "run $PBS_JOBID N=${N:-0}"\n'
                                 '[ "${N:-0}" -lt 2 ] && id=$(qsub -W depend=afterany:$PBS_JOBID -v N=$(( ${N:-0} + 1 )) '
                                 'job.sh </dev/null) && echo "submitted $id"\nexit 3\n')
    jobs = run(server, workdir, [script])
    assert [j.id for j in jobs] == ["1.local", "2.local", "3.local"]
    assert "submitted 2.local" in output(jobs[0]) and "run 3.local N=2" in output(jobs[2])
    assert all(j.exit_status == 3 for j in jobs)


def test_afterok_dependant_is_deleted_when_its_dependency_fails(server, workdir):
    script = job_script(workdir, 'cd "$PBS_O_WORKDIR"; [ -z "${CHILD:-}" ] && qsub -W depend=afterok:$PBS_JOBID -v CHILD=1 job.sh; exit 1\n')
    jobs = run(server, workdir, [script])
    assert len(jobs) == 1
    child = server.get("2.local")
    assert child.state == "F" and child.exit_status is None and "dependency" in child.comment


def test_qstat_stand_in_reports_the_walltime_the_job_got(server, workdir):
    script = job_script(workdir, "qstat -f $PBS_JOBID; qstat -f 99.local; echo rc=$?\n")
    [job] = run(server, workdir, ["-l", "walltime=02:00:00", script])
    text = output(job)
    assert "Job Id: 1.local" in text and "Resource_List.walltime = 02:00:00" in text
    assert "qstat: Unknown Job Id 99.local" in text and "rc=153" in text


def when_running(server: LocalServer, job_id: str, action) -> threading.Thread:
    """Call ``action(job_id)`` once the job has started, from a thread (the runner blocks this one)."""
    def wait_then_act() -> None:
        while server.get(job_id).state != "R":
            time.sleep(0.01)
        action(job_id)

    thread = threading.Thread(target=wait_then_act)
    thread.start()
    return thread


def test_qextend_stand_in_raises_the_walltime_qstat_reports(server, workdir):
    script = job_script(workdir, "qextend $PBS_JOBID 00:30:00; qstat -f $PBS_JOBID; qextend 99.local 60; echo rc=$?\n")
    [job] = run(server, workdir, ["-l", "walltime=01:00:00", script])
    text = output(job)
    assert "Additional walltime:\t00:30:00" in text and "Resource_List.walltime = 01:30:00" in text
    assert "qextend: 99.local is unknown job" in text and "rc=2" in text
    assert job.resources["walltime"] == "01:30:00"


def test_a_job_whose_walltime_was_extended_runs_past_its_first_walltime(server, workdir):
    script = job_script(workdir, "sleep 3; echo survived\n")
    job = server.submit(["-l", "walltime=00:00:01", script], {"HOME": str(workdir.parent)}, workdir, site=METACENTRUM)
    extender = when_running(server, job.id, lambda job_id: server.extend(job_id, 60))
    [done] = server.run_chain(job)
    extender.join()
    assert done.exit_status == 0 and "survived" in output(done)


def test_qrerun_ends_the_running_job_and_starts_it_again_under_its_id(server, workdir):
    script = job_script(workdir, "trap 'echo SIGTERM; exit 143' TERM; qstat -f $PBS_JOBID | grep run_count\n"
                                 "sleep 3 & wait; echo end\n")
    job = server.submit([script], {"HOME": str(workdir.parent)}, workdir, site=METACENTRUM)
    rerun = when_running(server, job.id, server.request_rerun)
    [done] = server.run_chain(job)
    rerun.join()
    assert done.id == job.id and done.run_count == 2 and done.exit_status == 0
    assert output(done).split() == ["run_count", "=", "2", "end"]  # PBS writes the output of the last run


def test_qrerun_refuses_a_job_submitted_as_not_rerunnable(server, workdir):
    job = server.submit(["-r", "n", job_script(workdir, "sleep 1\n")], {"HOME": str(workdir.parent)}, workdir)
    errors = []

    def rerun(job_id: str) -> None:
        try:
            server.request_rerun(job_id)
        except UserError as exc:
            errors.append(str(exc))

    refuse = when_running(server, job.id, rerun)
    [done] = server.run_chain(job)
    refuse.join()
    assert errors == ["qrerun: 1.local is not rerunnable (qsub -r n)"] and done.run_count == 1


def test_only_sites_with_a_walltime_extender_have_qextend(server, workdir):
    [job] = run(server, workdir, [job_script(workdir, "command -v qextend || echo none\n")], site=OPENPBS)
    assert output(job).split() == ["none"]


def test_scratch_is_removed_when_the_job_empties_it_and_kept_when_it_does_not(server, workdir):
    [tidy] = run(server, workdir, [job_script(workdir, "touch $SCRATCHDIR/x; clean_scratch\n")])
    [messy] = run(server, workdir, [job_script(workdir, "touch $SCRATCHDIR/x\n")])
    assert not Path(tidy.scratch).exists()
    assert (Path(messy.scratch) / "x").is_file()


def test_clean_scratch_stand_in_refuses_folders_it_did_not_make(server, workdir):
    victim = workdir / "keep.txt"
    victim.write_text("important")
    [job] = run(server, workdir, [job_script(workdir, f"SCRATCHDIR={workdir} clean_scratch; echo rc=$?\n")])
    assert "rc=1" in output(job) and victim.read_text() == "important"


@pytest.mark.parametrize("machine_has_one", [False, True])
def test_stock_openpbs_site_has_no_scratchdir_nor_clean_scratch(server, workdir, tmp_path, monkeypatch,
                                                                machine_has_one):
    """The runner gives a stock OpenPBS job no SCRATCHDIR and no clean_scratch stand-in; a clean_scratch
    of the machine's own (a MetaCentrum frontend's) may still be on its PATH, and changes nothing."""
    if machine_has_one:
        system = tmp_path / "system-bin"
        system.mkdir()
        (system / "clean_scratch").write_text("#!/bin/sh\nexit 0\n")
        (system / "clean_scratch").chmod(0o755)
        monkeypatch.setattr(server_module, "BASE_PATH", f"{system}:{server_module.BASE_PATH}")
    script = job_script(workdir, 'echo "[${SCRATCHDIR:-}]"; command -v clean_scratch || echo none; touch "$TMPDIR/left"\n')
    [job] = run(server, workdir, [script], site=OPENPBS)
    scratch, found = output(job).split()
    assert scratch == "[]" and (found == "none" or not found.startswith(str(server.root)))
    assert (found != "none") == machine_has_one
    assert job.tmpdir_left == ["left"]  # recorded, then removed as PBS removes $TMPDIR


def test_run_command_submits_a_script_from_the_current_folder_and_returns_its_status(server, workdir, monkeypatch, capsys):
    monkeypatch.chdir(workdir)
    job_script(workdir, "echo hello; exit 4\n")
    assert main(["run", "--quiet", "--", "-N", "cli", "job.sh"]) == 4
    assert (workdir / "cli.o1").read_text() == "hello\n" and "job 1.local (cli): exit 4" in capsys.readouterr().out


# ---- job arrays -------------------------------------------------------------------------------------
def test_job_array_runs_every_subjob_with_its_index_and_pbs_ids_and_output_names(server, workdir):
    script = job_script(workdir, 'echo "$PBS_JOBID $PBS_ARRAY_INDEX $PBS_ARRAY_ID"\n')
    jobs = run(server, workdir, ["-J", "0-4:2", script])
    assert [j.id for j in jobs] == ["1[0].local", "1[2].local", "1[4].local"]
    assert (workdir / "t.o1.2").read_text() == "1[2].local 2 1[].local\n"
    array = server.get("1[].local")
    assert array.state == "F" and array.exit_status == 0


def test_job_array_exit_status_is_1_when_a_subjob_fails(server, workdir):
    jobs = run(server, workdir, ["-J", "0-2", job_script(workdir, '[ "$PBS_ARRAY_INDEX" != 1 ]\n')])
    assert [j.exit_status for j in jobs] == [0, 1, 0]
    assert server.get("1[].local").exit_status == 1


@pytest.mark.parametrize("bad", ["3-3", "4-2", "0-", "1,2", "0-3:0"])
def test_qsub_refuses_array_ranges_pbs_refuses(server, workdir, bad):
    with pytest.raises(UserError, match="X-Y"):
        run(server, workdir, ["-J", bad, job_script(workdir, "true\n")])


def test_qstat_stand_in_shows_an_array_and_with_t_its_subjobs(server, workdir):
    script = job_script(workdir, 'cd "$PBS_O_WORKDIR"; [ "$PBS_ARRAY_INDEX" = 1 ] && qstat -f -t "$PBS_ARRAY_ID"; true\n')
    run(server, workdir, ["-J", "0-1", script])
    text = (workdir / "t.o1.1").read_text()
    assert "Job Id: 1[].local" in text and "array_indices_submitted = 0-1" in text
    assert "Job Id: 1[1].local" in text and "array_index = 1" in text
    assert "Job Id: 1[0].local" not in text  # finished: shown with -x only


def test_jobs_run_with_umask_077_like_pbs_unless_w_umask_says_otherwise(server, workdir):
    script = job_script(workdir, 'umask; touch "$PBS_O_WORKDIR/made-by-$PBS_JOBID"\n')
    [private] = run(server, workdir, [script])
    [shared] = run(server, workdir, ["-W", "umask=022", script])
    assert output(private).strip() == "0077" and output(shared).strip() == "0022"
    assert (workdir / "made-by-1.local").stat().st_mode & 0o777 == 0o600
    assert private.output_paths()[0].stat().st_mode & 0o777 == 0o600  # PBS writes the output with the job's umask
    assert (workdir / "made-by-2.local").stat().st_mode & 0o777 == 0o644
    assert shared.output_paths()[0].stat().st_mode & 0o777 == 0o644


def test_qdel_kills_the_top_shell_at_once_and_sigterms_the_rest(server, workdir):
    """The top shell's TERM trap never runs; a child that handles SIGTERM has kill_delay to finish."""
    script = job_script(workdir, "trap 'echo top-trap' TERM\n"
                                 "( trap 'echo child-got-TERM; sleep 0.5; echo child-done; exit 0' TERM; "
                                 "while :; do sleep 0.1; done ) &\n"
                                 "qdel \"$PBS_JOBID\"\nwait\n")
    [job] = run(server, workdir, [script], kill_delay=10.0)
    text = output(job)
    assert "child-got-TERM" in text and "child-done" in text and "top-trap" not in text
    assert job.exit_status == 256 + 15 and not job.killed_after_delay


def test_the_walltime_sigterm_comes_late_when_the_server_is_configured_so(server, workdir):
    server.configure(walltime_late_s=2.0)
    script = job_script(workdir, "trap 'echo TERM after $SECONDS s; exit 0' TERM\nwhile :; do sleep 0.1; done\n")
    [job] = run(server, workdir, ["-l", "walltime=00:00:01", script])
    seconds = int(output(job).split("TERM after ")[1].split()[0])
    assert seconds >= 3 and job.exit_status == EXIT_WALLTIME


# ---- umask: the script's directive wins, qalter changes it -------------------------------------------
def test_the_scripts_umask_directive_wins_over_qsubs_command_line_as_on_a_real_server(server, workdir):
    script = job_script(workdir, "umask\n", directives="#PBS -N t\n#PBS -j oe\n#PBS -W umask=022\n")
    [job] = run(server, workdir, ["-W", "umask=077", script])
    assert output(job).strip() == "0022" and job.output_paths()[0].stat().st_mode & 0o777 == 0o644


def test_a_held_job_altered_to_umask_077_and_released_runs_private(server, workdir, monkeypatch, capsys):
    """The way a real server showed to keep such a job private: qsub -h, qalter -W umask=077, qrls."""
    script = job_script(workdir, 'umask; touch "$PBS_O_WORKDIR/result"\n',
                        directives="#PBS -N t\n#PBS -j oe\n#PBS -W umask=022\n")
    job = server.submit(["-h", script], {"HOME": str(workdir.parent), "PATH": os.environ["PATH"]}, workdir)
    assert server.run_chain(job) == [] and server.get(job.id).state == "H"  # held: nothing runs
    assert main(["qalter", "-W", "umask=077", job.id]) == 0
    monkeypatch.delenv("PBS_JOBID", raising=False)
    assert main(["qrls", job.id]) == 0 and f"job {job.id} (t): exit 0" in capsys.readouterr().out
    assert output(server.get(job.id)).strip() == "0077"
    assert (workdir / "result").stat().st_mode & 0o777 == 0o600
    assert server.get(job.id).output_paths()[0].stat().st_mode & 0o777 == 0o600
    assert main(["qalter", "-W", "umask=022", job.id]) == 2  # a finished job cannot be altered
    assert "Request invalid for state of job" in capsys.readouterr().err
