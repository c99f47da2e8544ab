#!/usr/bin/env bash
# Keeps the module dependencies one-way (see docs/ARCHITECTURE.md):
# each rule names a folder and what its code must not use.
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
# forbid DIR PATTERN WHY: fails when a Rust file under DIR matches PATTERN.
forbid() {
    local dir=$1 pattern=$2 why=$3 hits
    [ -e "$dir" ] || return 0
    hits=$(grep -rnE "$pattern" "$dir" --include='*.rs' || true)
    if [ -n "$hits" ]; then
        printf 'architecture: %s\n%s\n' "$why" "$hits" >&2
        failed=1
    fi
}
# only_in DIRS PATTERN WHY: fails when a Rust file outside DIRS (folders
# separated by |) and main.rs matches PATTERN.
only_in() {
    local dirs=$1 pattern=$2 why=$3 hits
    hits=$(grep -rnE "$pattern" src --include='*.rs' | grep -v -E -e "^($dirs)/" -e '^src/main.rs:' || true)
    if [ -n "$hits" ]; then
        printf 'architecture: %s\n%s\n' "$why" "$hits" >&2
        failed=1
    fi
}

# Module directions, as docs/ARCHITECTURE.md's module table gives them.
forbid src/model 'crate::(tasks|demo|store|telemetry|scheduler|api|client|app|attach|remote|runtime|bench)' \
    "the task model depends on nothing internal"
forbid src/tasks 'crate::(demo|store|telemetry|scheduler|api|client|app|attach|remote|runtime|bench)' \
    "the task registry depends only on the model"
forbid src/demo 'crate::(store|telemetry|scheduler|api|client|app|attach|remote|runtime|bench)' \
    "the demo workloads use only the model and the task registry"
forbid src/store 'crate::(tasks|demo|telemetry|scheduler|api|client|app|attach|remote|runtime|bench)' \
    "the store depends only on the model"
forbid src/telemetry 'crate::(tasks|demo|store|scheduler|api|client|app|attach|remote|runtime|bench)' \
    "telemetry depends only on the model"
forbid src/scheduler 'crate::(demo|telemetry|api|client|app|attach|remote|runtime|bench)' \
    "the scheduler never depends on telemetry, its callers or the command wiring"
forbid src/api 'crate::(demo|store|telemetry|client|app|attach|remote|runtime|bench)' \
    "the HTTP API depends on the scheduler's handle, the model and the registry"
forbid src/client 'crate::(store|telemetry|scheduler|api|app|attach|remote|runtime|bench)' \
    "the HTTP client depends only on the registry's argument parsing and the demo tasks' names"
forbid src/app 'crate::(store|api|client|attach|remote|runtime|bench)' \
    "the window drives the scheduler's handle, never the HTTP client"
forbid src/attach 'crate::(store|telemetry|remote|runtime|bench)' \
    "the attached window uses the window's seam, the HTTP client and plain types, never a scheduler of its own"
forbid src/remote 'crate::(demo|store|telemetry|api|client|app|attach|runtime|bench)' \
    "the broker module depends on the scheduler's handle, the model and the registry"
only_in src/app '\b(egui|eframe|egui_plot|egui_extras)::' "only the window module uses egui"
only_in src/api '\btiny_http::' "only the HTTP module uses tiny_http"
only_in src/telemetry '\b(sysinfo|nvml_wrapper)::' "only telemetry reads sysinfo/NVML"
only_in src/remote '\b(lapin|amqprs|tokio)::' "only the broker module uses the AMQP client and its runtime"
only_in src/remote '\bring::(hmac|rand|aead|signature)\b' "only the broker module signs and checks messages (and makes their key)"
only_in 'src/api/tls|src/client' '\b(rustls|rustls_native_certs|rcgen)::' \
    "TLS lives in the HTTP listener's front and the HTTP client"
only_in 'src/scheduler|src/remote' '\b(TransportLink|start_external)\b' \
    "only the broker module holds the scheduler's transport side (clients get the Scheduler handle)"

if [ $failed -ne 0 ]; then
    exit 1
fi
echo "architecture: module dependencies are one-way"
