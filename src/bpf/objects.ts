/**
 * The compiled BPF objects, embedded in the module graph (src/bpf/objects.gen.ts, made by
 * `deno task bpf`). Imported only by install/doctor: the CNI path never loads programs.
 */
import { BPF_OBJECTS, BPF_OBJECTS_SHA256 } from "./objects.gen.ts";

export const OBJECTS_SHA256: string = BPF_OBJECTS_SHA256;

export function objectBytes(
  name: string,
  table: Record<string, string> = BPF_OBJECTS,
): Uint8Array<ArrayBuffer> {
  const b64 = table[name];
  if (b64 === undefined) throw new Error(`no embedded BPF object named ${name}`);
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
