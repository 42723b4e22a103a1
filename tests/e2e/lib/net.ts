/**
 * Traffic helpers: a UDP listener in the test process (host network namespace) and the python3
 * one-liners a container runs with the host's /usr mounted.
 */
import dgram from "node:dgram";
import type { Buffer } from "node:buffer";

export interface Datagram {
  data: string;
  from: string;
  fromPort: number;
}

export interface UdpListener {
  address: string;
  port: number;
  /** Everything received so far. */
  received: Datagram[];
  /** Resolves with the first datagram matching `pred` (default any), or rejects on timeout. */
  next(pred?: (d: Datagram) => boolean, timeoutMs?: number): Promise<Datagram>;
  close(): Promise<void>;
}

/** Listen for UDP on `address` (a port of 0 picks a free one). */
export async function udpListen(address: string, port = 0): Promise<UdpListener> {
  const sock = dgram.createSocket("udp4");
  const received: Datagram[] = [];
  const waiters: { pred: (d: Datagram) => boolean; resolve: (d: Datagram) => void }[] = [];
  sock.on("message", (msg: Buffer, rinfo: dgram.RemoteInfo) => {
    const d = { data: new TextDecoder().decode(msg), from: rinfo.address, fromPort: rinfo.port };
    received.push(d);
    for (const w of [...waiters]) {
      if (w.pred(d)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(d);
      }
    }
  });
  await new Promise<void>((resolve, reject) => {
    sock.once("error", reject);
    sock.bind(port, address, () => resolve());
  });
  return {
    address,
    port: sock.address().port,
    received,
    next(pred = () => true, timeoutMs = 30_000) {
      const seen = received.find(pred);
      if (seen) return Promise.resolve(seen);
      return new Promise<Datagram>((resolve, reject) => {
        const w = {
          pred,
          resolve: (d: Datagram) => {
            clearTimeout(timer);
            resolve(d);
          },
        };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`no UDP datagram on ${address}:${sock.address().port}`));
        }, timeoutMs);
        waiters.push(w);
      });
    },
    close() {
      return new Promise<void>((resolve) => sock.close(() => resolve()));
    },
  };
}

/**
 * argv for python3 in a container sending `count` UDP datagrams `payload` to host:port, with an
 * optional SO_PRIORITY (0-6 need no privilege).
 */
export function pySendUdp(
  host: string,
  port: number,
  payload: string,
  opts: { priority?: number; count?: number; intervalS?: number } = {},
): string[] {
  const prio = opts.priority === undefined
    ? ""
    : `s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, ${opts.priority})\n`;
  const code = `import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
${prio}for i in range(${opts.count ?? 1}):
    s.sendto(${JSON.stringify(payload)}.encode(), (${JSON.stringify(host)}, ${port}))
    time.sleep(${opts.intervalS ?? 0.1})
`;
  return ["/usr/bin/python3", "-c", code];
}
