// Node.js client for the Workbench gateway, built from the same protos as the Python SDK
// (protos/workbench/v1) with @grpc/proto-loader: typed by the contract, no generated code to keep.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "protos");

function loadGateway() {
  const definition = protoLoader.loadSync("workbench/v1/gateway.proto", {
    includeDirs: [PROTOS],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  return grpc.loadPackageDefinition(definition).workbench.v1.GatewayService;
}

class WorkbenchClient {
  constructor(address = process.env.WORKBENCH_ADDRESS || "127.0.0.1:50051", { token = process.env.WORKBENCH_TOKEN } = {}) {
    const GatewayService = loadGateway();
    this.stub = new GatewayService(address, grpc.credentials.createInsecure());
    this.metadata = new grpc.Metadata();
    if (token) this.metadata.set("authorization", `Bearer ${token}`);
  }

  call(method, request, timeoutSeconds = 60) {
    const deadline = new Date(Date.now() + timeoutSeconds * 1000);
    return new Promise((resolve, reject) =>
      this.stub[method](request, this.metadata, { deadline }, (error, response) => (error ? reject(error) : resolve(response))));
  }

  async listProjects(pageSize = 100) {
    const projects = [];
    let pageToken = "";
    do {
      const page = await this.call("ListProjects", { page_size: pageSize, page_token: pageToken });
      projects.push(...page.projects);
      pageToken = page.next_page_token;
    } while (pageToken);
    return projects;
  }

  createProject(name, fields = {}) {
    return this.call("CreateProject", { name, ...fields }).then((response) => response.project);
  }

  // Every event of a job, in order, ending with the terminal one.
  watchJob(jobId, afterSequence = 0) {
    return new Promise((resolve, reject) => {
      const events = [];
      const stream = this.stub.WatchJob({ job_id: jobId, after_sequence: afterSequence }, this.metadata);
      stream.on("data", (response) => events.push(response.event));
      stream.on("error", reject);
      stream.on("end", () => resolve(events));
    });
  }

  close() {
    this.stub.close();
  }
}

module.exports = { WorkbenchClient };
