/**
 * The unified diff `--dry-run` prints per file change, from jsdiff (`diff` on npm):
 * `--- path` / `+++ path` (`/dev/null` for a created or deleted file) and `@@` hunks with
 * three lines of context; a last line without a newline gets git's "\ No newline" marker.
 */
import { FILE_HEADERS_ONLY, formatPatch, structuredPatch } from "diff/lib/patch/create.js";

export function unifiedDiff(path: string, a: string, b: string, context = 3): string {
  if (a === b) return "";
  const patch = structuredPatch(
    a === "" ? "/dev/null" : path,
    b === "" ? "/dev/null" : path,
    a,
    b,
    undefined,
    undefined,
    { context },
  );
  return formatPatch(patch, FILE_HEADERS_ONLY);
}
