"""A cluster the harness did not start: where the driver is reachable, and why executors did not register, as the
standalone master's and workers' JSON says (served here by a stand-in on loopback)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.spark.cluster import cluster, driver_host
from pipeline.spark.executors import diagnosis, master_webui
from pipeline.spark.plan import LOOPBACK, ClusterError
from tests.helpers.config import compose_config

APP = "app-20261206141509-0000"
COMMAND = (  # an executor's command as a worker's JSON shows it
    "Command(org.apache.spark.executor.CoarseGrainedExecutorBackend,List(--driver-url, "
    "spark://CoarseGrainedScheduler@127.0.0.1:35293, --executor-id, {{EXECUTOR_ID}}))"
)


@contextmanager
def serving(pages: dict[str, dict]) -> Iterator[str]:
    """An HTTP server on loopback answering PATH/json/ with `pages[PATH]`; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            page = pages.get(self.path.removesuffix("/json/"))
            body = json.dumps(page).encode()
            self.send_response(200 if page is not None else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _app(cores: int) -> dict:
    return {"id": APP, "state": "RUNNING", "cores": cores, "memoryperexecutor": 1024, "resourcesperexecutor": []}


def test_executors_that_exit_at_launch_are_counted_per_worker_with_the_driver_address_they_were_told():
    finished = [{"id": n, "appid": APP, "appdesc": {"command": COMMAND}} for n in range(3)]
    pages: dict[str, dict] = {"/w1": {"executors": [], "finishedexecutors": finished}}
    with serving(pages) as base:  # the master's page names the worker's, on the same stand-in
        worker = {"host": "10.0.0.2", "state": "ALIVE", "webuiaddress": base + "/w1"}
        pages[""] = {"activeapps": [_app(1)], "workers": [worker]}
        said = diagnosis(APP, base)
    assert "granted it 1 cores and executors exited before registering (10.0.0.2: 3)" in said
    assert "spark://CoarseGrainedScheduler@127.0.0.1:35293" in said and "cluster.driver_host" in said


def test_an_application_no_worker_can_host_is_told_with_what_the_workers_offer():
    worker = {"host": "10.0.0.2", "state": "ALIVE", "coresfree": 1, "memoryfree": 512, "resourcesfree": {}}
    with serving({"": {"activeapps": [_app(0)], "workers": [worker]}}) as base:
        said = diagnosis(APP, base)
    assert "granted it no cores" in said and "1024 MiB" in said and "10.0.0.2: 1 cores, 512 MiB free" in said


def test_a_master_whose_web_ui_does_not_answer_is_named_with_the_key_that_sets_it():
    with serving({}) as base:
        said = diagnosis(APP, base + "/nothing-here")
    assert "did not answer (set cluster.master_webui" in said


def test_the_master_web_ui_is_port_8080_of_the_masters_host_unless_configured():
    assert master_webui("spark://10.1.2.3:7077", None) == "http://10.1.2.3:8080"
    assert master_webui("spark://10.1.2.3:7077", "http://10.1.2.3:9090/") == "http://10.1.2.3:9090"


def test_a_yarn_or_kubernetes_application_is_sent_to_its_cluster_managers_logs():
    assert master_webui("yarn", None) is None and master_webui("k8s://https://api:443", None) is None
    assert "yarn logs -applicationId application_1_0001" in diagnosis("application_1_0001", None)


def test_the_clusters_the_harness_starts_keep_the_driver_on_loopback():
    for overrides in ([], ["cluster=local_cluster"], ["cluster=standalone"], ["cluster=connect"]):
        assert driver_host(compose_config(*overrides).cluster) == LOOPBACK


def test_a_remote_masters_driver_is_this_machines_address_on_the_route_to_it(tmp_path):
    config = compose_config("cluster=remote", "cluster.master=spark://127.0.0.1:7077")
    with cluster(config, tmp_path) as remote:
        assert remote.driver_host == "127.0.0.1"


def test_cluster_driver_host_names_the_drivers_address_itself():
    config = compose_config("cluster=remote", "cluster.master=spark://127.0.0.1:7077", "cluster.driver_host=10.9.8.7")
    assert driver_host(config.cluster) == "10.9.8.7"


def test_a_master_this_machine_has_no_route_to_fails_before_spark_starts_naming_the_key(tmp_path):
    config = compose_config("cluster=remote", "cluster.master=spark://nowhere.invalid:7077")
    with pytest.raises(ClusterError, match="cluster.driver_host=ADDR"):
        with cluster(config, tmp_path):
            pass
