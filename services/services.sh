#!/usr/bin/env bash
# Real local services without Docker: Apache Kafka 4.x (KRaft, broker + controller in
# one JVM) resolved from Maven Central, and Debian's redis-server.
#
#   services.sh up | down | status | reset
#
# Environment (defaults in brackets):
#   SERVICES_DIR           cache dir for jars, data, logs, pid files [<repo>/.cache/services]
#   KAFKA_PORT             broker listener port on 127.0.0.1 [9092]
#   KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1 [9093]
#   KAFKA_LIBS             where the Kafka jars are resolved to [$SERVICES_DIR/kafka/libs]
#   KAFKA_HEAP             JVM heap for the broker [512m]
#   REDIS_PORT             redis-server port on 127.0.0.1 [6379]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVICES_DIR=${SERVICES_DIR:-$ROOT/.cache/services}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
REDIS_PORT=${REDIS_PORT:-6379}
PYTHON=${PYTHON:-python3}

KAFKA_DIR=$SERVICES_DIR/kafka
KAFKA_LIBS=${KAFKA_LIBS:-$KAFKA_DIR/libs}
KAFKA_PID=$KAFKA_DIR/kafka.pid
KAFKA_LOG=$KAFKA_DIR/kafka.log
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_DATA=$KAFKA_DIR/data
REDIS_DIR=$SERVICES_DIR/redis
REDIS_PID=$REDIS_DIR/redis.pid
REDIS_LOG=$REDIS_DIR/redis.log

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

kafka_config() {
  cat >"$KAFKA_CONF" <<CONF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
log.retention.hours=24
CONF
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

kafka_up() {
  mkdir -p "$KAFKA_DIR"
  if alive "$KAFKA_PID"; then
    say "kafka already running (pid $(cat "$KAFKA_PID")) at 127.0.0.1:$KAFKA_PORT"
    return 0
  fi
  refuse_foreign_port "$KAFKA_PORT" kafka KAFKA_PORT
  refuse_foreign_port "$KAFKA_CONTROLLER_PORT" "kafka controller" KAFKA_CONTROLLER_PORT
  kafka_jars
  kafka_config
  if [[ ! -f $KAFKA_DATA/meta.properties ]]; then
    say "formatting kafka storage in $KAFKA_DATA"
    local cluster_id; cluster_id=$(kafka_java kafka.tools.StorageTool random-uuid 2>/dev/null)
    kafka_java kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF" >>"$KAFKA_LOG" 2>&1 \
      || die "kafka storage format failed; see $KAFKA_LOG"
  fi
  say "starting kafka (KRaft) on 127.0.0.1:$KAFKA_PORT"
  nohup java -Xms128m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" >>"$KAFKA_LOG" 2>&1 &
  echo $! >"$KAFKA_PID"
}

redis_bin() {
  if ! command -v redis-server >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      say "installing redis-server (Debian package)"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server) >"$REDIS_DIR/apt.log" 2>&1 \
        || die "apt-get install redis-server failed; see $REDIS_DIR/apt.log"
    else
      die "redis-server not found: install it (Debian/Ubuntu: sudo apt-get install redis-server)"
    fi
  fi
}

redis_up() {
  mkdir -p "$REDIS_DIR"
  if alive "$REDIS_PID"; then
    say "redis already running (pid $(cat "$REDIS_PID")) at 127.0.0.1:$REDIS_PORT"
    return 0
  fi
  refuse_foreign_port "$REDIS_PORT" redis REDIS_PORT
  redis_bin
  say "starting redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" \
    --daemonize yes --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" \
    --appendonly yes --appendfsync everysec --save "" --databases 64 >/dev/null
}

wait_ready() {
  local deadline=$((SECONDS + 90))
  until redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; do
    ((SECONDS < deadline)) || die "redis did not answer PING; see $REDIS_LOG"
    sleep 0.2
  done
  say "redis ready at redis://127.0.0.1:$REDIS_PORT/0 (PING -> PONG)"
  "$PYTHON" "$ROOT/services/kafka_ready.py" "127.0.0.1:$KAFKA_PORT" --wait 90 \
    || die "kafka did not answer a metadata request; see $KAFKA_LOG"
}

stop_pid() {  # $1 pid file, $2 name
  if ! alive "$1"; then
    say "$2 not running"; rm -f "$1"; return 0
  fi
  local pid; pid=$(cat "$1")
  kill "$pid"
  for _ in $(seq 1 150); do
    kill -0 "$pid" 2>/dev/null || { say "$2 stopped"; rm -f "$1"; return 0; }
    sleep 0.2
  done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$1"
  say "$2 killed after 30 s"
}

status() {
  local rc=0
  if alive "$KAFKA_PID"; then
    say "kafka: running (pid $(cat "$KAFKA_PID"))"
    "$PYTHON" "$ROOT/services/kafka_ready.py" "127.0.0.1:$KAFKA_PORT" || rc=1
  else
    say "kafka: stopped (127.0.0.1:$KAFKA_PORT)"; rc=1
  fi
  if alive "$REDIS_PID"; then
    say "redis: running (pid $(cat "$REDIS_PID")) at redis://127.0.0.1:$REDIS_PORT/0, PING -> $(redis-cli -p "$REDIS_PORT" ping 2>&1)"
  else
    say "redis: stopped (127.0.0.1:$REDIS_PORT)"; rc=1
  fi
  return $rc
}

case ${1:-} in
  up) kafka_up; redis_up; wait_ready ;;
  down) stop_pid "$KAFKA_PID" kafka; stop_pid "$REDIS_PID" redis ;;
  status) status ;;
  reset) stop_pid "$KAFKA_PID" kafka; stop_pid "$REDIS_PID" redis
         rm -rf "$KAFKA_DATA" "$KAFKA_LOG" "$REDIS_DIR"; say "kafka and redis data removed" ;;
  *) die "usage: services.sh up|down|status|reset" ;;
esac
