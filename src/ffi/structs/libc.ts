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

/** struct sockaddr_un: connect(2) to the agent's socket path. */
export const SockaddrUn = struct("struct sockaddr_un", ["sys/un.h"], 110, {
  sun_family: [0, "u16"],
  sun_path: [2, "bytes", 108],
});

/** struct ucred, as getsockopt(SO_PEERCRED) fills it (needs _GNU_SOURCE in C). */
export const Ucred = struct("struct ucred", ["sys/socket.h"], 12, {
  pid: [0, "i32"],
  uid: [4, "u32"],
  gid: [8, "u32"],
});

/** struct pollfd for ppoll(2). */
export const Pollfd = struct("struct pollfd", ["poll.h"], 8, {
  fd: [0, "i32"],
  events: [4, "u16"],
  revents: [6, "u16"],
});

/** struct statfs: only f_type is read (is this file on nsfs?). */
export const Statfs = struct("struct statfs", ["sys/vfs.h"], 120, {
  f_type: [0, "i64"],
});

/** struct statx: what the agent socket's trust checks read (needs _GNU_SOURCE in C). */
export const Statx = struct("struct statx", ["sys/stat.h"], 256, {
  stx_mask: [0, "u32"],
  stx_uid: [20, "u32"],
  stx_gid: [24, "u32"],
  stx_mode: [28, "u16"],
});
