"""Runs one Python function for a Taskdeck `python` task.

Taskdeck runs this with `python -u -c RUNNER SPEC_PATH RESULT_PATH`. SPEC_PATH
holds {"function": "module.path:attr.path", "args": [...], "kwargs": {...}}.
The runner imports the module, follows the attribute path, calls it and
writes one of these to RESULT_PATH:

    {"ok": true, "value": <the JSON-serialisable return value>}
    {"ok": false, "error": "ExcType: message", "traceback": "..."}

Every exception is reported, SystemExit and KeyboardInterrupt included. The
function's own stdout and stderr go to the task's log. `from taskdeck import
progress` works inside the function even without the client package.
"""

import importlib
import json
import os
import sys
import traceback


def install_progress_helper():
    """Makes `from taskdeck import progress` work inside the task when the
    Taskdeck client package is not installed: a minimal `taskdeck` module
    whose `progress` appends one JSON line to the file in TASKDECK_PROGRESS."""
    import importlib.util

    try:
        if importlib.util.find_spec("taskdeck") is not None:
            return
    except (ImportError, ValueError):
        pass
    import math
    import numbers
    import threading
    import types

    lock = threading.Lock()

    def progress(fraction=None, message=None, **metrics):
        """Reports how far the task is (0 to 1), a message and numeric metrics."""
        if fraction is not None:
            if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
                raise ValueError("fraction must be a number from 0 to 1")
            if not 0.0 <= float(fraction) <= 1.0:
                raise ValueError("fraction must be a number from 0 to 1, got %r" % (fraction,))
        for name, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError("metric %r must be a number, got %r" % (name, value))
            if not math.isfinite(value):
                raise ValueError("metric %r must be finite, got %r" % (name, value))
        if message is not None and not isinstance(message, str):
            raise ValueError("message must be text, got %r" % (message,))
        path = os.environ.get("TASKDECK_PROGRESS")
        if not path:
            return False
        report = {}
        if fraction is not None:
            report["fraction"] = float(fraction)
        if message is not None:
            report["message"] = message
        if metrics:
            report["metrics"] = dict(metrics)
        line = json.dumps(report) + "\n"
        with lock:
            with open(path, "a", encoding="utf-8") as progress_file:
                progress_file.write(line)
        return True

    module = types.ModuleType("taskdeck")
    module.__doc__ = "Progress reporting for code running inside a Taskdeck task."
    module.progress = progress
    sys.modules["taskdeck"] = module


def call(spec):
    """Imports the module, resolves the attribute path and calls it."""
    module_name, _, attr_path = spec["function"].partition(":")
    target = importlib.import_module(module_name)
    for name in attr_path.split("."):
        target = getattr(target, name)
    return target(*spec.get("args", []), **spec.get("kwargs", {}))


def failure(exc):
    """Describes an exception, leaving the runner's own frames out of the traceback."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == "<string>":
        tb = tb.tb_next
    return {
        "ok": False,
        "error": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
        "traceback": "".join(traceback.format_exception(type(exc), exc, tb)),
    }


def main():
    spec_path, result_path = sys.argv[1], sys.argv[2]
    try:
        with open(spec_path, encoding="utf-8") as spec_file:
            spec = json.load(spec_file)
        install_progress_helper()
        value = call(spec)
    except BaseException as exc:  # The task reports every failure, exits included.
        text = json.dumps(failure(exc))
    else:
        try:
            # NaN and infinity are not JSON, so they count as not serialisable.
            text = json.dumps({"ok": True, "value": value}, allow_nan=False)
        except (TypeError, ValueError) as exc:
            error = "TypeError: the return value of %s is not JSON-serialisable: %s" % (
                spec["function"],
                exc,
            )
            text = json.dumps({"ok": False, "error": error, "traceback": ""})
    sys.stdout.flush()
    sys.stderr.flush()
    # Write then rename, so Taskdeck never reads a half-written result.
    partial_path = result_path + ".partial"
    with open(partial_path, "w", encoding="utf-8") as result_file:
        result_file.write(text)
    os.replace(partial_path, result_path)


main()
