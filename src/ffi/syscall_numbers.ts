/**
 * The system calls tsnproxy issues through libc's syscall(3), by architecture (x86_64 has its
 * own table; aarch64 uses the generic one). tests/unit/structs_test.ts checks them against the
 * kernel headers. Kept free of imports: the CNI plugin's hand-off to the agent
 * (src/cni/unix_client.ts) uses it before anything else is loaded.
 */
export const SYSCALL_NUMBERS = {
  x86_64: {
    read: 0,
    close: 3,
    ioctl: 16,
    socket: 41,
    connect: 42,
    sendto: 44,
    getsockopt: 55,
    flock: 73,
    fstatfs: 138,
    clock_gettime: 228,
    openat: 257,
    clock_adjtime: 305,
    ppoll: 271,
    setns: 308,
    bpf: 321,
    statx: 332,
  },
  aarch64: {
    read: 63,
    close: 57,
    ioctl: 29,
    socket: 198,
    connect: 203,
    sendto: 206,
    getsockopt: 209,
    flock: 32,
    fstatfs: 44,
    clock_gettime: 113,
    openat: 56,
    clock_adjtime: 266,
    ppoll: 73,
    setns: 268,
    bpf: 280,
    statx: 291,
  },
} as const;
export const SYS = SYSCALL_NUMBERS[Deno.build.arch];
