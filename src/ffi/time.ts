/**
 * The kernel clock's discipline state through clock_adjtime(2): the TAI-UTC offset CLOCK_TAI
 * is built from, and whether anything synchronizes the clock. Reading needs no privilege.
 */
import { KernelError } from "../errors.ts";
import { decode, encode } from "./structs/layout.ts";
import { STA_UNSYNC, Timex } from "./structs/time.ts";
import { strerror, SYS, sys } from "./libc.ts";

export const CLOCK_REALTIME = 0;

export interface ClockState {
  /** TAI-UTC in seconds (0: never set, CLOCK_TAI equals CLOCK_REALTIME). */
  taiOffset: number;
  /** The kernel's STA_* status word. */
  status: number;
  /** STA_UNSYNC is clear: ntpd, chronyd or phc2sys marked the clock synchronized. */
  synchronized: boolean;
  /** clock_adjtime's result: TIME_OK (0) .. TIME_ERROR (5). */
  state: number;
}

/**
 * clock_adjtime(clockid, buf): the clock state, or -errno. `buf` is a Timex; with modes 0 it
 * only reads. Tests change the TAI offset through it (in a guest: it is the whole host's).
 */
export function clockAdjtime(clockid: number, buf: Uint8Array<ArrayBuffer>): number {
  return sys(SYS.clock_adjtime, clockid, buf);
}

/** Reads CLOCK_REALTIME's discipline state (modes 0: nothing is changed). */
export function readClockState(): ClockState {
  const buf = encode(Timex, { modes: 0 });
  const r = clockAdjtime(CLOCK_REALTIME, buf);
  if (r < 0) {
    throw new KernelError(
      `clock_adjtime(CLOCK_REALTIME): ${strerror(-r)}`,
      "a Linux kernel is needed (adjtimex(2))",
      -r,
    );
  }
  const t = decode(Timex, buf);
  return {
    taiOffset: t.tai,
    status: t.status,
    synchronized: (t.status & STA_UNSYNC) === 0,
    state: r,
  };
}
