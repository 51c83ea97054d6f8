// node sdk/node/smoke.js ADDRESS JOB_ID: list the projects and watch a job; prints one JSON line.
"use strict";

const { WorkbenchClient } = require("./workbench");

async function main() {
  const [address, jobId] = process.argv.slice(2);
  const client = new WorkbenchClient(address);
  const created = await client.createProject("from node");
  const projects = await client.listProjects();
  const events = await client.watchJob(jobId);
  console.log(JSON.stringify({
    created: created.id,
    projects: projects.map((p) => p.id),
    sequences: events.map((e) => Number(e.sequence)),
    states: events.map((e) => e.state),
  }));
  client.close();
}

main().catch((error) => {
  console.error(`workbench: ${error.code !== undefined ? grpcCode(error.code) + ": " : ""}${error.details || error.message}`);
  process.exit(1);
});

function grpcCode(code) {
  return Object.keys(require("@grpc/grpc-js").status).find((k) => require("@grpc/grpc-js").status[k] === code);
}
