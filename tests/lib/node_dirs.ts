/**
 * Files in the node's own directories (src/config/paths.ts NODE_DIRS), where a plugin entry's
 * logFile and agentSocket must be: each test gets a random name there and removes only what
 * it created.
 */
import { NODE_DIRS } from "../../src/config/paths.ts";
import { randomId } from "./run.ts";

/** A fresh, empty log file under /var/log/tsnproxy/; remove it with removeNodePath(). */
export function nodeLogFile(prefix = "test"): string {
  Deno.mkdirSync(NODE_DIRS.logFile, { recursive: true });
  const path = `${NODE_DIRS.logFile}${prefix}-${randomId(10)}.log`;
  Deno.writeTextFileSync(path, "");
  return path;
}

/** A fresh directory under /run/tsnproxy/ for an agent socket; remove it with removeNodePath(). */
export function nodeSocketDir(prefix = "test"): string {
  Deno.mkdirSync(NODE_DIRS.agentSocket, { recursive: true });
  const dir = `${NODE_DIRS.agentSocket}${prefix}-${randomId(10)}`;
  Deno.mkdirSync(dir);
  return dir;
}

/** Removes a path one of the functions above returned (gone already is fine). */
export function removeNodePath(path: string): void {
  if (!path.startsWith(NODE_DIRS.logFile) && !path.startsWith(NODE_DIRS.agentSocket)) {
    throw new Error(`${path} is not a test path in the node's directories`);
  }
  try {
    Deno.removeSync(path, { recursive: true });
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
}
