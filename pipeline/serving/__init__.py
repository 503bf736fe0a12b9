"""The model server of `topology=model_server`: one inference server per worker node that holds the model
(one instance per GPU) and batches requests dynamically, while every Spark task slot decodes and preprocesses.

- environment: the Python environment the server runs in (PyTriton and NumPy < 2, beside the project's own);
- server: the server process itself (`python -m pipeline.serving.server SPEC`), our model code, nothing Spark;
- client: what a task calls to send uint8 crops and get predictions back (its own node's server on a cluster);
- launcher: the harness side on this machine: start it on 127.0.0.1 with free ports, watch it, read its
  statistics, stop it by PID however the run ends;
- nodes, on_node, node_stats: on a cluster of other machines (cluster=remote), a server on each worker node,
  started and stopped by barrier stages of the running application, seen from the driver per node.
"""
