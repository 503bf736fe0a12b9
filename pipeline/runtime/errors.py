"""A failure in one line: its type and message, naming its cause (the task, the file, the reason), not a py4j call.

An error raised in a Spark Python worker reaches the driver as the worker's traceback inside Spark's; an error
of the JVM (a file Spark cannot read, a Python worker that died) as `Py4JJavaError: An error occurred while
calling o81.save.` followed by the Java exception, the failed task, and its `Caused by:` chain. `describe_error`
pulls the first cause into the message; the whole trace stays in `detail`.
"""

from __future__ import annotations

import re
import traceback

WORKER_ERROR = re.compile(r"^(?:[\w.]+\.)?(\w+(?:Error|Exception|Exit)): (.+)$", re.MULTILINE)
JAVA_ERROR = re.compile(r"^: (?:[\w$]+\.)*([\w$]+): (.*)$", re.MULTILINE)
LOST_TASK = re.compile(
    r"Lost task (?P<task>[\d.]+) in stage (?P<stage>[\d.]+) \(TID (?P<tid>\d+)\) \((?P<where>[^)]*)\): "
    r"(?:[\w$]+\.)*(?P<kind>[\w$]+): (?P<reason>.*)"
)
CAUSED_BY = re.compile(r"^Caused by: (?:[\w$]+\.)*([\w$]+)(?:: (.+))?$", re.MULTILINE)
ADVICE = re.compile(r"(?<=\.) (?:Consider|Please|If) .*$|\s*SQLSTATE: \w+\s*$")
TRACEBACK = "Traceback (most recent call last)"


def _plain(message: str) -> str:
    """A Spark message without its advice ("Consider setting ...") or SQLSTATE."""
    return ADVICE.sub("", message.strip()).strip()


def _task(text: str) -> str:
    """`task 0.0 in stage 6.0 (TID 7, localhost executor driver)` for the task whose failure aborted the job."""
    lost = LOST_TASK.search(text)
    return f"task {lost['task']} in stage {lost['stage']} (TID {lost['tid']}, {lost['where']})" if lost else ""


def _spark_cause(text: str) -> tuple[str, str] | None:
    """Type and one-line message of a JVM-side failure in a py4j error's text, or None when there is none."""
    java = JAVA_ERROR.search(text)
    if not java:
        return None
    kind, message = java[1], _plain(java[2])
    lost = LOST_TASK.search(java[2])
    if lost:
        kind, message = lost["kind"], f"{_task(java[2])} failed: {lost['kind']}: {_plain(lost['reason'])}"
    for cause_kind, cause in CAUSED_BY.findall(text):
        cause = _plain(cause)
        if cause and cause not in message:
            message += f" (caused by {cause_kind}: {cause})"
            break
    return kind, message


def describe_error(error: BaseException) -> dict[str, str]:
    """Type and message of a failure: for an error raised in a Spark Python worker, the worker's own and the
    task it failed; for one raised in the JVM, its first cause, the failed task, the file; the trace in detail."""
    text = str(error)
    kind, message = type(error).__name__, text.strip().splitlines()[0] if text.strip() else type(error).__name__
    if TRACEBACK in text:
        worker = WORKER_ERROR.findall(text.split(TRACEBACK)[-1])
        if worker:
            kind, message = worker[-1]
            task = _task(text)
            if task:
                message += f" ({task})"
    elif (cause := _spark_cause(text)) is not None:
        kind, message = cause
    trace = "".join(traceback.format_exception(error))
    return {"type": kind, "message": message, "detail": trace[-20000:]}
