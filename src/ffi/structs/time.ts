/**
 * The kernel clock's discipline state, as adjtimex(2)/clock_adjtime(2) read and write it (LP64).
 * Checked against the headers by tests/unit/structs_test.ts.
 */
import { struct } from "./layout.ts";

/** struct timex (<sys/timex.h>; the kernel's struct __kernel_timex on 64-bit). */
export const Timex = struct("struct timex", ["sys/timex.h"], 208, {
  modes: [0, "u32"],
  offset: [8, "i64"],
  freq: [16, "i64"],
  maxerror: [24, "i64"],
  esterror: [32, "i64"],
  status: [40, "i32"],
  /** With ADJ_TAI in modes: the TAI-UTC offset to set, in seconds. */
  constant: [48, "i64"],
  precision: [56, "i64"],
  tolerance: [64, "i64"],
  tick: [88, "i64"],
  /** TAI-UTC in seconds as the kernel keeps it (CLOCK_TAI = CLOCK_REALTIME + tai). */
  tai: [160, "i32"],
});

/** modes bits (linux/timex.h). */
export const ADJ_STATUS = 0x0010;
export const ADJ_TAI = 0x0080;
/** status bit: the clock is not synchronized (set at boot; cleared by ntpd, chronyd, phc2sys). */
export const STA_UNSYNC = 0x0040;
/** adjtimex's result when the clock is not synchronized. */
export const TIME_ERROR = 5;
