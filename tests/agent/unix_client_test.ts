/**
 * The plugin's socket client writes its structs by hand (src/cni/unix_client.ts keeps the
 * plugin's start-up free of the layout modules): its offsets must be the ones
 * src/ffi/structs/libc.ts declares, which tests/unit/structs_test.ts checks against the C
 * headers.
 */
import assert from "node:assert/strict";
import { LAYOUTS } from "../../src/cni/unix_client.ts";
import { Pollfd, SockaddrUn, Statx, Timespec, Ucred } from "../../src/ffi/structs/libc.ts";

Deno.test("unix_client: hand-written struct offsets match the checked layouts", () => {
  assert.deepEqual(LAYOUTS.sockaddrUn, {
    size: SockaddrUn.size,
    sun_family: SockaddrUn.fields.sun_family[0],
    sun_path: SockaddrUn.fields.sun_path[0],
    pathMax: SockaddrUn.fields.sun_path[2],
  });
  assert.deepEqual(LAYOUTS.ucred, {
    size: Ucred.size,
    pid: Ucred.fields.pid[0],
    uid: Ucred.fields.uid[0],
    gid: Ucred.fields.gid[0],
  });
  assert.deepEqual(LAYOUTS.pollfd, {
    size: Pollfd.size,
    fd: Pollfd.fields.fd[0],
    events: Pollfd.fields.events[0],
    revents: Pollfd.fields.revents[0],
  });
  assert.deepEqual(LAYOUTS.timespec, {
    size: Timespec.size,
    tv_sec: Timespec.fields.tv_sec[0],
    tv_nsec: Timespec.fields.tv_nsec[0],
  });
  assert.deepEqual(LAYOUTS.statx, {
    size: Statx.size,
    stx_uid: Statx.fields.stx_uid[0],
    stx_mode: Statx.fields.stx_mode[0],
  });
});
