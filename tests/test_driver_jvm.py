"""The driver JVM launched as a job starts: a session attaches to it only where it was launched as the session's
confs ask; otherwise it is replaced, and nothing of it is left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.spark.driver_jvm import ahead_host, launch_conf
from pipeline.spark.plan import LOOPBACK
from tests.helpers.config import compose_config

ROOT = Path(__file__).parent.parent

# In a process of its own (the test session's JVM is in pytest's): a JVM launched ahead for `cluster.driver_memory`
# of argv[2], then a session built from a run's confs with argv[3]; which JVM it ran in and the heap it has.
ATTACH = (
    "import json, os, sys\n"
    "from pathlib import Path\n"
    "from tests.helpers.config import compose_config\n"
    "from pipeline.spark import driver_jvm\n"
    "from pipeline.spark.cluster import cluster\n"
    "from pipeline.spark.session import spark_conf, spark_session\n"
    "run_dir = Path(sys.argv[1])\n"
    "driver_jvm.launch_ahead(compose_config('cluster.cores=1', f'cluster.driver_memory={sys.argv[2]}'))\n"
    "ahead = driver_jvm._launch.thread\n"
    "config = compose_config('cluster.cores=1', f'cluster.driver_memory={sys.argv[3]}')\n"
    "with cluster(config, run_dir) as local, spark_session(spark_conf(config, run_dir, 2**20, local)) as spark:\n"
    "    jvm = spark.sparkContext._jvm\n"
    "    found = {'ahead_s': driver_jvm.ahead_s(), 'launched_ahead': ahead is not None,\n"
    "             'heap_mb': jvm.java.lang.Runtime.getRuntime().maxMemory() // 2**20,\n"
    "             'jvm_pid': jvm.java.lang.ProcessHandle.current().pid()}\n"
    "driver_jvm.stop_driver_jvm()\n"
    "print(json.dumps(found))\n"
)


def attached(tmp_path: Path, ahead_memory: str, session_memory: str) -> dict:
    """A session's JVM, after one was launched ahead (a job's runs in the JVM launched ahead for its settings:
    tests/test_cli.py's multirun of two driver heaps)."""
    done = subprocess.run(
        [sys.executable, "-c", ATTACH, str(tmp_path), ahead_memory, session_memory],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_only_the_confs_a_jvm_reads_at_its_launch_are_launched_with():
    conf = {
        "spark.driver.memory": "2g",
        "spark.driver.extraJavaOptions": "-Dx=1",
        "spark.jars.packages": "org.example:lib:1.0",
        "spark.master": "local[2]",
        "spark.sql.shuffle.partitions": "4",
        "spark.executor.memory": "1g",
    }
    assert launch_conf(conf) == {
        "spark.driver.memory": "2g",
        "spark.driver.extraJavaOptions": "-Dx=1",
        "spark.jars.packages": "org.example:lib:1.0",
    }


def test_a_classic_run_here_launches_its_jvm_ahead_for_loopback():
    assert ahead_host(compose_config()) == LOOPBACK
    assert ahead_host(compose_config("cluster=local_cluster")) == LOOPBACK


@pytest.mark.parametrize(
    "overrides",
    [("engine=torch",), ("cluster=connect",), ("cluster=remote", "cluster.master=sc://127.0.0.1:15002")],
    ids=["engine=torch", "cluster=connect", "a Connect server's client"],
)
def test_no_jvm_is_launched_ahead_for_a_run_whose_driver_is_not_here(overrides):
    assert ahead_host(compose_config(*overrides)) is None


def test_no_jvm_is_launched_ahead_for_a_cluster_that_cannot_be_planned():
    # the run's validation names the key, with no JVM started before it
    assert ahead_host(compose_config("cluster=local_cluster", "cluster.workers=0")) is None


@pytest.mark.slow  # two JVMs launched in a subprocess
def test_a_jvm_launched_ahead_for_other_settings_is_replaced_by_one_for_the_sessions(tmp_path):
    found = attached(tmp_path, "1g", "3g")
    assert found["launched_ahead"] and found["ahead_s"] is None
    assert found["heap_mb"] > 2048  # the session's 3g, not the 1g launched ahead


def test_no_jvm_is_launched_ahead_without_java(monkeypatch, tmp_path):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # no bin/java: the run's own Java check says how to fix it
    assert ahead_host(compose_config()) is None
