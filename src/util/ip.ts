/** IP address and prefix parsing (no dependencies): "10.1.2.3", "fd00::1", "10.0.0.0/8". */

export interface IpAddress {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: Uint8Array<ArrayBuffer>;
}

export function parseIpv4(s: string): Uint8Array<ArrayBuffer> | undefined {
  const parts = s.split(".");
  if (parts.length !== 4) return undefined;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    if (!/^\d{1,3}$/.test(parts[i])) return undefined;
    const n = Number(parts[i]);
    if (n > 255) return undefined;
    out[i] = n;
  }
  return out;
}

export function parseIpv6(s: string): Uint8Array<ArrayBuffer> | undefined {
  if (!/^[0-9a-fA-F:.]+$/.test(s) || s.split("::").length > 2) return undefined;
  let tail4: Uint8Array | undefined;
  let text = s;
  const lastColon = s.lastIndexOf(":");
  if (s.slice(lastColon + 1).includes(".")) {
    tail4 = parseIpv4(s.slice(lastColon + 1));
    if (!tail4) return undefined;
    text = s.slice(0, lastColon + 1) + "0:0";
  }
  const [head, tail] = text.split("::");
  const h = head ? head.split(":") : [];
  const t = tail === undefined ? [] : tail ? tail.split(":") : [];
  const missing = 8 - h.length - t.length;
  if (tail === undefined ? h.length !== 8 : missing < 1) return undefined;
  const groups = tail === undefined ? h : [...h, ...Array(missing).fill("0"), ...t];
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(groups[i])) return undefined;
    const v = parseInt(groups[i], 16);
    out[i * 2] = v >> 8;
    out[i * 2 + 1] = v & 0xff;
  }
  if (tail4) out.set(tail4, 12);
  return out;
}

export function parseIp(s: string): IpAddress | undefined {
  const v4 = parseIpv4(s);
  if (v4) return { family: 4, bytes: v4 };
  const v6 = s.includes(":") ? parseIpv6(s) : undefined;
  return v6 ? { family: 6, bytes: v6 } : undefined;
}

/** "10.0.0.0/8" or a single address (a full-length prefix). */
export function parsePrefix(s: string): (IpAddress & { length: number }) | undefined {
  const [addr, len, ...rest] = s.split("/");
  if (rest.length) return undefined;
  const ip = parseIp(addr);
  if (!ip) return undefined;
  const max = ip.family === 4 ? 32 : 128;
  if (len === undefined) return { ...ip, length: max };
  if (!/^\d{1,3}$/.test(len) || Number(len) > max) return undefined;
  return { ...ip, length: Number(len) };
}

/** The textual form of 4 or 16 bytes (IPv6 with the longest zero run shortened). */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return [...bytes].join(".");
  const g: number[] = [];
  for (let i = 0; i < 16; i += 2) g.push((bytes[i] << 8) | bytes[i + 1]);
  let best = -1, bestLen = 1;
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = g.map((x) => x.toString(16));
  if (best < 0) return hex.join(":");
  return `${hex.slice(0, best).join(":")}::${hex.slice(best + bestLen).join(":")}`;
}
