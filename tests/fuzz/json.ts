/**
 * JSON helpers for the mutators: paths into a value, setting own properties (a key named
 * "__proto__" must become a key, not a prototype), and raw fragments JSON.stringify cannot
 * write (1e999, -0 as text, duplicate keys, nesting deeper than the stack allows): a marker
 * string stands in for the fragment until serialize() splices it in.
 */
export type Path = Array<string | number>;

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export function clone<T>(v: T): T {
  return v === undefined ? v : JSON.parse(JSON.stringify(v));
}

/** Every path in `v` (containers and leaves), depth-first, at most `limit`. */
export function allPaths(v: unknown, limit = 4000): Path[] {
  const out: Path[] = [];
  const walk = (x: unknown, p: Path) => {
    if (out.length >= limit) return;
    out.push(p);
    if (Array.isArray(x)) x.forEach((y, i) => walk(y, [...p, i]));
    else if (isObject(x)) { for (const k of Object.keys(x)) walk(x[k], [...p, k]); }
  };
  walk(v, []);
  return out;
}

export function getAt(root: unknown, path: Path): unknown {
  let x = root;
  for (const k of path) {
    if (Array.isArray(x) || isObject(x)) x = (x as Record<string | number, unknown>)[k];
    else return undefined;
  }
  return x;
}

/** Sets an own, enumerable property (works for "__proto__" too). */
export function setOwn(o: Record<string, unknown> | unknown[], key: string | number, v: unknown) {
  Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
}

/** Sets the value at a non-empty path; false when the parent is not a container. */
export function setAt(root: unknown, path: Path, v: unknown): boolean {
  if (path.length === 0) return false;
  const parent = getAt(root, path.slice(0, -1));
  if (!Array.isArray(parent) && !isObject(parent)) return false;
  setOwn(parent, path[path.length - 1], v);
  return true;
}

export function deleteAt(root: unknown, path: Path): boolean {
  if (path.length === 0) return false;
  const parent = getAt(root, path.slice(0, -1));
  const k = path[path.length - 1];
  if (Array.isArray(parent) && typeof k === "number") {
    parent.splice(k, 1);
    return true;
  }
  if (isObject(parent)) return delete parent[k as string];
  return false;
}

/** Raw JSON fragments by marker. */
export class RawFragments {
  #raw: string[] = [];
  /** A string value that serialize() replaces with `text` (which must be valid in place). */
  marker(text: string): string {
    this.#raw.push(text);
    return `\u0001RAW${this.#raw.length - 1}\u0001`;
  }
  splice(json: string): string {
    return json.replace(/"\\u0001RAW(\d+)\\u0001"/g, (_, i) => this.#raw[Number(i)]);
  }
}

/** Keys sorted at every level, as libcni's Go maps marshal a plugin's config. */
export function sortKeys(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(sortKeys);
  if (!isObject(v)) return v;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(v).sort()) setOwn(out, k, sortKeys(v[k]));
  return out;
}
