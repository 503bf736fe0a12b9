"""`python -m pipeline`: compose a run (or, with -m or sweep=NAME, a sweep) with Hydra and benchmark it.

Each job runs in a child process (`pipeline.job`) with its own Spark application; this process composes,
waits, forwards Ctrl-C and SIGTERM so the child can stop what it started, and prints the summary. With
`resume=true`, a job whose run directory already holds an ok result of the same config is not run again:
re-running a sweep into its directory (`hydra.sweep.dir=DIR`) re-runs only what failed or never finished.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from pipeline.config import calibrate_run
from pipeline.config.overrides import require_composable
from pipeline.config.schema import register, typed
from pipeline.provenance import config_record
from pipeline.results import Result, as_result, now, read_result, summary, write_result
from pipeline.rundir import RESULT_UNWRITABLE, RunDir, StorageError, WriteRoot, atomic_write, explain_storage
from pipeline.runtime.claim import DirectoryInUse, claimed
from pipeline.runtime.lifetime import PARENT_ENV

register()


def _lost(run_dir: Path, code: int) -> Result:
    """The record of a job whose process ended without writing its result: killed, out of memory, or unable to
    write it (RESULT_UNWRITABLE; its stderr said why). Writing it raises a StorageError where the run dir fails
    this process too."""
    message = (
        "the job could not write its result.json (its stderr says why)"
        if code == RESULT_UNWRITABLE
        else f"the job process exited with code {code} without a result"
    )
    result = Result(
        status="failed",
        variant=None,
        config={},
        env={},
        run_dir=str(run_dir),
        started_at=now(),
        finished_at=now(),
        error={"type": "JobProcessDied", "message": message},
    )
    write_result(run_dir, result)
    return result


def run_child(run_dir: Path, claim_fd: int | None = None) -> tuple[int, int | None]:
    """Run the job in RUN_DIR in a child process; its exit status, and the signal that stopped it, if any.

    `claim_fd`, this process's claim of RUN_DIR (`pipeline.runtime.claim`), is handed to the child: the claim then
    lasts until both have ended, also when this process is killed and the child takes a moment to stop.

    The child gets a process group of its own, so a Ctrl-C at the terminal reaches this process alone, which
    passes the first SIGINT or SIGTERM on, once: a second signal arriving while the child is still unwinding
    could cut short the stopping of what it started (a standalone cluster). If this process dies (SIGKILL),
    the child gets a SIGINT of its own and stops the same way (`pipeline.runtime.lifetime`).
    """
    child = subprocess.Popen(
        [sys.executable, "-m", "pipeline.job", str(run_dir)],
        process_group=0,
        pass_fds=() if claim_fd is None else (claim_fd,),
        # the child dies with this process (pipeline.runtime.lifetime)
        env={**os.environ, PARENT_ENV: str(os.getpid())},
    )
    received: list[int] = []

    def forward(signum: int, frame: object) -> None:
        if not received:
            child.send_signal(signum)
        received.append(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code, received[0] if received else None


def job_result(run_dir: Path, code: int) -> Result:
    """The result the job in RUN_DIR wrote, or the record of a lost job (`_lost`) where it wrote none: a
    result.json there after RESULT_UNWRITABLE is an earlier run's."""
    path = RunDir(run_dir).result
    if code == RESULT_UNWRITABLE or not path.is_file():
        return _lost(run_dir, code)
    return as_result(read_result(path))


def done_before(run_dir: Path, cfg: DictConfig) -> Result | None:
    """The ok result an earlier run left in `run_dir` for this very config (`resume` aside), else None.

    Comparing the whole composed config, not the job number, matters: a sweep re-run with other overrides
    numbers its jobs differently, and directory N then holds another variant's result.
    """
    path = RunDir(run_dir).result
    if not path.is_file():
        return None
    try:
        record = read_result(path)
    except ValueError:
        return None
    wanted = config_record(typed(OmegaConf.to_container(cfg, resolve=True)))
    if record.get("status") != "ok" or not isinstance(record.get("config"), dict):
        return None
    earlier = {key: value for key, value in record["config"].items() if key != "resume"}
    return as_result(record) if earlier == {key: value for key, value in wanted.items() if key != "resume"} else None


@hydra.main(version_base="1.3", config_path="pkg://conf", config_name="config")
def main(cfg: DictConfig) -> None:
    hydra_config = HydraConfig.get()
    cfg = calibrate_run.apply(cfg)  # a calibrate run's own model keys over the command line's
    run_dir = Path(hydra_config.runtime.output_dir)
    setting = "hydra.run.dir" if hydra_config.mode is RunMode.RUN else "hydra.sweep.dir"
    result = None
    stopped_by = None
    try:
        # a run's dir is claimed by the callback before Hydra writes there (this nests); a sweep's job dir here
        with claimed(run_dir, setting) as held:
            result = done_before(run_dir, cfg) if cfg.resume else None
            if result is not None:
                print(f"resume: {run_dir} already holds an ok result of this config; not run again", flush=True)
            else:
                atomic_write(RunDir(run_dir).job, OmegaConf.to_yaml(cfg, resolve=True))
                code, stopped_by = run_child(run_dir, held.fd)
                result = job_result(run_dir, code)
        print(summary(result), flush=True)
    except DirectoryInUse as error:  # a job dir another run holds: one line (Hydra wrote .hydra/ there); sweep goes on
        print(f"error: {error}", file=sys.stderr, flush=True)
        result = None
    except StorageError as error:  # a full or read-only run dir: one line, not Hydra's trace; a sweep goes on
        root = WriteRoot("run dir", run_dir, setting)
        print(f"error: {explain_storage(str(error), [root])}", file=sys.stderr, flush=True)
        result = None
    if stopped_by == signal.SIGINT:  # stop here, and the rest of a sweep with it
        raise KeyboardInterrupt
    if stopped_by is not None:
        sys.exit(128 + stopped_by)
    if (result is None or result.status != "ok") and hydra_config.mode is RunMode.RUN:
        sys.exit(1)


if __name__ == "__main__":
    require_composable(sys.argv[1:])
    main()
