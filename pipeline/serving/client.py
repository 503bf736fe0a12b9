"""What a Spark task calls: send one batch of uint8 crops to the model server, get its predictions back.

One gRPC client per (process, server URL), kept across the tasks a reused Python worker runs. A server that
does not answer (killed, stopped, never started) fails the task with `ServerUnavailable` naming the server:
the run then fails with that reason (the tasks are not retried against a restarted server: a server that
died mid-run says something about the variant that a silent restart would hide). Every request has a
deadline (`topology.request_timeout_s`), so a server that hangs fails the task instead of the run hanging.

On a cluster of other machines there is one server per worker node (`pipeline.serving.nodes`) and a task uses
its own node's, found by the node's name (`ServerPerNode`): a task on a node without a server fails naming it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from pipeline.inference.model import Predictions

MODEL_NAME = "classifier"  # pipeline.serving.server.MODEL_NAME (not imported: that module needs PyTriton)
INPUT = "crops"
OUTPUTS = ("top1", "prob", "top5")


class ServerUnavailable(RuntimeError):
    """The model server did not answer a request."""


@lru_cache(maxsize=4)
def _client(url: str) -> Any:
    import tritonclient.grpc as grpc

    return grpc.InferenceServerClient(url)


@lru_cache(maxsize=1)
def this_node() -> str:
    """The name of the node this process runs on, as the server-starting task on it recorded it."""
    return socket.gethostname()


@dataclass(frozen=True)
class ServerAddress:
    """Where a task finds the model server: a gRPC endpoint (on 127.0.0.1, or a node's address), and a
    request's deadline."""

    url: str
    timeout_s: float = 120.0

    def predict(self, crops: np.ndarray) -> Predictions:
        """Predictions for a uint8 NCHW batch from the server at `url`; raises ServerUnavailable."""
        import tritonclient.grpc as grpc
        from tritonclient.utils import InferenceServerException

        batch = grpc.InferInput(INPUT, list(crops.shape), "UINT8")
        batch.set_data_from_numpy(np.ascontiguousarray(crops, dtype=np.uint8))
        outputs = [grpc.InferRequestedOutput(name) for name in OUTPUTS]
        try:
            result = _client(self.url).infer(MODEL_NAME, [batch], outputs=outputs, client_timeout=self.timeout_s)
        except InferenceServerException as error:
            raise ServerUnavailable(
                f"the model server at {self.url} did not answer a batch of {len(crops)} crops: {error.message()} "
                f"(status {error.status()}); the run fails rather than retry against a restarted server"
            ) from None
        return Predictions(
            top1=result.as_numpy("top1").reshape(-1).astype(np.int64),
            prob=result.as_numpy("prob").reshape(-1),
            top5=result.as_numpy("top5").astype(np.int64),
        )


@dataclass(frozen=True)
class ServerPerNode:
    """Where a task finds its own node's model server: node name (`socket.gethostname()` there) -> gRPC URL."""

    urls: tuple[tuple[str, str], ...]
    timeout_s: float = 120.0

    def on(self, node: str) -> ServerAddress:
        """The server of `node`; ServerUnavailable naming the node when none was started there."""
        for name, url in self.urls:
            if name == node:
                return ServerAddress(url, self.timeout_s)
        started = ", ".join(f"{name} ({url})" for name, url in self.urls) or "none"
        raise ServerUnavailable(
            f"no model server on node {node}: servers were started on {started}; an executor on a node the "
            "server-starting stage did not reach (one task per executor, when the run began) has no server"
        )

    def predict(self, crops: np.ndarray) -> Predictions:
        """Predictions from this node's server (`ServerAddress.predict`)."""
        return self.on(this_node()).predict(crops)
