"""Runs one Python function for a Taskdeck `python` task.

Taskdeck runs this with `python -u -c RUNNER SPEC_PATH RESULT_PATH`. SPEC_PATH
holds {"function": "module.path:attr.path", "args": [...], "kwargs": {...}}.
The runner imports the module, follows the attribute path, calls it and
writes one of these to RESULT_PATH:

    {"ok": true, "value": <the JSON-serialisable return value>}
    {"ok": false, "error": "ExcType: message", "traceback": "..."}

Every exception is reported, SystemExit and KeyboardInterrupt included. The
function's own stdout and stderr go to the task's log.
"""

import importlib
import json
import os
import sys
import traceback


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
