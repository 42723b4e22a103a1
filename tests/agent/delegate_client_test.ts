/**
 * The plugin's side of delegation (src/cni/delegate.ts) against peers that misbehave on a real
 * unix socket: each must become "run it in-process" with the right cause, or, once the plugin
 * told the peer to go, "try again later" — never a throw, never a hang past the deadline, and
 * never a "go" after the deadline. Peers the plugin must not trust (a socket or directory
 * others may write, a listener that is not root) get nothing. The well-behaved peer, the
 * agent itself, is exercised in cni_delegate_test.ts, cni_socket_test.ts and the containerd
 * e2e.
 */
import assert from "node:assert/strict";
import { delegate, type Delegation, LineReader, writeLine } from "../../src/cni/delegate.ts";
import { staleSocket } from "../lib/wait.ts";
import { spawn } from "../lib/run.ts";
import { nodeSocketDir, removeNodePath } from "../lib/node_dirs.ts";

/** A peer on a fresh socket that answers each connection with `answer`. */
async function withPeer(
  answer: (conn: Deno.UnixConn) => Promise<void>,
  fn: (socket: string, dir: string) => Promise<void>,
): Promise<void> {
  const dir = nodeSocketDir("tsnp-delegate");
  const socket = `${dir}/cni.sock`;
  const listener = Deno.listen({ transport: "unix", path: socket });
  Deno.chmodSync(socket, 0o600);
  const open = new Set<Deno.UnixConn>();
  const answers: Promise<void>[] = [];
  const serving = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      answers.push(answer(conn).catch(() => undefined));
    }
  })();
  try {
    await fn(socket, dir);
  } finally {
    listener.close();
    await serving.catch(() => undefined);
    for (const c of open) {
      try {
        c.close();
      } catch {
        // closed by the answer
      }
    }
    await Promise.all(answers);
    removeNodePath(dir);
  }
}

const ENV = { CNI_COMMAND: "ADD", CNI_CONTAINERID: "c1" };
const STDIN = '{"cniVersion":"1.1.0","type":"tsnproxy"}';

function notServed(d: Delegation): Extract<Delegation, { served: false }> {
  assert.equal(d.served, false, JSON.stringify(d));
  return d as Extract<Delegation, { served: false }>;
}

/** Reads the request and says ready; returns the reader for what the plugin sends next. */
async function ready(conn: Deno.UnixConn): Promise<LineReader> {
  const lines = new LineReader((b) => conn.read(b));
  await lines.next();
  await writeLine(conn, { v: 2, ready: true });
  return lines;
}

Deno.test("delegate: a peer that never answers costs the deadline, then in-process", async () => {
  await withPeer(async (conn) => {
    await new LineReader((b) => conn.read(b)).next(); // reads the request, then says nothing until the plugin hangs up
    await conn.read(new Uint8Array(1));
  }, async (socket) => {
    // The reason names the deadline only when the deadline fired (no wall-clock assertion).
    const d = notServed(await delegate(socket, ENV, STDIN, 300));
    assert.equal(d.cause, "broken");
    assert.match(d.reason, /no answer within 300 ms/);
    assert.equal(d.committed, undefined);
  });
});

Deno.test("delegate: each malformed first reply is a cause, not a throw", async () => {
  const cases: Array<{ name: string; reply: string | undefined; cause: string; reason: RegExp }> = [
    { name: "closed at once", reply: undefined, cause: "broken", reason: /closed without/ },
    { name: "not JSON", reply: "{nope\n", cause: "broken", reason: /JSON/ },
    { name: "cut off", reply: '{"v":2,"ready":true', cause: "broken", reason: /closed without/ },
    {
      name: "a result without ready/go",
      reply: '{"v":2,"code":0}\n',
      cause: "broken",
      reason: /answered before it was told to go/,
    },
    {
      name: "other protocol",
      reply: '{"v":1,"code":0}\n',
      cause: "protocol",
      reason: /protocol 1, not 2/,
    },
    {
      name: "declined",
      reply: '{"v":2,"declined":"cannot open /run/netns/x"}\n',
      cause: "declined",
      reason: /declined: cannot open/,
    },
  ];
  for (const c of cases) {
    await withPeer(async (conn) => {
      await new LineReader((b) => conn.read(b)).next();
      if (c.reply !== undefined) await conn.write(new TextEncoder().encode(c.reply));
      conn.close();
    }, async (socket) => {
      const d = notServed(await delegate(socket, ENV, STDIN, 5_000));
      assert.equal(d.cause, c.cause, c.name);
      assert.match(d.reason, c.reason, c.name);
    });
  }
});

Deno.test("delegate: the request carries env, stdin and the deadline; ready, go, result", async () => {
  let seen: Record<string, unknown> | undefined;
  let go: unknown;
  const before = Date.now();
  await withPeer(async (conn) => {
    const lines = new LineReader((b) => conn.read(b));
    seen = JSON.parse((await lines.next())!);
    await writeLine(conn, { v: 2, ready: true });
    go = JSON.parse((await lines.next())!);
    await writeLine(conn, {
      v: 2,
      code: 1,
      stdout: { code: 7, msg: "bad" },
      agent: { version: "1.2.3", bpfObjectsSha256: "ab" },
    });
    conn.close();
  }, async (socket) => {
    const d = await delegate(socket, ENV, STDIN, 5_000);
    assert.deepEqual(d, {
      served: true,
      code: 1,
      stdout: { code: 7, msg: "bad" },
      agent: { version: "1.2.3", bpfObjectsSha256: "ab" },
    });
  });
  const after = Date.now();
  const { deadline, ...rest } = seen!;
  assert.deepEqual(rest, { v: 2, env: ENV, stdin: STDIN });
  assert.ok(
    typeof deadline === "number" && deadline >= before + 5_000 && deadline <= after + 5_000,
  );
  assert.deepEqual(go, { v: 2, go: true });
});

Deno.test("delegate: ready after the deadline gets no go; the plugin runs the verb", async () => {
  let after: string | undefined = "not read";
  await withPeer(async (conn) => {
    const lines = new LineReader((b) => conn.read(b));
    const req = JSON.parse((await lines.next())!);
    // Ready only once the deadline has passed (polled, not slept by a fixed amount).
    while (Date.now() < req.deadline + 5) await new Promise((r) => setTimeout(r, 5));
    await writeLine(conn, { v: 2, ready: true }).catch(() => undefined);
    after = await lines.next().catch(() => undefined);
  }, async (socket) => {
    const d = notServed(await delegate(socket, ENV, STDIN, 200));
    assert.equal(d.cause, "broken");
    assert.match(d.reason, /no answer within 200 ms|not ready within 200 ms/);
    assert.equal(d.committed, undefined);
  });
  assert.equal(after, undefined, "the plugin sent something after its deadline");
});

Deno.test("delegate: closed after go without a result: the plugin may run the verb", async () => {
  await withPeer(async (conn) => {
    const lines = await ready(conn);
    await lines.next(); // the go
    conn.close(); // a late go refused, or an agent that died
  }, async (socket) => {
    const d = notServed(await delegate(socket, ENV, STDIN, 5_000));
    assert.equal(d.cause, "broken");
    assert.match(d.reason, /closed after it was told to go/);
    assert.equal(d.committed, undefined);
  });
});

Deno.test("delegate: no result after go within the bound: committed, not run here", async () => {
  await withPeer(async (conn) => {
    const lines = await ready(conn);
    await lines.next();
    await conn.read(new Uint8Array(1)); // runs "forever": until the plugin hangs up
  }, async (socket) => {
    const d = notServed(await delegate(socket, ENV, STDIN, 5_000, { committedMs: 300 }));
    assert.equal(d.committed, true);
    assert.match(d.reason, /told to run the verb and has not answered within 300 ms/);
  });
});

Deno.test("delegate: no socket is 'absent', a socket nobody accepts on is 'unreachable'", async () => {
  const dir = nodeSocketDir("tsnp-delegate");
  try {
    const absent = notServed(await delegate(`${dir}/none.sock`, ENV, STDIN, 1_000));
    assert.equal(absent.cause, "absent");
    assert.match(absent.reason, /no socket$/);
    const noDir = notServed(await delegate(`${dir}/gone/cni.sock`, ENV, STDIN, 1_000));
    assert.equal(noDir.cause, "absent");
    // A process bound the socket and died: the file stays, nobody listens.
    const stale = `${dir}/stale.sock`;
    await staleSocket(stale);
    Deno.chmodSync(stale, 0o600);
    const refused = notServed(await delegate(stale, ENV, STDIN, 1_000));
    assert.equal(refused.cause, "unreachable");
    assert.match(refused.reason, /nobody listens/);
  } finally {
    removeNodePath(dir);
  }
});

/** A peer that would forge a successful Result for any request. */
async function forger(conn: Deno.UnixConn): Promise<void> {
  const lines = await ready(conn);
  await lines.next();
  await writeLine(conn, { v: 2, code: 0, stdout: { forged: true } });
  conn.close();
}

Deno.test("delegate: a socket or directory others may write is not trusted", async () => {
  await withPeer(forger, async (socket, dir) => {
    // The well-kept socket is used (the forger is root here, like an agent).
    assert.equal((await delegate(socket, ENV, STDIN, 5_000)).served, true);

    Deno.chmodSync(socket, 0o666);
    let d = notServed(await delegate(socket, ENV, STDIN, 5_000));
    assert.equal(d.cause, "untrusted");
    assert.match(d.reason, /cni\.sock is writable by group or others \(mode 0666\)/);
    Deno.chmodSync(socket, 0o600);

    Deno.chmodSync(dir, 0o777);
    d = notServed(await delegate(socket, ENV, STDIN, 5_000));
    assert.match(d.reason, /tsnp-delegate-\w+ is writable by group or others \(mode 0777\)/);
    Deno.chmodSync(dir, 0o700);

    Deno.chownSync(dir, 65534, 65534);
    d = notServed(await delegate(socket, ENV, STDIN, 5_000));
    assert.match(d.reason, /tsnp-delegate-\w+ is owned by uid 65534, not root/);
    Deno.chownSync(dir, 0, 0);

    // A symlinked directory is followed, and the real one is what is checked.
    const link = `${dir}-link`;
    Deno.symlinkSync(dir, link);
    try {
      assert.equal((await delegate(`${link}/cni.sock`, ENV, STDIN, 5_000)).served, true);
    } finally {
      Deno.removeSync(link);
    }
  });
});

Deno.test("delegate: a listener that is not root is not trusted (SO_PEERCRED)", async () => {
  const dir = nodeSocketDir("tsnp-delegate");
  const socket = `${dir}/cni.sock`;
  // nobody binds and listens (in a directory it may write), then root makes the file and the
  // directory look like an agent's: only the kernel's record of the listener tells.
  Deno.chownSync(dir, 65534, 65534);
  const py = [
    "import socket, sys, json",
    "s = socket.socket(socket.AF_UNIX)",
    `s.bind(${JSON.stringify(socket)})`,
    "s.listen(8)",
    "print('listening', flush=True)",
    "while True:",
    "    c, _ = s.accept()",
    "    f = c.makefile('rwb')",
    "    f.readline()",
    '    f.write(b\'{"v":2,"ready":true}\\n\'); f.flush()',
    "    f.readline()",
    '    f.write(b\'{"v":2,"code":0,"stdout":{"forged":true}}\\n\'); f.flush()',
    "    c.close()",
  ].join("\n");
  const peer = spawn(
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3", "-c", py],
  );
  try {
    await peer.until((p) => p.stdout.includes("\n"));
    assert.equal(peer.stdout.trim(), "listening", peer.stderr);
    Deno.chownSync(dir, 0, 0);
    Deno.chmodSync(dir, 0o700);
    Deno.chownSync(socket, 0, 0);
    Deno.chmodSync(socket, 0o600);
    const d = notServed(await delegate(socket, ENV, STDIN, 5_000));
    assert.equal(d.cause, "untrusted");
    assert.match(d.reason, /the process listening on it \(pid \d+\) runs as uid 65534, not root/);
  } finally {
    await peer.stop();
    removeNodePath(dir);
  }
});
