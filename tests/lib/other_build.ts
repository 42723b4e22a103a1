/**
 * A program of "another build" pinned over this build's: this build's object for the role,
 * loaded with another release stamp (src/bpf/release.ts), as an older or newer binary's
 * install of the same ABI leaves it. Its instructions, and so its tag, are this build's: only
 * the stamp tells the two apart.
 */
import { BpfObject } from "../../src/bpf/object.ts";
import { objectBytes } from "../../src/bpf/objects.ts";
import { PinLayout, PROGRAM_OBJECT, type ProgramRole, PROGRAMS } from "../../src/bpf/pins.ts";
import { releaseBytes } from "../../src/bpf/release.ts";
import { objPin, progInfo } from "../../src/bpf/sys.ts";

export const OTHER_STAMP = "tsnproxy 0.0.9 0123456789ab";

/** Pins the role's program with `stamp` in place of what is pinned; returns its program id. */
export function pinOfAnotherBuild(
  bpffs: string,
  role: ProgramRole,
  stamp = OTHER_STAMP,
): number {
  const pins = new PinLayout(bpffs);
  const name = PROGRAM_OBJECT[role];
  const obj = BpfObject.open(`tsnp_${name}`, objectBytes(name), pins.mapsDir);
  try {
    obj.setInitialValue(".rodata.release", releaseBytes(stamp));
    obj.load();
    const fd = obj.programFd(PROGRAMS[role]);
    try {
      Deno.removeSync(pins.prog(role));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    objPin(fd, pins.prog(role));
    return progInfo(fd).id;
  } finally {
    obj.close();
  }
}
