#!/usr/bin/env bash
# What idle worker processes cost: starts `taskdeck serve --broker` and N
# `taskdeck worker` processes (default 100) on the local RabbitMQ with their
# default settings, waits until they settle, and prints the CPU the
# scheduler process and RabbitMQ (beam.smp) use over 60 s, in percent of
# one core. Removes its queues afterwards.
#   scripts/idle-workers.sh target/release/taskdeck [N]
set -u
BIN=$1; N=${2:-100}
NS=idle100-$$; URL=amqp://guest:guest@127.0.0.1:5672/%2f
D=$(mktemp -d)
$BIN serve --db $D/t.db --listen 127.0.0.1:0 --workers 0 --broker $URL --broker-namespace $NS >/dev/null 2>&1 &
S=$!
pids=()
for i in $(seq 1 $N); do $BIN worker --broker $URL --broker-namespace $NS --name w$i --concurrency 1 >/dev/null 2>&1 & pids+=($!); done
sleep 30  # all connected and settled
BEAM=$(pgrep -f beam.smp | head -1)
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
s0=$(ticks $S); b0=$(ticks $BEAM); t0=$(date +%s.%N)
sleep 60
s1=$(ticks $S); b1=$(ticks $BEAM); t1=$(date +%s.%N)
HZ=$(getconf CLK_TCK)
python3 -c "
el=$t1-$t0
print('scheduler_cpu_percent', round(($s1-$s0)/$HZ/el*100,2), 'rabbitmq_cpu_percent', round(($b1-$b0)/$HZ/el*100,2), 'seconds', round(el,1))"
kill -TERM "${pids[@]}" 2>/dev/null; wait "${pids[@]}" 2>/dev/null
kill -TERM $S; wait $S
for q in tasks events; do rabbitmqctl delete_queue $NS.$q >/dev/null 2>&1; done
for i in $(seq 1 $N); do rabbitmqctl delete_queue $NS.worker.w$i >/dev/null 2>&1; rabbitmqctl delete_queue $NS.presence.w$i >/dev/null 2>&1; done
