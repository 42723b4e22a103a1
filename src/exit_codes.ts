/**
 * tsnproxy's exit codes, for every command (docs/cli.md). The CNI plugin (`tsnproxy cni`)
 * follows the CNI spec instead: 0 success, 1 with an error Result on stdout.
 */
export const ExitCode = {
  /** The command did what it was asked; doctor: every check passed. */
  Ok: 0,
  /** The command failed (a kernel, file or config problem; status: nothing installed; doctor: a check failed). */
  Failure: 1,
  /** Usage error: an unknown command or flag, a missing or invalid value, an invalid environment variable. Nothing was changed. */
  Usage: 2,
  /** doctor only: no check failed, some warned. */
  Warnings: 3,
} as const;
