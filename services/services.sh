#!/usr/bin/env bash
# Real local services without Docker: Apache Kafka 4.x (KRaft) resolved from Maven
# Central, and Debian's redis-server; each as one node or as a local cluster.
#
#   services.sh up | down | status | reset
#
# Environment (defaults in brackets):
#   SERVICES_DIR           cache dir for jars, data, logs, pid files [<repo>/.cache/services]
#   KAFKA_BROKERS          1: one JVM, broker + controller; N > 1: N JVMs, each broker + controller,
#                          one KRaft quorum of N voters (a majority must live) [1]
#   KAFKA_PORT             first broker's port on 127.0.0.1; broker i listens on KAFKA_PORT+i-1 [9092]
#   KAFKA_CONTROLLER_PORT  first KRaft controller port [9093 for one broker, KAFKA_PORT+100 for N]
#   KAFKA_LIBS             where the Kafka jars are resolved to [$SERVICES_DIR/kafka/libs]
#   KAFKA_HEAP             JVM heap per broker [512m]
#   REDIS_CLUSTER          0: one redis-server; 1: a Redis Cluster of 3 masters + 3 replicas [0]
#   REDIS_PORT             redis-server port, or the first cluster node's (the others follow) [6379]
#
# Switching a service between one node and a cluster stops the other variant first (its
# data is kept): both use the same first ports, so clients find either at the usual address.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICES_DIR=${SERVICES_DIR:-$ROOT/.cache/services}
KAFKA_BROKERS=${KAFKA_BROKERS:-1}
KAFKA_PORT=${KAFKA_PORT:-9092}
if [[ $KAFKA_BROKERS == 1 ]]; then
  KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
else
  KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 100))}
fi
KAFKA_HEAP=${KAFKA_HEAP:-512m}
REDIS_CLUSTER=${REDIS_CLUSTER:-0}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_CLUSTER_NODES=6
PYTHON=${PYTHON:-python3}

KAFKA_DIR=$SERVICES_DIR/kafka
KAFKA_CLUSTER_DIR=$SERVICES_DIR/kafka-cluster
KAFKA_LIBS=${KAFKA_LIBS:-$KAFKA_DIR/libs}
REDIS_DIR=$SERVICES_DIR/redis
REDIS_CLUSTER_DIR=$SERVICES_DIR/redis-cluster

say() { printf '%s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

port_holder() {
  command -v ss >/dev/null && ss -ltnpH "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n1
}

refuse_foreign_port() {  # $1 port, $2 service
  if port_open "$1"; then
    local holder; holder=$(port_holder "$1")
    die "port $1 for $2 is held by another process${holder:+: $holder}; stop it or set ${3}=<free port>"
  fi
}

kafka_jars() {
  if ! compgen -G "$KAFKA_LIBS/kafka_2.13-*.jar" >/dev/null; then
    command -v mvn >/dev/null || die "mvn not found: install Maven (apt-get install maven) to resolve the Kafka jars"
    command -v java >/dev/null || die "java not found: install a JDK 17+ (apt-get install openjdk-17-jre-headless)"
    say "resolving Apache Kafka from Maven Central into $KAFKA_LIBS"
    mvn -q -B -f "$ROOT/services/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$KAFKA_LIBS" -DincludeScope=runtime >"$KAFKA_DIR/mvn.log" 2>&1 \
      || die "mvn could not resolve the Kafka jars; see $KAFKA_DIR/mvn.log"
  fi
}

kafka_java() { java -Xms128m -Xmx"$KAFKA_HEAP" -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" -cp "$KAFKA_LIBS/*" "$@"; }

# Node i (1-based) of the configured variant: its directory and ports.
kafka_node_dir() { if [[ $KAFKA_BROKERS == 1 ]]; then echo "$KAFKA_DIR"; else echo "$KAFKA_CLUSTER_DIR/node-$1"; fi; }
kafka_node_port() { echo $((KAFKA_PORT + $1 - 1)); }
kafka_controller_port() { echo $((KAFKA_CONTROLLER_PORT + $1 - 1)); }
kafka_bootstrap() {
  local i out=""
  for i in $(seq 1 "$KAFKA_BROKERS"); do out+="${out:+,}127.0.0.1:$(kafka_node_port "$i")"; done
  echo "$out"
}
# Every pid file of either variant, so down/status/reset find whatever runs.
kafka_pids() { compgen -G "$KAFKA_DIR/kafka.pid"; compgen -G "$KAFKA_CLUSTER_DIR/node-*/kafka.pid"; return 0; }
redis_pids() { compgen -G "$REDIS_DIR/redis.pid"; compgen -G "$REDIS_CLUSTER_DIR/node-*/redis.pid"; return 0; }

kafka_config() {  # $1 node index
  local dir replicas min_isr voters="" i
  dir=$(kafka_node_dir "$1")
  replicas=$((KAFKA_BROKERS < 3 ? KAFKA_BROKERS : 3))
  min_isr=$((replicas > 1 ? replicas - 1 : 1))
  for i in $(seq 1 "$KAFKA_BROKERS"); do voters+="${voters:+,}$i@127.0.0.1:$(kafka_controller_port "$i")"; done
  cat >"$dir/server.properties" <<CONF
process.roles=broker,controller
node.id=$1
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(kafka_node_port "$1"),CONTROLLER://127.0.0.1:$(kafka_controller_port "$1")
advertised.listeners=PLAINTEXT://127.0.0.1:$(kafka_node_port "$1")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
default.replication.factor=$replicas
offsets.topic.replication.factor=$replicas
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$replicas
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
CONF
}

kafka_log4j() {
  cat >"$KAFKA_DIR/log4j2.properties" <<CONF
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.kafka.name=kafka.server.KafkaRaftServer
logger.kafka.level=INFO
CONF
}

pid_name() {  # $1 service, $2 pid file: "kafka", or "kafka node-2" for a cluster node
  if [[ $2 == */node-* ]]; then echo "$1 $(basename "$(dirname "$2")")"; else echo "$1"; fi
}

stop_other_variant() {  # $1 service, $2 glob of the other variant's pid files, $3 what they are
  local pid_file running=()
  for pid_file in $(compgen -G "$2" || true); do
    alive "$pid_file" && running+=("$pid_file")
  done
  ((${#running[@]} == 0)) && return 0
  say "$1: stopping the $3 first (its data is kept)"
  stop_all "$1" "${running[@]}"
}

kafka_up() {
  mkdir -p "$KAFKA_DIR"
  if [[ $KAFKA_BROKERS == 1 ]]; then
    stop_other_variant kafka "$KAFKA_CLUSTER_DIR/node-*/kafka.pid" "multi-broker cluster"
  else
    stop_other_variant kafka "$KAFKA_DIR/kafka.pid" "single broker"
  fi
  local i
  for i in $(seq 1 "$KAFKA_BROKERS"); do kafka_node_up "$i"; done
}

kafka_node_up() {  # $1 node index
  local dir port pid_file log
  dir=$(kafka_node_dir "$1"); port=$(kafka_node_port "$1")
  pid_file=$dir/kafka.pid; log=$dir/kafka.log
  mkdir -p "$dir"
  if alive "$pid_file"; then
    say "kafka already running (pid $(cat "$pid_file")) at 127.0.0.1:$port"
    return 0
  fi
  refuse_foreign_port "$port" kafka KAFKA_PORT
  refuse_foreign_port "$(kafka_controller_port "$1")" "kafka controller" KAFKA_CONTROLLER_PORT
  kafka_jars
  kafka_log4j
  kafka_config "$1"
  if [[ ! -f $dir/data/meta.properties ]]; then
    say "formatting kafka storage in $dir/data"
    # Every node of a cluster is formatted with the same cluster id.
    local id_file=$KAFKA_CLUSTER_DIR/cluster.id
    [[ $KAFKA_BROKERS == 1 ]] && id_file=$dir/cluster.id
    if [[ ! -s $id_file ]]; then
      mkdir -p "$(dirname "$id_file")"
      kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null >"$id_file"
    fi
    kafka_java kafka.tools.StorageTool format -t "$(cat "$id_file")" -c "$dir/server.properties" >>"$log" 2>&1 \
      || die "kafka storage format failed; see $log"
  fi
  say "starting kafka (KRaft) on 127.0.0.1:$port"
  nohup java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$dir/server.properties" >>"$log" 2>&1 &
  echo $! >"$pid_file"
}

redis_bin() {
  if ! command -v redis-server >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      say "installing redis-server (Debian package)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >"$SERVICES_DIR/redis-apt.log" 2>&1 \
        || die "apt-get install redis-server failed; see $SERVICES_DIR/redis-apt.log"
    else
      die "redis-server not found: install it (Debian/Ubuntu: sudo apt-get install redis-server)"
    fi
  fi
}

redis_node_up() {  # $1 dir, $2 port, then extra redis-server options
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  if alive "$dir/redis.pid"; then
    say "redis already running (pid $(cat "$dir/redis.pid")) at 127.0.0.1:$port"
    return 0
  fi
  refuse_foreign_port "$port" redis REDIS_PORT
  redis_bin
  say "starting redis on 127.0.0.1:$port"
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
    --appendonly yes --appendfsync everysec --save "" "$@" >/dev/null
}

redis_up() {
  mkdir -p "$SERVICES_DIR"
  if [[ $REDIS_CLUSTER == 1 ]]; then
    stop_other_variant redis "$REDIS_DIR/redis.pid" "single redis-server"
    local i
    for i in $(seq 0 $((REDIS_CLUSTER_NODES - 1))); do
      # A short node timeout: a killed master's replica takes over within a few seconds.
      redis_node_up "$REDIS_CLUSTER_DIR/node-$((REDIS_PORT + i))" $((REDIS_PORT + i)) \
        --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000
    done
  else
    stop_other_variant redis "$REDIS_CLUSTER_DIR/node-*/redis.pid" "Redis Cluster"
    redis_node_up "$REDIS_DIR" "$REDIS_PORT" --databases 64
  fi
}

wait_ping() {  # $1 port
  local deadline=$((SECONDS + 90))
  until redis-cli -p "$1" ping 2>/dev/null | grep -q PONG; do
    ((SECONDS < deadline)) || die "redis on port $1 did not answer PING; see its redis.log"
    sleep 0.2
  done
}

cluster_state() { redis-cli -p "$REDIS_PORT" cluster info 2>/dev/null | tr -d '\r' | sed -n 's/^cluster_state://p'; }

redis_cluster_ready() {
  local i nodes=()
  for i in $(seq 0 $((REDIS_CLUSTER_NODES - 1))); do
    wait_ping $((REDIS_PORT + i)); nodes+=("127.0.0.1:$((REDIS_PORT + i))")
  done
  # Slots are assigned once; later starts reload them from each node's nodes.conf.
  if [[ $(redis-cli -p "$REDIS_PORT" cluster info | tr -d '\r' | sed -n 's/^cluster_slots_assigned://p') == 0 ]]; then
    say "creating the Redis Cluster: 3 masters + 3 replicas"
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 1 --cluster-yes >"$REDIS_CLUSTER_DIR/create.log" 2>&1 \
      || die "redis-cli --cluster create failed; see $REDIS_CLUSTER_DIR/create.log"
  fi
  local deadline=$((SECONDS + 90))
  until [[ $(cluster_state) == ok ]]; do
    ((SECONDS < deadline)) || die "the Redis Cluster did not reach cluster_state:ok; see $REDIS_CLUSTER_DIR/node-*/redis.log"
    sleep 0.3
  done
  say "redis cluster ready at redis://127.0.0.1:$REDIS_PORT (REDIS_CLUSTER=1; ${#nodes[@]} nodes, cluster_state:ok)"
}

wait_ready() {
  if [[ $REDIS_CLUSTER == 1 ]]; then
    redis_cluster_ready
  else
    wait_ping "$REDIS_PORT"
    say "redis ready at redis://127.0.0.1:$REDIS_PORT/0 (PING -> PONG)"
  fi
  "$PYTHON" "$ROOT/services/kafka_ready.py" "127.0.0.1:$KAFKA_PORT" --wait 90 --brokers "$KAFKA_BROKERS" \
    || die "kafka did not list $KAFKA_BROKERS broker(s); see $(kafka_node_dir 1)/kafka.log"
  [[ $KAFKA_BROKERS == 1 ]] || say "KAFKA_BOOTSTRAP_SERVERS=$(kafka_bootstrap)"
}

await_exit() {  # $1 pid, $2 name, $3 pid file: wait for it (30 s), then SIGKILL and wait until it is gone
  for _ in $(seq 1 150); do
    kill -0 "$1" 2>/dev/null || { say "$2 stopped"; rm -f "$3"; return 0; }
    sleep 0.2
  done
  kill -9 "$1" 2>/dev/null || true
  while kill -0 "$1" 2>/dev/null; do sleep 0.1; done  # its ports are free only once it is gone
  rm -f "$3"
  say "$2 killed after 30 s"
}

stop_all() {  # $1 service, then pid files; one line when nothing runs
  # Signal every node first, then wait: a cluster node stopped last would wait for a quorum
  # that is already gone.
  local service=$1 pid_file files=() pids=() i; shift
  for pid_file in "$@"; do
    alive "$pid_file" || continue
    files+=("$pid_file"); pids+=("$(cat "$pid_file")")
    kill "${pids[-1]}"
  done
  ((${#files[@]})) || { say "$service not running"; return 0; }
  for i in "${!files[@]}"; do
    await_exit "${pids[$i]}" "$(pid_name "$service" "${files[$i]}")" "${files[$i]}"
  done
}

status() {
  local rc=0 pid_file running=0
  for pid_file in $(kafka_pids); do
    alive "$pid_file" || continue
    running=1
    say "kafka: running (pid $(cat "$pid_file")) $(grep -o 'PLAINTEXT://[^,]*' "$(dirname "$pid_file")/server.properties" | head -n1)"
  done
  if ((running)); then
    "$PYTHON" "$ROOT/services/kafka_ready.py" "127.0.0.1:$KAFKA_PORT" || rc=1
  else
    say "kafka: stopped (127.0.0.1:$KAFKA_PORT)"; rc=1
  fi
  running=0
  for pid_file in $(redis_pids); do
    alive "$pid_file" || continue
    running=1
    local port; port=$(basename "$(dirname "$pid_file")" | sed -n 's/^node-//p')
    port=${port:-$REDIS_PORT}
    say "redis: running (pid $(cat "$pid_file")) at redis://127.0.0.1:$port/0, PING -> $(redis-cli -p "$port" ping 2>&1)"
  done
  if ((running)); then
    [[ -z $(compgen -G "$REDIS_CLUSTER_DIR/node-*/redis.pid") ]] || say "redis cluster: cluster_state:$(cluster_state)"
  else
    say "redis: stopped (127.0.0.1:$REDIS_PORT)"; rc=1
  fi
  return $rc
}

case ${1:-} in
  up) kafka_up; redis_up; wait_ready ;;
  down) stop_all kafka $(kafka_pids); stop_all redis $(redis_pids) ;;
  status) status ;;
  reset) stop_all kafka $(kafka_pids); stop_all redis $(redis_pids)
         rm -rf "$KAFKA_DIR/data" "$KAFKA_DIR/kafka.log" "$KAFKA_DIR/cluster.id" "$KAFKA_CLUSTER_DIR" "$REDIS_DIR" "$REDIS_CLUSTER_DIR"
         say "kafka and redis data removed" ;;
  *) die "usage: services.sh up|down|status|reset" ;;
esac
