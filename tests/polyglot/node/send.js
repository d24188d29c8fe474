// Send one meetingtasks task from Node.js with celery-node (Celery message protocol v2, JSON).
// usage: node send.js REDIS_URL QUEUE TASK_TYPE PAYLOAD_JSON [TASK_ID]
//   node send.js redis://127.0.0.1:6379/0 ai.normal speech_recognition '{"meeting_id": "m1", ...}'
// The queue is "<service>.<priority>"; the payload is the task's only positional argument.
"use strict";
const celery = require("celery-node");
const { randomUUID } = require("crypto");

async function main() {
  const [url, queue, taskType, payloadJson, givenId] = process.argv.slice(2);
  if (!url || !queue || !taskType || !payloadJson) {
    console.error("usage: node send.js REDIS_URL QUEUE TASK_TYPE PAYLOAD_JSON [TASK_ID]");
    process.exit(2);
  }
  const client = celery.createClient(url, url, queue);
  await client.isReady();
  const taskId = givenId || randomUUID();
  client.sendTask(taskType, [JSON.parse(payloadJson)], {}, taskId);
  // sendTask publishes on a promise it does not return; let it run before QUIT is queued behind it.
  await new Promise((resolve) => setImmediate(resolve));
  await client.disconnect();
  console.log(taskId);
}

main().catch((err) => {
  console.error(`error: ${err.message}`);
  process.exit(1);
});
