/**
 * The agent's CNI server's bounds (src/agent/cni_server.ts), in this process with small
 * limits: a connection beyond maxConnections is declined at once, a connection that sends
 * nothing is closed after requestTimeoutMs, a request past its deadline is not started, a
 * "go" that comes after the deadline is refused (the plugin then runs the verb), and a
 * request of protocol 1 is told no. The verbs are VERSION (they need no datapath).
 */
import assert from "node:assert/strict";
import { type CniServer, serveCni } from "../../src/agent/cni_server.ts";
import { delegate, LineReader, PROTOCOL_VERSION, writeLine } from "../../src/cni/delegate.ts";
import { until } from "../lib/wait.ts";
import { configureLog } from "../../src/log.ts";
import { nodeSocketDir, removeNodePath } from "../lib/node_dirs.ts";

async function withServer(
  fn: (s: { socket: string; server: CniServer; stdin: string }) => Promise<void>,
): Promise<void> {
  const dir = nodeSocketDir("tsnp-cni-server");
  const socket = `${dir}/run/cni.sock`;
  // VERSION needs no datapath; the agent only checks that the pin root is a directory.
  const stdin = JSON.stringify({ cniVersion: "1.1.0", bpffs: dir });
  const server = serveCni(socket, { maxConnections: 2, requestTimeoutMs: 300 });
  try {
    await fn({ socket, server, stdin });
  } finally {
    await server.close();
    removeNodePath(dir);
  }
}

const VERSION = { CNI_COMMAND: "VERSION" };

/** Sends a raw request; returns the reader of the agent's replies. */
async function request(
  conn: Deno.UnixConn,
  stdin: string,
  fields: Record<string, unknown>,
): Promise<LineReader> {
  await writeLine(conn, { v: PROTOCOL_VERSION, env: VERSION, stdin, ...fields });
  return new LineReader((b) => conn.read(b));
}

Deno.test("cni server: bounded connections; a silent one is closed", async () => {
  await withServer(async ({ socket, server, stdin }) => {
    const idle = [
      await Deno.connect({ transport: "unix", path: socket }),
      await Deno.connect({ transport: "unix", path: socket }),
    ];
    try {
      await until("both to be open", () => server.stats.open === 2);
      const d = await delegate(socket, VERSION, stdin, 5_000);
      assert.equal(d.served, false);
      assert.match(!d.served ? d.reason : "", /declined: the agent is serving 2 connections/);
      assert.equal(server.stats.busy, 1);
      // Silent past requestTimeoutMs: the agent hangs up on them, and serves again.
      for (const c of idle) assert.equal(await c.read(new Uint8Array(1)), null);
      const ok = await delegate(socket, VERSION, stdin, 5_000);
      assert.equal(ok.served, true, JSON.stringify(ok));
      assert.deepEqual(server.stats.served.VERSION, { ok: 1, error: 0 });
    } finally {
      for (const c of idle) c.close();
    }
  });
});

Deno.test("cni server: a request past its deadline is not started", async () => {
  await withServer(async ({ socket, server, stdin }) => {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    try {
      const replies = await request(conn, stdin, { deadline: Date.now() - 1 });
      const r = JSON.parse((await replies.next())!);
      assert.match(r.declined, /deadline passed before the agent read it/);
      assert.equal(server.stats.expired, 1);
      assert.equal(server.stats.served.VERSION, undefined);
    } finally {
      conn.close();
    }
  });
});

Deno.test("cni server: a go after the deadline is refused; nothing runs", async () => {
  await withServer(async ({ socket, server, stdin }) => {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    try {
      const deadline = Date.now() + 200;
      const replies = await request(conn, stdin, { deadline });
      assert.deepEqual(JSON.parse((await replies.next())!), { v: PROTOCOL_VERSION, ready: true });
      await until("the deadline to pass", () => Date.now() > deadline + 20);
      await writeLine(conn, { v: PROTOCOL_VERSION, go: true }).catch(() => undefined);
      assert.equal(await replies.next().catch(() => undefined), undefined, "no result");
      assert.equal(server.stats.served.VERSION, undefined);
      assert.equal(server.stats.expired, 1);
    } finally {
      conn.close();
    }
  });
});

Deno.test("cni server: protocol 1 is told which protocol this agent speaks", async () => {
  await withServer(async ({ socket, server, stdin }) => {
    const conn = await Deno.connect({ transport: "unix", path: socket });
    try {
      await writeLine(conn, { v: 1, env: VERSION, stdin });
      const r = JSON.parse((await new LineReader((b) => conn.read(b)).next())!);
      // A plugin of protocol 1 reads a reply of another version and runs the verb itself.
      assert.equal(r.v, PROTOCOL_VERSION);
      assert.match(r.declined, /protocol 2 only/);
      assert.equal(server.stats.bad, 1);
    } finally {
      conn.close();
    }
  });
});

Deno.test("cni server: a socket plugins would not trust is served, and the agent says why", async () => {
  const dir = nodeSocketDir("tsnp-cni-server");
  const logFile = `${dir}-log`;
  Deno.writeTextFileSync(logFile, "");
  configureLog({ file: logFile });
  let server: CniServer | undefined;
  try {
    Deno.chmodSync(dir, 0o777); // others could swap the socket
    server = serveCni(`${dir}/run/cni.sock`);
    const lines = Deno.readTextFileSync(logFile).trim().split("\n").map((l) => JSON.parse(l));
    const said = lines.find((l) => l.msg.startsWith("plugins will not trust this socket"));
    assert.ok(said, Deno.readTextFileSync(logFile));
    assert.match(said.reason, /is writable by group or others \(mode 0777\)/);
    // A well-kept directory: nothing to say.
    await server.close();
    server = undefined;
    Deno.chmodSync(dir, 0o755);
    Deno.writeTextFileSync(logFile, "");
    server = serveCni(`${dir}/run/cni.sock`);
    assert.doesNotMatch(Deno.readTextFileSync(logFile), /will not trust/);
  } finally {
    configureLog({ file: undefined });
    await server?.close();
    removeNodePath(dir);
    removeNodePath(logFile);
  }
});
