/**
 * The CNI network configuration tsnproxy chains itself into (one import for the installer,
 * the agent and doctor). The layers, each in src/install/conflist/:
 *
 * - json.ts      a strict JSON parser that keeps source spans (Go's encoding/json grammar);
 * - document.ts  one config file parsed as libcni loads it (`.conflist` chain, `.conf`/`.json`
 *                single plugin);
 * - discover.ts  which file the runtime uses (libcni's rules: `*.conf`, `*.conflist`,
 *                `*.json`, not directories, byte order; with `network` the matching "name"),
 *                and what a real conf dir holds besides files (symlinks, FIFOs, devices);
 * - edit.ts      textual splices: the entry goes after the last plugin, removal cuts exactly
 *                what insertion added, a single-plugin file becomes a `.conflist`;
 * - plan.ts      the file changes of install/uninstall (backups, conversions, symlinks, mode
 *                and owner) for `--dry-run`, and apply;
 * - diff.ts      the unified diff `--dry-run` prints.
 */
export {
  CNI_EXTENSIONS,
  type CniDocument,
  type CniFormat,
  parseCniDocument,
  PLUGIN_TYPE,
  type TsnproxyEntry,
} from "./conflist/document.ts";
export {
  type JsonNode,
  JsonSyntaxError,
  type JsonValue,
  lineCol,
  parseJsonWithSpans,
  toValue,
} from "./conflist/json.ts";
export {
  type ConfEntry,
  discover,
  type Discovered,
  type DiscoverOptions,
  listCandidates,
  scanConfDir,
} from "./conflist/discover.ts";
export {
  type Backup,
  inject,
  type InjectResult,
  type InjectStatus,
  remove,
  type RemoveResult,
  type RemoveStatus,
} from "./conflist/edit.ts";
export {
  apply,
  type ApplyOptions,
  BACKUP_SUFFIX,
  type ChangeAction,
  type FileChange,
  type Plan,
  planInstall,
  type PlanOptions,
  planUninstall,
} from "./conflist/plan.ts";
export { unifiedDiff } from "./conflist/diff.ts";
