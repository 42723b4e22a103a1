/** Existence checks that answer instead of throwing. */

/** True when path exists (symlinks followed). */
export function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

/** True when path itself exists: a dangling symlink or a socket file left behind counts. */
export function lexists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** True when path is a directory (symlinks followed). */
export function isDir(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** True when both paths exist and are the same file (device and inode), e.g. two paths of one
 * network namespace. */
export function sameFile(a: string, b: string): boolean {
  try {
    const x = Deno.statSync(a);
    const y = Deno.statSync(b);
    return x.ino !== null && x.ino === y.ino && x.dev === y.dev;
  } catch {
    return false;
  }
}

/** The names in a directory; none when it does not exist. */
export function dirNames(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** Removes a directory only if it is empty: one that holds what is not ours stays. */
export function removeIfEmpty(dir: string): void {
  try {
    Deno.removeSync(dir);
  } catch { /* not empty (someone else's pins), or gone */ }
}
