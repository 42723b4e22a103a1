/** libc and socket struct layouts (LP64). Checked against the headers by tests/unit/structs_test.ts. */
import { struct } from "./layout.ts";

/** struct timespec, as clock_gettime(2) fills it. */
export const Timespec = struct("struct timespec", ["time.h"], 16, {
  tv_sec: [0, "i64"],
  tv_nsec: [8, "i64"],
});

/** struct ifreq as SIOCGIFINDEX reads the name and writes the index. */
export const Ifreq = struct("struct ifreq", ["net/if.h"], 40, {
  ifr_name: [0, "bytes", 16],
  ifr_ifindex: [16, "i32"],
});
