// Socket.IO load on one `vmcloud serve`, with the official client.
//
// 1. Opens CONNECTIONS authenticated connections (websocket transport, at most
//    IN_FLIGHT handshakes at once): the last LISTENERS with the listener
//    account's token, the others with the crowd account's. Reports the
//    server's extra RSS once all are open (VmRSS now minus VmRSS before).
// 2. Publishes EVENTS `instance.status` envelopes, one every INTERVAL_MS, on
//    the server's Redis channel, addressed to the listener account's room, as
//    the instance module publishes them; each carries the send time, and
//    every listener records how long its copy took (publish → Redis → the
//    server's relay → Socket.IO fan-out → client callback).
//
// Usage: node bench.mjs URL SERVER_PID CROWD_TOKEN LISTENER_TOKEN LISTENER_ID REDIS_PORT CHANNEL
// Environment: CONNECTIONS (10000), LISTENERS (1000), EVENTS (100),
// INTERVAL_MS (50), IN_FLIGHT (200).
import { readFileSync } from "node:fs";
import net from "node:net";
import { performance } from "node:perf_hooks";
import { io } from "socket.io-client";

const [url, serverPid, crowdToken, listenerToken, listenerId, redisPort, channel] =
  process.argv.slice(2);
const env = (name, fallback) => Number(process.env[name] ?? fallback);
const CONNECTIONS = env("CONNECTIONS", 10000);
const LISTENERS = env("LISTENERS", 1000);
const EVENTS = env("EVENTS", 100);
const INTERVAL_MS = env("INTERVAL_MS", 50);
const IN_FLIGHT = env("IN_FLIGHT", 200);

const rssKib = () =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${serverPid}/status`, "utf8"))[1]);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

function open(token) {
  return new Promise((resolve, reject) => {
    const socket = io(url, {
      auth: { token },
      transports: ["websocket"],
      reconnection: false,
      timeout: 60000,
    });
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (err) => reject(err));
  });
}

const baseline = rssKib();
const sockets = [];
const latencies = [];
const started = performance.now();
let next = 0;
async function opener() {
  while (next < CONNECTIONS) {
    const index = next++;
    const listener = index >= CONNECTIONS - LISTENERS;
    const socket = await open(listener ? listenerToken : crowdToken);
    if (listener) {
      socket.on("instance.status", (event) => latencies.push(performance.now() - event.sent_ms));
    }
    sockets.push(socket);
  }
}
await Promise.all(Array.from({ length: IN_FLIGHT }, opener));
const openSecs = (performance.now() - started) / 1000;
await sleep(3000);
const loaded = rssKib();
console.log(
  `connections: ${sockets.length} open in ${openSecs.toFixed(1)} s; server RSS ` +
    `${(baseline / 1024).toFixed(1)} MiB before, ${(loaded / 1024).toFixed(1)} MiB after: ` +
    `+${((loaded - baseline) / 1024).toFixed(1)} MiB ` +
    `(${(((loaded - baseline) * 1024) / sockets.length).toFixed(0)} bytes per connection)`,
);

// A bare RESP client: PUBLISH needs nothing more.
const redis = net.connect(Number(redisPort), "127.0.0.1");
redis.on("data", () => {});
await new Promise((done) => redis.once("connect", done));
const bulk = (text) => `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
const instanceId = "0190c0de-0000-7000-8000-000000000001";
for (let n = 0; n < EVENTS; n++) {
  const envelope = {
    audience: [{ room: "user", id: listenerId }],
    event: {
      type: "instance.status",
      timestamp: new Date().toISOString(),
      id: instanceId,
      from: "running",
      to: "stopping",
      reason: null,
      sent_ms: performance.now(),
    },
  };
  redis.write(`*3\r\n${bulk("PUBLISH")}${bulk(channel)}${bulk(JSON.stringify(envelope))}`);
  await sleep(INTERVAL_MS);
}
await sleep(2000);

latencies.sort((a, b) => a - b);
const pct = (p) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))];
console.log(
  `instance.status to ${LISTENERS} listeners, ${EVENTS} events: ` +
    `${latencies.length}/${LISTENERS * EVENTS} delivered; latency p50 ${pct(50).toFixed(1)} ms, ` +
    `p99 ${pct(99).toFixed(1)} ms, max ${latencies[latencies.length - 1].toFixed(1)} ms`,
);
redis.end();
for (const socket of sockets) socket.close();
process.exit(0);
