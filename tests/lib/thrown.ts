import { TsnproxyError } from "../../src/errors.ts";

/** The TsnproxyError fn throws; fails the test when it throws nothing or something else. */
export function thrown(fn: () => unknown): TsnproxyError {
  try {
    fn();
  } catch (e) {
    if (e instanceof TsnproxyError) return e;
    throw new Error(`expected a TsnproxyError, got ${e}`, { cause: e });
  }
  throw new Error("expected an error, nothing was thrown");
}
