/** Failures of the VM test harness, in the project's error shape (message + fix). */
import { CniCode, TsnproxyError } from "../../src/errors.ts";

/** Building or booting a test VM failed for a reason the user can fix (tool, package, cache). */
export class VmError extends TsnproxyError {
  override name = "VmError";
  constructor(message: string, hint: string, options?: ErrorOptions) {
    super(message, hint, CniCode.InvalidEnvironment, options);
  }
}
